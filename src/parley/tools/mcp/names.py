"""The function name each MCP server tool is offered to the model as: `<server_label>__<tool>`.

Upstream function names must match `^[a-zA-Z0-9_-]{1,64}$` (api-surface.md §4, `function`). A pair that
already does is used as it is; otherwise other characters become `_`, the name is cut to fit and a short hash
of the original pair keeps it distinct. The name depends only on the pair, so a stored `mcp_call` replays
under the name its tool is offered with on later turns.
"""

from __future__ import annotations

import hashlib
import re

_ALLOWED = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_OTHER = re.compile(r"[^a-zA-Z0-9_-]")
SEPARATOR = "__"


def function_name(server_label: str, tool: str) -> str:
    raw = f"{server_label}{SEPARATOR}{tool}"
    if _ALLOWED.match(raw):
        return raw
    return _hashed(raw, f"{server_label}\x00{tool}")


def unique_name(server_label: str, tool: str, taken: set[str]) -> str:
    """`function_name`, or a hashed variant when that name is taken (by another pair whose names join alike,
    e.g. label `a__b` + tool `c` and label `a` + tool `b__c`, or by a client function)."""
    name = function_name(server_label, tool)
    if name in taken:
        name = _hashed(f"{server_label}{SEPARATOR}{tool}", f"unique\x00{server_label}\x00{tool}")
    return name


def _hashed(raw: str, key: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return f"{_OTHER.sub('_', raw)[:53]}_{digest}"
