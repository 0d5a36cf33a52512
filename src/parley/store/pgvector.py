"""pgvector's `vector` column type for SQLAlchemy, and the search structures outside the table definitions.

Embeddings are float32 bytes (LargeBinary) on SQLite, where Parley searches them with numpy, and pgvector
`vector` values on PostgreSQL, where an HNSW index searches them. An HNSW index needs a fixed dimension, and
stores may use embedding models of different dimensions, so PostgreSQL gets one partial expression index per
dimension in use (`ix_vector_store_chunks_hnsw_<d>`): migration 6 creates the one of the default local model
(384), `ensure_hnsw_index` the others when a store first needs them. Past 2000 dimensions (pgvector's limit for
`vector` indexes) the index is over `halfvec`. Full text on PostgreSQL: a stored generated tsvector column
(`search_vector`) with a GIN index; on SQLite an FTS5 table kept in step by triggers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Connection, text
from sqlalchemy.types import UserDefinedType

DEFAULT_DIMENSIONS = 384
MAX_VECTOR_INDEX_DIMENSIONS = 2000
MAX_HALFVEC_INDEX_DIMENSIONS = 4000
# The names the schema-drift test knows as search structures (not in tables.metadata).
SQLITE_FTS_TABLE = "vector_store_chunks_fts"  # FTS5, with its shadow tables vector_store_chunks_fts_*
POSTGRES_TEXT_INDEX = "ix_vector_store_chunks_tsv"
POSTGRES_TEXT_COLUMN = "search_vector"  # tsvector, generated from `text` and stored
POSTGRES_HNSW_PREFIX = "ix_vector_store_chunks_hnsw_"
TEXT_SEARCH_CONFIG = "english"


class Vector(UserDefinedType[Any]):
    """pgvector's `vector` (any dimension). Bound as its text form, which asyncpg passes as text."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "vector"

    def bind_processor(self, dialect: Any) -> Callable[[Any], str | None]:
        def process(value: Any) -> str | None:
            return None if value is None else vector_literal(value)

        return process


def vector_literal(values: Sequence[float] | np.ndarray[Any, Any]) -> str:
    """`[0.1,0.2,...]`, pgvector's text form (float32 precision is kept by repr of each value)."""
    return "[" + ",".join(repr(float(v)) for v in np.asarray(values, dtype=np.float32).tolist()) + "]"


def hnsw_expression(dimensions: int) -> tuple[str, str]:
    """The indexed expression and its operator class for `dimensions`."""
    if dimensions > MAX_VECTOR_INDEX_DIMENSIONS:
        return f"(embedding::halfvec({dimensions}))", "halfvec_cosine_ops"
    return f"(embedding::vector({dimensions}))", "vector_cosine_ops"


def hnsw_index_ddl(dimensions: int) -> str:
    expression, ops = hnsw_expression(dimensions)
    return (f"CREATE INDEX IF NOT EXISTS {POSTGRES_HNSW_PREFIX}{dimensions} ON vector_store_chunks "
            f"USING hnsw ({expression} {ops}) WHERE vector_dims(embedding) = {dimensions}")


def ensure_hnsw_index(conn: Connection, dimensions: int) -> None:
    """PostgreSQL: the HNSW index for `dimensions`, if pgvector can index that many (serialised across
    processes by an advisory lock: concurrent CREATE INDEX IF NOT EXISTS can otherwise collide)."""
    if dimensions > MAX_HALFVEC_INDEX_DIMENSIONS:
        return  # searched exactly (a sequential scan of the store's chunks)
    conn.execute(text("SELECT pg_advisory_xact_lock(7261006)"))
    conn.execute(text(hnsw_index_ddl(dimensions)))
