"""Opaque object ids with the conventional OpenAI prefixes (resp_, msg_, fc_, call_, ...)."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    """`prefix_` + 48 random hex digits: unguessable, URL-safe, and sortable only by chance."""
    return f"{prefix}_{secrets.token_hex(24)}"
