"""Versioned schema migrations. Each version runs once, in order, inside one transaction.

A migration must create or alter exactly its own tables, from a schema frozen at its version: a database
migrated years ago and one created today must end up identical. Version 1 creates its tables from the
definitions in tables.py, which therefore never change; every later schema change is a new migration
written out in full here (CREATE, or ALTER of an earlier table), and tables.py is then updated to match.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import AsyncIterator, Callable

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    insert,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from parley.store import tables

Migration = tuple[int, str, Callable[[Connection], None]]


def _v1(conn: Connection) -> None:
    # These three definitions in tables.py are frozen: change them only through a later migration.
    tables.metadata.create_all(conn, tables=[tables.api_keys, tables.responses, tables.items])


def _v2(conn: Connection) -> None:
    # Written out rather than taken from tables.py, so later edits there cannot change what v2 creates.
    frozen = MetaData()
    prompts = Table(
        "prompts",
        frozen,
        Column("seq", Integer().with_variant(BigInteger, "postgresql"), primary_key=True, autoincrement=True),
        Column("project_id", String(128), nullable=False),
        Column("prompt_id", String(64), nullable=False),
        Column("version", Integer, nullable=False),
        Column("created_at", BigInteger, nullable=False),
        Column("body", Text, nullable=False),
        UniqueConstraint("prompt_id", "version", name="uq_prompts_version"),
    )
    Index("ix_prompts_project", prompts.c.project_id, prompts.c.prompt_id)
    frozen.create_all(conn)


def _v3(conn: Connection) -> None:
    # Conversations and their items, frozen as written here (tables.py holds the live definitions).
    frozen = MetaData()
    Table(
        "conversations",
        frozen,
        Column("id", String(64), primary_key=True),
        Column("project_id", String(128), nullable=False),
        Column("created_at", BigInteger, nullable=False),
        Column("metadata", Text, nullable=False),
        Column("next_position", BigInteger, nullable=False),
    )
    items = Table(
        "conversation_items",
        frozen,
        Column("seq", Integer().with_variant(BigInteger, "postgresql"), primary_key=True, autoincrement=True),
        Column("project_id", String(128), nullable=False),
        Column("conversation_id", String(64), nullable=False),
        Column("position", BigInteger, nullable=False),
        Column("item_id", Text, nullable=False),
        Column("type", Text, nullable=False),
        Column("data", Text, nullable=False),
        UniqueConstraint("conversation_id", "position", name="uq_conversation_items_position"),
    )
    Index("ix_conversation_items_item", items.c.conversation_id, items.c.item_id)
    frozen.create_all(conn)


def _v4(conn: Connection) -> None:
    frozen = MetaData()
    jobs = Table(
        "background_jobs",
        frozen,
        Column("response_id", String(64), primary_key=True),
        Column("project_id", String(128), nullable=False),
        Column("state", String(16), nullable=False),
        Column("request", Text, nullable=False),
        Column("created_at", BigInteger, nullable=False),
        Column("worker_id", String(64), nullable=True),
        Column("lease_until", BigInteger, nullable=True),
    )
    Index("ix_background_jobs_state", jobs.c.state, jobs.c.created_at)
    Table(
        "response_events",
        frozen,
        Column("response_id", String(64), primary_key=True),
        Column("seq", Integer, primary_key=True, autoincrement=False),
        Column("data", Text, nullable=False),
    )
    frozen.create_all(conn)


def _v5(conn: Connection) -> None:
    # Files and their bytes (the bytes only when they live in the database; services/files.py).
    frozen = MetaData()
    files = Table(
        "files",
        frozen,
        Column("seq", Integer().with_variant(BigInteger, "postgresql"), primary_key=True, autoincrement=True),
        Column("id", String(64), nullable=False, unique=True),
        Column("project_id", String(128), nullable=False),
        Column("filename", Text, nullable=False),
        Column("purpose", String(32), nullable=False),
        Column("bytes", BigInteger, nullable=False),
        Column("created_at", BigInteger, nullable=False),
        Column("expires_at", BigInteger, nullable=True),
        Column("status", String(16), nullable=False),
        Column("status_details", Text, nullable=True),
        Column("content_type", Text, nullable=False),
    )
    Index("ix_files_project", files.c.project_id, files.c.seq)
    Index("ix_files_expires", files.c.expires_at)
    Table(
        "file_chunks",
        frozen,
        Column("file_id", String(64), primary_key=True),
        Column("seq", Integer, primary_key=True, autoincrement=False),
        Column("data", LargeBinary, nullable=False),
    )
    frozen.create_all(conn)


def _v7(conn: Connection) -> None:
    # The web_search page cache. (5 and 6 belong to other tables; versions are applied in list order and
    # each creates only its own tables, so they do not depend on one another.)
    frozen = MetaData()
    pages = Table(
        "web_pages",
        frozen,
        Column("project_id", String(128), primary_key=True),
        Column("url_hash", String(64), primary_key=True),
        Column("url", Text, nullable=False),
        Column("title", Text, nullable=False),
        Column("text", Text, nullable=False),
        Column("fetched_at", BigInteger, nullable=False),
    )
    Index("ix_web_pages_fetched", pages.c.project_id, pages.c.fetched_at)
    frozen.create_all(conn)


MIGRATIONS: list[Migration] = [
    (1, "api keys, responses and their items", _v1),
    (2, "prompt templates", _v2),
    (3, "conversations and their items", _v3),
    (4, "background jobs and response event logs", _v4),
    (5, "files and their bytes", _v5),
    (7, "the web_search page cache", _v7),
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
    async with _sqlite_startup_lock(engine), engine.begin() as conn:
        return await conn.run_sync(_apply)


@contextlib.asynccontextmanager
async def _sqlite_startup_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    """On a SQLite file, one start-up at a time (processes of `--workers N`, or several engines).

    The first connection of a new database switches it to WAL, which needs an exclusive lock. Start-ups
    racing for that lock while another holds BEGIN IMMEDIATE could wait on each other until the busy
    timeout ran out ("database is locked", seen about once in ten runs of the concurrent-migration test).
    An advisory flock on a file next to the database (held per open file, so it also orders engines of
    one process) makes each start-up open its first connection and migrate alone."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    fd = os.open(database + "-startup.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def latest_version() -> int:
    return max(version for version, _, _ in MIGRATIONS)
