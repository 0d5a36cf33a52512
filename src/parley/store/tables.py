"""The relational schema (SQLAlchemy Core), shared by SQLite and PostgreSQL.

JSON payloads are stored as text produced by orjson: identical on both databases and parsed once.
Strings a client chooses (item ids, model names) are unbounded Text: PostgreSQL enforces VARCHAR lengths
and SQLite does not, and the two backends must accept the same requests.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", BigInteger, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("project_id", String(128), nullable=False),
    Column("name", String(256), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("key_prefix", String(32), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
)

responses = Table(
    "responses",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("project_id", String(128), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("model", Text, nullable=False),
    Column("previous_response_id", String(64), nullable=True),
    Column("conversation_id", String(64), nullable=True),
    Column("background", Boolean, nullable=False, default=False),
    # The Response object without `output` (output items live in `items`, each stored once).
    Column("body", Text, nullable=False),
)

# kind: 0 = input item of the response, 1 = output item. `position` orders items within a kind.
items = Table(
    "items",
    metadata,
    Column("seq", Integer().with_variant(BigInteger, "postgresql"), primary_key=True, autoincrement=True),
    Column("project_id", String(128), nullable=False),
    Column("response_id", String(64), nullable=False),
    Column("kind", Integer, nullable=False),
    Column("position", Integer, nullable=False),
    Column("item_id", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("data", Text, nullable=False),
)

Index("ix_items_response", items.c.response_id, items.c.kind, items.c.position)
Index("ix_items_item_id", items.c.project_id, items.c.item_id)
Index("ix_responses_project", responses.c.project_id, responses.c.created_at)
