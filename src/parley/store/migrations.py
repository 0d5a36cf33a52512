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
    Boolean,
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
from parley.store.pgvector import Vector

Migration = tuple[int, str, Callable[[Connection], None]]


def _v1(conn: Connection) -> None:
    # `responses` and `items` in tables.py are frozen: change them only through a later migration.
    # `api_keys` changed in version 10, so its version-1 shape is written out here.
    frozen = MetaData()
    Table(
        "api_keys",
        frozen,
        Column("id", String(64), primary_key=True),
        Column("project_id", String(128), nullable=False),
        Column("name", String(256), nullable=False),
        Column("key_hash", String(64), nullable=False, unique=True),
        Column("key_prefix", String(32), nullable=False),
        Column("created_at", BigInteger, nullable=False),
        Column("revoked_at", BigInteger, nullable=True),
    )
    frozen.create_all(conn)
    tables.metadata.create_all(conn, tables=[tables.responses, tables.items])


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


def _v6(conn: Connection) -> None:
    # Vector stores, their files (and ingestion jobs), file batches and chunks (services/vector_stores.py), plus
    # the search structures: an FTS5 table kept in step by triggers on SQLite; on PostgreSQL pgvector (required:
    # DESIGN.md decision 8), a full-text GIN index and the HNSW index of the default 384-dimension model.
    if conn.dialect.name == "postgresql":
        _require_pgvector(conn)
    frozen = MetaData()
    stores = Table(
        "vector_stores",
        frozen,
        Column("seq", Integer().with_variant(BigInteger, "postgresql"), primary_key=True, autoincrement=True),
        Column("id", String(64), nullable=False, unique=True),
        Column("project_id", String(128), nullable=False),
        Column("name", Text, nullable=False),
        Column("description", Text, nullable=True),
        Column("created_at", BigInteger, nullable=False),
        Column("last_active_at", BigInteger, nullable=False),
        Column("expires_days", Integer, nullable=True),
        Column("metadata", Text, nullable=False),
        Column("embedding_model", Text, nullable=False),
        Column("dimensions", Integer, nullable=False),
        Column("generation", BigInteger, nullable=False),
    )
    Index("ix_vector_stores_project", stores.c.project_id, stores.c.seq)
    store_files = Table(
        "vector_store_files",
        frozen,
        Column("seq", Integer().with_variant(BigInteger, "postgresql"), primary_key=True, autoincrement=True),
        Column("vector_store_id", String(64), nullable=False),
        Column("file_id", String(64), nullable=False),
        Column("project_id", String(128), nullable=False),
        Column("batch_id", String(64), nullable=True),
        Column("filename", Text, nullable=False),
        Column("created_at", BigInteger, nullable=False),
        Column("status", String(16), nullable=False),
        Column("usage_bytes", BigInteger, nullable=False),
        Column("chunk_count", Integer, nullable=False),
        Column("last_error", Text, nullable=True),
        Column("attributes", Text, nullable=False),
        Column("max_chunk_tokens", Integer, nullable=False),
        Column("chunk_overlap_tokens", Integer, nullable=False),
        Column("worker_id", String(64), nullable=True),
        Column("lease_until", BigInteger, nullable=True),
        Column("attempts", Integer, nullable=False),
        UniqueConstraint("vector_store_id", "file_id", name="uq_vector_store_files_file"),
    )
    Index("ix_vector_store_files_store", store_files.c.vector_store_id, store_files.c.seq)
    Index("ix_vector_store_files_jobs", store_files.c.status, store_files.c.lease_until)
    Index("ix_vector_store_files_batch", store_files.c.batch_id)
    Index("ix_vector_store_files_file", store_files.c.project_id, store_files.c.file_id)
    batches = Table(
        "vector_store_file_batches",
        frozen,
        Column("seq", Integer().with_variant(BigInteger, "postgresql"), primary_key=True, autoincrement=True),
        Column("id", String(64), nullable=False, unique=True),
        Column("vector_store_id", String(64), nullable=False),
        Column("project_id", String(128), nullable=False),
        Column("created_at", BigInteger, nullable=False),
        Column("cancelled_at", BigInteger, nullable=True),
    )
    Index("ix_vector_store_file_batches_store", batches.c.vector_store_id)
    chunks = Table(
        "vector_store_chunks",
        frozen,
        Column("seq", Integer().with_variant(BigInteger, "postgresql"), primary_key=True, autoincrement=True),
        Column("vector_store_id", String(64), nullable=False),
        Column("file_id", String(64), nullable=False),
        Column("position", Integer, nullable=False),
        Column("start_char", Integer, nullable=False),
        Column("end_char", Integer, nullable=False),
        Column("text", Text, nullable=False),
        Column("embedding", LargeBinary().with_variant(Vector(), "postgresql"), nullable=False),
        sqlite_autoincrement=True,
    )
    Index("ix_vector_store_chunks_file", chunks.c.vector_store_id, chunks.c.file_id)
    frozen.create_all(conn)
    if conn.dialect.name == "sqlite":
        # External-content FTS5 over the chunks' text (porter stemming, as PostgreSQL's english config).
        for statement in (
            "CREATE VIRTUAL TABLE vector_store_chunks_fts USING fts5(text, content='vector_store_chunks', "
            "content_rowid='seq', tokenize='porter unicode61')",
            "CREATE TRIGGER vector_store_chunks_fts_insert AFTER INSERT ON vector_store_chunks BEGIN "
            "INSERT INTO vector_store_chunks_fts(rowid, text) VALUES (new.seq, new.text); END",
            "CREATE TRIGGER vector_store_chunks_fts_delete AFTER DELETE ON vector_store_chunks BEGIN "
            "INSERT INTO vector_store_chunks_fts(vector_store_chunks_fts, rowid, text) "
            "VALUES ('delete', old.seq, old.text); END",
        ):
            conn.exec_driver_sql(statement)
    elif conn.dialect.name == "postgresql":
        # A stored tsvector: ranking reads it instead of parsing each matching chunk's text again.
        conn.exec_driver_sql("ALTER TABLE vector_store_chunks ADD COLUMN search_vector tsvector "
                             "GENERATED ALWAYS AS (to_tsvector('english', text)) STORED")
        conn.exec_driver_sql("CREATE INDEX ix_vector_store_chunks_tsv ON vector_store_chunks USING gin (search_vector)")
        conn.exec_driver_sql("CREATE INDEX ix_vector_store_chunks_hnsw_384 ON vector_store_chunks USING hnsw "
                             "((embedding::vector(384)) vector_cosine_ops) WHERE vector_dims(embedding) = 384")


