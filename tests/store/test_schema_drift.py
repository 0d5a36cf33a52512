"""The rule of store/migrations.py: the migrations create exactly the tables tables.py declares, so no table
in tables.py can change without a migration (run on SQLite and PostgreSQL)."""

from __future__ import annotations

import warnings
from typing import Any

from sqlalchemy import Connection, UniqueConstraint, inspect

from parley.store import tables
from parley.store.migrations import migrate
from parley.store.pgvector import POSTGRES_HNSW_PREFIX, POSTGRES_TEXT_COLUMN, POSTGRES_TEXT_INDEX, SQLITE_FTS_TABLE
from parley.store.sql import make_engine


def _search_structure(name: str | None) -> bool:
    """The search structures of migration 6 that SQLAlchemy cannot declare (store/pgvector.py): the FTS5 table and
    its shadow tables; PostgreSQL's tsvector column, its index and the HNSW expression indexes.
    test_search_structures checks them."""
    text = str(name or "")
    return text.startswith((SQLITE_FTS_TABLE, POSTGRES_HNSW_PREFIX)) or text in (POSTGRES_TEXT_INDEX,
                                                                                 POSTGRES_TEXT_COLUMN)


def _reflected(conn: Connection) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Did not recognize type 'vector'")  # pgvector's; names are compared
        return _reflect(conn)


def _reflect(conn: Connection) -> dict[str, Any]:
    inspector = inspect(conn)
    return {
        name: {
            "columns": sorted((c["name"], c["nullable"]) for c in inspector.get_columns(name)
                              if not _search_structure(c["name"])),
            # PostgreSQL also reports the index behind each UNIQUE constraint; those are compared as unique.
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]))
                for i in inspector.get_indexes(name)
                if "duplicates_constraint" not in i and not _search_structure(i["name"])
            ),
            "unique": sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(name)),
        }
        for name in sorted(inspector.get_table_names()) if not _search_structure(name)
    }


def _declared() -> dict[str, Any]:
    return {
        table.name: {
            "columns": sorted((c.name, bool(c.nullable)) for c in table.columns),
            "indexes": sorted((i.name, tuple(c.name for c in i.columns)) for i in table.indexes),
            "unique": sorted(
                tuple(c.name for c in u.columns) for u in table.constraints if isinstance(u, UniqueConstraint)
            ),
        }
        for table in tables.metadata.sorted_tables
    }


async def test_migrations_create_exactly_the_live_tables(db_url: str) -> None:
    """Never change tables.py without a migration: the migrated schema must equal the live definitions."""
    engine = make_engine(db_url)
    try:
        await migrate(engine)
        async with engine.connect() as conn:
            migrated = await conn.run_sync(_reflected)
    finally:
        await engine.dispose()
    assert "prompts" in migrated
    assert migrated == _declared()


def _search_names(conn: Connection) -> set[str]:
    inspector = inspect(conn)
    names = {name for name in inspector.get_table_names() if _search_structure(name)}
    indexes = inspector.get_indexes("vector_store_chunks")
    columns = inspector.get_columns("vector_store_chunks")
    return names | {str(i["name"]) for i in indexes if _search_structure(i["name"])} | {
        str(c["name"]) for c in columns if _search_structure(c["name"])}


async def test_search_structures(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        await migrate(engine)
        async with engine.connect() as conn:
            names = await conn.run_sync(_search_names)
    finally:
        await engine.dispose()
    if db_url.startswith("sqlite"):
        assert SQLITE_FTS_TABLE in names
    else:
        assert names == {POSTGRES_TEXT_INDEX, POSTGRES_TEXT_COLUMN, POSTGRES_HNSW_PREFIX + "384"}
