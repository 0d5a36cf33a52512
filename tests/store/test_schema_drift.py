"""The rule of store/migrations.py: the migrations create exactly the tables tables.py declares, so no table
in tables.py can change without a migration (run on SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, UniqueConstraint, inspect

from parley.store import tables
from parley.store.migrations import migrate
from parley.store.sql import make_engine


def _reflected(conn: Connection) -> dict[str, Any]:
    inspector = inspect(conn)
    return {
        name: {
            "columns": sorted((c["name"], c["nullable"]) for c in inspector.get_columns(name)),
            # PostgreSQL also reports the index behind each UNIQUE constraint; those are compared as unique.
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]))
                for i in inspector.get_indexes(name) if "duplicates_constraint" not in i
            ),
            "unique": sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(name)),
        }
        for name in sorted(inspector.get_table_names())
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