def _require_pgvector(conn: Connection) -> None:
    conn.exec_driver_sql("SAVEPOINT parley_pgvector")
    try:
        conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS vector")
    except Exception as exc:
        conn.exec_driver_sql("ROLLBACK TO SAVEPOINT parley_pgvector")
        raise RuntimeError(
            "Parley needs the pgvector extension on PostgreSQL (vector stores; migration 6), and it could not be "
            f"created: {str(exc).splitlines()[0]}. Install pgvector for this server (e.g. the "
            "postgresql-<version>-pgvector package of apt.postgresql.org, or the pgvector/pgvector image), then "
            "run `CREATE EXTENSION vector;` in this database as a superuser, and start Parley again."
        ) from None
    conn.exec_driver_sql("RELEASE SAVEPOINT parley_pgvector")


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


def _v9(conn: Connection) -> None:
    # Containers of the code_interpreter tool and their files (services/containers.py); the bytes of a
    # container file live in blob storage under its id.
    frozen = MetaData()
    containers = Table(
        "containers",
        frozen,
        Column("seq", Integer().with_variant(BigInteger, "postgresql"), primary_key=True, autoincrement=True),
        Column("id", String(64), nullable=False, unique=True),
        Column("project_id", String(128), nullable=False),
        Column("name", Text, nullable=False),
        Column("created_at", BigInteger, nullable=False),
        Column("last_active_at", BigInteger, nullable=False),
        Column("expires_minutes", Integer, nullable=False),
        Column("memory_limit", String(8), nullable=False),
        Column("status", String(16), nullable=False),
        Column("session_owner", String(128), nullable=True),
        Column("files_generation", BigInteger, nullable=False),
    )
    Index("ix_containers_project", containers.c.project_id, containers.c.seq)
    Index("ix_containers_status", containers.c.status, containers.c.last_active_at)
    container_files = Table(
        "container_files",
        frozen,
        Column("seq", Integer().with_variant(BigInteger, "postgresql"), primary_key=True, autoincrement=True),
        Column("id", String(64), nullable=False, unique=True),
        Column("container_id", String(64), nullable=False),
        Column("project_id", String(128), nullable=False),
        Column("path", Text, nullable=False),
        Column("bytes", BigInteger, nullable=False),
        Column("source", String(16), nullable=False),
        Column("created_at", BigInteger, nullable=False),
        UniqueConstraint("container_id", "path", name="uq_container_files_path"),
    )
    Index("ix_container_files_container", container_files.c.container_id, container_files.c.seq)
    frozen.create_all(conn)


