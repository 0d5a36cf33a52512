"""Versioned schema migrations. Each version runs once, in order, inside one transaction."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Connection, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from parley.store import tables

Migration = tuple[int, str, Callable[[Connection], None]]


def _v1(conn: Connection) -> None:
    tables.metadata.create_all(conn, tables=[tables.api_keys, tables.responses, tables.items])


MIGRATIONS: list[Migration] = [
    (1, "api keys, responses and their items", _v1),
]


def _apply(conn: Connection) -> list[int]:
    # Serialise concurrent start-ups (several replicas or processes) on one database.
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(7261001)"))
    elif conn.dialect.name == "sqlite":
        # pysqlite opens transactions lazily and never before DDL: without this the DDL would autocommit
        # statement by statement, and a concurrent start-up would fail with "table already exists".
        # IMMEDIATE takes the write lock now; others wait for it (busy_timeout) and then see the schema.
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    tables.schema_migrations.create(conn, checkfirst=True)
    done = set(conn.execute(select(tables.schema_migrations.c.version)).scalars())
    applied: list[int] = []
    for version, _description, step in MIGRATIONS:
        if version in done:
            continue
        step(conn)
        conn.execute(insert(tables.schema_migrations).values(version=version, applied_at=int(time.time())))
        applied.append(version)
    return applied


async def migrate(engine: AsyncEngine) -> list[int]:
    """Bring the schema up to date; returns the versions applied now."""
    async with engine.begin() as conn:
        return await conn.run_sync(_apply)


def latest_version() -> int:
    return MIGRATIONS[-1][0]
