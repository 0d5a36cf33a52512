"""SQL implementation of the store protocols (SQLite by default, PostgreSQL by URL), SQLAlchemy Core."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson
from sqlalchemy import delete, event, insert, select, text, update
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from parley.errors import InvalidRequest
from parley.store import tables
from parley.store.base import ConversationTurn, Item, Page, PageQuery, UsageRecord
from parley.store.chain_cache import DELETIONS_SQL, ChainCache
from parley.store.conversation_cache import ConversationCache
from parley.store.migrations import migrate
from parley.store.pages import keyset_page
from parley.store.rows import item_rows, response_row
from parley.store.sql_background import SqlBackground
from parley.store.sql_containers import SqlContainers
from parley.store.sql_conversations import SqlConversations, conversation_append
from parley.store.sql_files import SqlFiles
from parley.store.sql_ingestion import SqlIngestion
from parley.store.sql_keys import SqlKeys
from parley.store.sql_keys import hash_key as hash_key  # where api/auth.py and tests find it
from parley.store.sql_limits import SqlLimits
from parley.store.sql_prompts import SqlPrompts
from parley.store.sql_response_list import SqlResponseList
from parley.store.sql_usage import SqlUsage, usage_row
from parley.store.sql_vector_search import SqlVectorSearch
from parley.store.sql_vector_stores import SqlVectorStores
from parley.store.sql_web_pages import SqlWebPages
from parley.store.writer import GroupCommitWriter, Write, sqlite_pragmas

_CHAIN_SQL = text(
    """
    WITH RECURSIVE chain(id, prev, depth, status) AS (
        SELECT id, previous_response_id, 0, status FROM responses WHERE id = :rid AND project_id = :pid
        UNION ALL
        SELECT r.id, r.previous_response_id, c.depth + 1, r.status
        FROM responses r JOIN chain c ON r.id = c.prev
        WHERE r.project_id = :pid
    )
    SELECT c.depth, c.status, COALESCE((SELECT n FROM response_deletions WHERE id = 1), 0), i.data
    FROM chain c LEFT JOIN items i ON i.response_id = c.id
    ORDER BY c.depth DESC, i.kind, i.position
    """
)


def make_engine(url: str) -> AsyncEngine:
    # hide_parameters: statement parameters (API key hashes among them) never reach a log line or an
    # error's text, whatever the log level.
    if url.startswith("sqlite"):
        engine = create_async_engine(url, pool_size=4, max_overflow=4, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
        return engine
    engine = create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=False, hide_parameters=True)
    event.listen(engine.sync_engine, "handle_error", _nul_in_text)
    return engine


def _nul_in_text(context: ExceptionContext) -> None:
    """PostgreSQL refuses a NUL character in a text parameter (SQLSTATE 22021, character_not_in_repertoire; a
    Python str can hold no other byte it refuses). Parley's own ids and JSON (orjson escapes it) never hold one:
    it came in a client's string, so it is the request's mistake, a 400, not a 500. The ids of request bodies are
    refused before this, naming their field (schema/id_fields.py); this is the net for any other string that
    reaches a query. Called on errors only: nothing on the normal path."""
    if getattr(context.original_exception, "sqlstate", None) == "22021":
        raise InvalidRequest("An id in the request contains a NUL character (U+0000), which no id can hold.")


class SqlStore(SqlResponseList, SqlPrompts, SqlConversations, SqlBackground, SqlWebPages, SqlFiles, SqlKeys,
               SqlUsage, SqlLimits, SqlContainers, SqlVectorStores, SqlIngestion, SqlVectorSearch):
    """Responses, items, API keys, prompt templates, conversations, the page cache, files, usage records,
    rate-limit counters, containers and vector stores in one SQL database."""

    def __init__(self, engine: AsyncEngine, chain_cache_bytes: int = 0) -> None:
        self.engine = engine
        self.writer = GroupCommitWriter(engine)
        # previous_response_id chains recently continued (0: none kept, every turn reads its whole chain).
        self.chains = ChainCache(engine, chain_cache_bytes) if chain_cache_bytes > 0 else None
        # Conversations recently continued, alongside (as much again): a turn reads only the items appended since.
        self.conversation_cache = ConversationCache(engine, chain_cache_bytes) if chain_cache_bytes > 0 else None

    @classmethod
    async def open(cls, url: str, chain_cache_bytes: int = 0) -> SqlStore:
        engine = make_engine(url)
        await migrate(engine)
        store = cls(engine, chain_cache_bytes)
        store.writer.start()
        return store

    async def close(self) -> None:
        await self.writer.stop()
        await self.engine.dispose()

    # -- responses -------------------------------------------------------------------------------

    async def save_response(self, project_id: str, response: dict[str, Any], input_items: list[Item],
                            usage: UsageRecord | None = None, turn: ConversationTurn | None = None,
                            done: Callable[[], None] | None = None) -> None:
        rows = item_rows(project_id, response["id"], 0, input_items)
        rows += item_rows(project_id, response["id"], 1, response["output"])
        inserts = [(tables.responses, [response_row(project_id, response)]), (tables.items, rows)]
        if usage is not None:  # in the same transaction: no write of its own
            inserts.append((tables.usage_records, [usage_row(usage)]))
        # The conversation's append too: a crash between two transactions left a stored turn it never got.
        before = [conversation_append(project_id, turn.conversation_id, turn.items)] if turn is not None else []
        await self.writer.submit(Write(before=before, inserts=inserts, done=done))

    async def get_response(self, project_id: str, response_id: str) -> dict[str, Any] | None:
        r, i = tables.responses, tables.items
        async with self.engine.connect() as conn:
            body = (
                await conn.execute(select(r.c.body).where(r.c.id == response_id, r.c.project_id == project_id))
            ).scalar_one_or_none()
            if body is None:
                return None
            output = (
                await conn.execute(
                    select(i.c.data).where(i.c.response_id == response_id, i.c.kind == 1).order_by(i.c.position)
                )
            ).scalars()
            response: dict[str, Any] = orjson.loads(body)
            response["output"] = [orjson.loads(d) for d in output]
        return response

    async def delete_response(self, project_id: str, response_id: str) -> bool:
        r, i = tables.responses, tables.items
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(r).where(r.c.id == response_id, r.c.project_id == project_id))
            if not result.rowcount:
                return False
            await conn.execute(delete(i).where(i.c.response_id == response_id, i.c.project_id == project_id))
            # Every process's chain cache sees this with its next chain and forgets what it kept.
            d = tables.response_deletions
            if not (await conn.execute(update(d).where(d.c.id == 1).values(n=d.c.n + 1))).rowcount:
                await conn.execute(insert(d).values(id=1, n=1))  # its row was emptied (a truncated table)
        return True

    async def deletion_count(self) -> int:
        """How many responses were ever deleted (any process): what caches of stored responses check."""
        async with self.engine.connect() as conn:
            return int((await conn.execute(DELETIONS_SQL)).scalar_one())

    async def existing_responses(self, project_id: str, response_ids: Sequence[str]) -> set[str]:
        r = tables.responses
        query = select(r.c.id).where(r.c.project_id == project_id, r.c.id.in_(list(response_ids)))
        async with self.engine.connect() as conn:
            return set((await conn.execute(query)).scalars())

    async def load_context(self, project_id: str, response_id: str) -> list[Item] | None:
        if self.chains is not None:
            cached, served = await self.chains.load(project_id, response_id)
            if served:
                return cached
        async with self.engine.connect() as conn:
            rows = (await conn.execute(_CHAIN_SQL, {"rid": response_id, "pid": project_id})).all()
        if not rows:
            return None
        data = [row[3] for row in rows if row[3] is not None]
        items = [orjson.loads(d) for d in data]
        if self.chains is not None:
            head_status = next(row[1] for row in rows if row[0] == 0)
            self.chains.remember(project_id, response_id, items, sum(len(d) for d in data), rows[0][2],
                                 head_status)
        return items

    async def find_items(self, project_id: str, item_ids: list[str]) -> dict[str, Item]:
        i = tables.items
        query = (
            select(i.c.item_id, i.c.data)
            .where(i.c.project_id == project_id, i.c.item_id.in_(item_ids), i.c.type != "item_reference")
            .order_by(i.c.seq)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {item_id: orjson.loads(data) for item_id, data in rows}  # the latest copy wins

    async def list_input_items(self, project_id: str, response_id: str, page: PageQuery) -> Page | None:
        r, i = tables.responses, tables.items
        async with self.engine.connect() as conn:
            exists = (
                await conn.execute(select(r.c.id).where(r.c.id == response_id, r.c.project_id == project_id))
            ).first()
            if exists is None:
                return None
            query = select(i.c.data).where(i.c.response_id == response_id, i.c.kind == 0)

            async def locate(item_id: str, param: str) -> int:
                return await _position_of(conn, response_id, item_id, param)

            rows, has_more = await keyset_page(conn, query, i.c.position, page, locate)
        return Page([orjson.loads(row.data) for row in rows], has_more=has_more)


async def _position_of(conn: AsyncConnection, response_id: str, item_id: str, param: str) -> int:
    i = tables.items
    position = (
        await conn.execute(
            select(i.c.position).where(i.c.response_id == response_id, i.c.kind == 0, i.c.item_id == item_id)
        )
    ).first()
    if position is None:
        raise InvalidRequest(f"No input item with id '{item_id}' in this response.", param=param)
    return int(position[0])