def _v10(conn: Connection) -> None:
    # Key roles, expiry, allowed models and limits; usage records; the shared rate-limit counters
    # (services/usage.py, services/limits.py).
    for column in ("role VARCHAR(16) DEFAULT 'project' NOT NULL", "expires_at BIGINT", "allowed_models TEXT",
                   "limits TEXT"):
        conn.execute(text(f"ALTER TABLE api_keys ADD COLUMN {column}"))
    frozen = MetaData()
    usage = Table(
        "usage_records",
        frozen,
        Column("seq", Integer().with_variant(BigInteger, "postgresql"), primary_key=True, autoincrement=True),
        Column("response_id", String(64), nullable=False),
        Column("created_at", BigInteger, nullable=False),
        Column("project_id", String(128), nullable=False),
        Column("api_key_id", String(64), nullable=True),
        Column("model", Text, nullable=False),
        Column("upstream_model", Text, nullable=False),
        Column("upstream_host", Text, nullable=False),
        Column("status", String(16), nullable=False),
        Column("background", Boolean, nullable=False),
        Column("input_tokens", BigInteger, nullable=False),
        Column("cached_tokens", BigInteger, nullable=False),
        Column("cache_write_tokens", BigInteger, nullable=False),
        Column("output_tokens", BigInteger, nullable=False),
        Column("reasoning_tokens", BigInteger, nullable=False),
        Column("tool_calls", Text, nullable=False),
        Column("input_cost", BigInteger, nullable=False),
        Column("cached_cost", BigInteger, nullable=False),
        Column("output_cost", BigInteger, nullable=False),
        Column("tool_cost", BigInteger, nullable=False),
        Column("latency_ms", Integer, nullable=False),
        Column("ttft_ms", Integer, nullable=True),
    )
    Index("ix_usage_records_time", usage.c.created_at)
    Table(
        "rate_counters",
        frozen,
        Column("scope", String(200), primary_key=True),
        Column("period", String(8), primary_key=True),
        Column("window_start", BigInteger, primary_key=True, autoincrement=False),
        Column("requests", BigInteger, nullable=False),
        Column("tokens", BigInteger, nullable=False),
        Column("cost", BigInteger, nullable=False),
    )
    frozen.create_all(conn)


def _v11(conn: Connection) -> None:
    # The deletion counter that keeps each process's chain cache honest (store/chain_cache.py).
    frozen = MetaData()
    table = Table(
        "response_deletions",
        frozen,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("n", BigInteger, nullable=False),
    )
    frozen.create_all(conn)
    conn.execute(insert(table).values(id=1, n=0))


def _v12(conn: Connection) -> None:
    # A response's timing marks in its usage record, and reading one response's records (its cost, timeline).
    conn.execute(text("ALTER TABLE usage_records ADD COLUMN timeline TEXT"))
    conn.execute(text("CREATE INDEX ix_usage_records_response ON usage_records (response_id)"))


def _v13(conn: Connection) -> None:
    # A conversation's count of deleted items: with next_position, the version its cached items are checked
    # against (store/conversation_cache.py).
    conn.execute(text("ALTER TABLE conversations ADD COLUMN item_deletions BIGINT NOT NULL DEFAULT 0"))



def _v14(conn: Connection) -> None:
    # Container file bytes that may have no row: written before it, or left after it (store/tables.py).
    frozen = MetaData()
    table = Table(
        "pending_blobs",
        frozen,
        Column("key", String(128), primary_key=True),
        Column("due_at", BigInteger, nullable=False),
    )
    Index("ix_pending_blobs_due", table.c.due_at)
    frozen.create_all(conn)


def _v15(conn: Connection) -> None:
    # How often a background job was claimed: one whose process died before its run logged anything runs again, a
    # few times at most (services/background.py).
    conn.execute(text("ALTER TABLE background_jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0"))

MIGRATIONS: list[Migration] = [
    (1, "api keys, responses and their items", _v1),
    (2, "prompt templates", _v2),
    (3, "conversations and their items", _v3),
    (4, "background jobs and response event logs", _v4),
    (5, "files and their bytes", _v5),
    (6, "vector stores, their files, batches and chunks; full-text and vector search", _v6),
    (7, "the web_search page cache", _v7),
    (9, "containers and their files", _v9),
    (10, "key roles, expiry, allowed models and limits; usage records; rate-limit counters", _v10),
    (11, "the response deletion counter (chain caches)", _v11),
    (12, "usage records: a response's timeline, and an index by response", _v12),
    (13, "conversations: a count of deleted items (conversation caches)", _v13),
    (14, "container file bytes that may have no row (crash clean-up)", _v14),
    (15, "background jobs: how often each was claimed", _v15),
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
