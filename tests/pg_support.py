"""A new, empty PostgreSQL database on the session's server (tests/conftest.py `postgres_server`), for tests whose
Parley servers must not share the default database with other tests: what one test leaves there (queued
background runs, half-ingested files, rate counters) is taken up by every later server on it."""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url


async def new_database(server: Any, prefix: str) -> str:
    """Its URL as Parley's `database_url` (`postgresql+asyncpg://...`); the server deletes it at the session's end."""
    url = make_url(server.get_uri(driver="asyncpg"))
    name = f"{prefix}_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(host=str(url.query["host"]), user=url.username, database="postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return url.set(database=name).render_as_string(hide_password=False)
