"""The relational schema (SQLAlchemy Core), shared by SQLite and PostgreSQL.

JSON payloads are stored as text produced by orjson: identical on both databases and parsed once.
Strings a client chooses (item ids, model names) are unbounded Text: PostgreSQL enforces VARCHAR lengths
and SQLite does not, and the two backends must accept the same requests.

These are the *live* definitions the queries use. Never change a table here without a new migration in
migrations.py that ALTERs it: each migration creates its tables from a schema frozen at its version, and
tests/store/test_schema_drift.py fails when a migrated database and these definitions disagree.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from parley.store.pgvector import Vector

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
    # Migration 10. role: "project" (the API of its project) or "admin" (the /v1/organization endpoints;
    # project_id is ""). allowed_models: a JSON list, NULL for every model. limits: JSON of config.RateLimits.
    Column("role", String(16), nullable=False, server_default="project"),
    Column("expires_at", BigInteger, nullable=True),
    Column("allowed_models", Text, nullable=True),
    Column("limits", Text, nullable=True),
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

# Prompt templates (migration 2): one row per version; `version` counts 1, 2, ... per prompt. `seq` orders
# prompts by creation for listing. `body` is the template: {instructions, input, model, metadata}.
prompts = Table(
    "prompts",
    metadata,
    Column("seq", Integer().with_variant(BigInteger, "postgresql"), primary_key=True, autoincrement=True),
    Column("project_id", String(128), nullable=False),
    Column("prompt_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("body", Text, nullable=False),
    UniqueConstraint("prompt_id", "version", name="uq_prompts_version"),
)

# Background runs (migration 4). state: queued -> running (claimed by worker_id until lease_until, in ms)
# -> done. The response's own status lives in `responses`; this is only the work queue.
background_jobs = Table(
    "background_jobs",
    metadata,
    Column("response_id", String(64), primary_key=True),
    Column("project_id", String(128), nullable=False),
    Column("state", String(16), nullable=False),
    Column("request", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("worker_id", String(64), nullable=True),
    Column("lease_until", BigInteger, nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),  # claims so far (migration 15)
)

# Every event of a background response, by sequence_number, for replay (migration 4).
response_events = Table(
    "response_events",
    metadata,
    Column("response_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("data", Text, nullable=False),
)

Index("ix_background_jobs_state", background_jobs.c.state, background_jobs.c.created_at)
Index("ix_items_response", items.c.response_id, items.c.kind, items.c.position)
Index("ix_items_item_id", items.c.project_id, items.c.item_id)
Index("ix_responses_project", responses.c.project_id, responses.c.created_at)
Index("ix_prompts_project", prompts.c.project_id, prompts.c.prompt_id)

# Conversations (migration 3). `next_position` is the position the next appended item gets: an append
# reserves its range by bumping it, which also serialises appends (store/sql_conversations.py).
# `item_deletions` (migration 13) counts the items ever deleted from it, bumped in the deleting transaction:
# with `next_position`, the version a process's conversation cache checks (store/conversation_cache.py).
conversations = Table(
    "conversations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("project_id", String(128), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("metadata", Text, nullable=False),
    Column("next_position", BigInteger, nullable=False),
    Column("item_deletions", BigInteger, nullable=False, server_default="0"),
)

# The items of a conversation, in `position` order (gaps where items were deleted).
conversation_items = Table(
    "conversation_items",
    metadata,
    Column("seq", Integer().with_variant(BigInteger, "postgresql"), primary_key=True, autoincrement=True),
    Column("project_id", String(128), nullable=False),
    Column("conversation_id", String(64), nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("item_id", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("data", Text, nullable=False),
    UniqueConstraint("conversation_id", "position", name="uq_conversation_items_position"),
)

Index("ix_conversation_items_item", conversation_items.c.conversation_id, conversation_items.c.item_id)

# The web_search tool's page cache (migration 7): the readable text of pages fetched for a project, by the
# SHA-256 of the URL. What `external_web_access: false` searches (tools/web/pages.py).
web_pages = Table(
    "web_pages",
    metadata,
    Column("project_id", String(128), primary_key=True),
    Column("url_hash", String(64), primary_key=True),
    Column("url", Text, nullable=False),
    Column("title", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("fetched_at", BigInteger, nullable=False),
)

Index("ix_web_pages_fetched", web_pages.c.project_id, web_pages.c.fetched_at)

# Files (migration 5): one row per uploaded file. `seq` orders the listing (insertion = upload order); the
# bytes live on disk (data_dir/files) or in `file_chunks`, by the file's id (services/files.py).
files = Table(
    "files",
    metadata,
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

# A file's bytes in blocks of 1 MiB, `seq` 0, 1, 2, ... (migration 5), when they live in the database: what
# every replica of a PostgreSQL deployment reads (store/blobs.py).
file_chunks = Table(
    "file_chunks",
    metadata,
    Column("file_id", String(64), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("data", LargeBinary, nullable=False),
)

# Vector stores (migration 6; services/vector_stores.py). A store records the embedding model and dimensions
# its chunks were embedded with; `generation` grows with every change of its chunks or file attributes (search
# caches compare it). `expires_days`: expires_after {anchor: last_active_at, days}.
vector_stores = Table(
    "vector_stores",
    metadata,
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

Index("ix_vector_stores_project", vector_stores.c.project_id, vector_stores.c.seq)

# A file attached to a store, and its ingestion job (migration 6; services/ingestion.py): `in_progress` with no
# live lease is waiting; a worker claims it by setting `worker_id` and `lease_until` (ms) in one conditional
# UPDATE and renews the lease while it works. `lease_until` in the future with no worker: retry not before.
vector_store_files = Table(
    "vector_store_files",
    metadata,
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

Index("ix_vector_store_files_store", vector_store_files.c.vector_store_id, vector_store_files.c.seq)
Index("ix_vector_store_files_jobs", vector_store_files.c.status, vector_store_files.c.lease_until)
Index("ix_vector_store_files_batch", vector_store_files.c.batch_id)
Index("ix_vector_store_files_file", vector_store_files.c.project_id, vector_store_files.c.file_id)

vector_store_file_batches = Table(
    "vector_store_file_batches",
    metadata,
    Column("seq", Integer().with_variant(BigInteger, "postgresql"), primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("vector_store_id", String(64), nullable=False),
    Column("project_id", String(128), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("cancelled_at", BigInteger, nullable=True),
)

Index("ix_vector_store_file_batches_store", vector_store_file_batches.c.vector_store_id)

# The chunks of a store's files: character offsets in the file's extracted text, the text, and its embedding
# (float32 bytes on SQLite; pgvector `vector` on PostgreSQL). `seq` never reuses a number (AUTOINCREMENT on
# SQLite), so a cache can load only what is new. Full-text and ANN indexes: store/pgvector.py.
vector_store_chunks = Table(
    "vector_store_chunks",
    metadata,
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

Index("ix_vector_store_chunks_file", vector_store_chunks.c.vector_store_id, vector_store_chunks.c.file_id)

# Containers of the code_interpreter tool (migration 9; services/containers.py). `status` is running or expired;
# `session_owner` names the process session that last ran code in it (another one finds its variables lost);
# `files_generation` grows with every change of its files (a process holding a session reconciles its copy).
containers = Table(
    "containers",
    metadata,
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

# A container's files (migration 9), one per path under /mnt/data; bytes in blob storage under `id`.
container_files = Table(
    "container_files",
    metadata,
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

# One row per response that ran (migration 10; services/usage.py): who, which model and upstream, tokens,
# built-in tool calls (JSON {item type: count}), cost in nano-USD by part, timings. `created_at` is the
# response's (Unix seconds): what usage and cost buckets group by.
usage_records = Table(
    "usage_records",
    metadata,
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
    # Migration 12: the run's timing marks (JSON, engine/timing.py), written in the same row.
    Column("timeline", Text, nullable=True),
)

Index("ix_usage_records_time", usage_records.c.created_at)
# Migration 12: one response's records (GET /v1/responses/{id}/usage).
Index("ix_usage_records_response", usage_records.c.response_id)

# Requests, tokens and spend (nano-USD) per scope ("project:<id>" or "key:<id>") and fixed window (period
# "minute", "day" or "month", starting at `window_start`, Unix seconds, UTC): what every process adds its own
# counts to and reads everyone's back from, off the request path (migration 10; services/limits.py).
rate_counters = Table(
    "rate_counters",
    metadata,
    Column("scope", String(200), primary_key=True),
    Column("period", String(8), primary_key=True),
    Column("window_start", BigInteger, primary_key=True, autoincrement=False),
    Column("requests", BigInteger, nullable=False),
    Column("tokens", BigInteger, nullable=False),
    Column("cost", BigInteger, nullable=False),
)

# Container file bytes that may have no row (migration 14; services/containers.py): bytes are written before their
# row commits (due `due_at`, Unix seconds, a grace later) and a row is deleted before its bytes (due at once). The
# entry goes in the transaction that inserts the row, or once the bytes are gone; what a crash leaves, the
# containers' sweeper removes when it is due, unless a row claims the bytes.
pending_blobs = Table(
    "pending_blobs",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("due_at", BigInteger, nullable=False),
)

Index("ix_pending_blobs_due", pending_blobs.c.due_at)

# One row (id 1): how many responses were ever deleted, bumped in the deleting transaction. A process's chain
# cache (store/chain_cache.py) reads it with each chain it serves and forgets everything when it moved, so a
# response deleted by any process is never continued from a cache (migration 11).
response_deletions = Table(
    "response_deletions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("n", BigInteger, nullable=False),
)
