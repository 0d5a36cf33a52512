"""SQL implementation of the store protocols (SQLite by default, PostgreSQL by URL), SQLAlchemy Core."""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

import orjson
from sqlalchemy import delete, event, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from parley.errors import InvalidRequest
from parley.ids import new_id
from parley.store import tables
from parley.store.base import ApiKeyRecord, Item, Page, PageQuery
from parley.store.migrations import migrate
from parley.store.pages import keyset_page
from parley.store.rows import item_rows, response_row
from parley.store.sql_background import SqlBackground
from parley.store.sql_conversations import SqlConversations
from parley.store.sql_files import SqlFiles
from parley.store.sql_prompts import SqlPrompts
from parley.store.sql_web_pages import SqlWebPages
from parley.store.writer import GroupCommitWriter, Write, sqlite_pragmas

_CHAIN_SQL = text(
    """
    WITH RECURSIVE chain(id, prev, depth) AS (
        SELECT id, previous_response_id, 0 FROM responses WHERE id = :rid AND project_id = :pid
        UNION ALL
        SELECT r.id, r.previous_response_id, c.depth + 1
        FROM responses r JOIN chain c ON r.id = c.prev
        WHERE r.project_id = :pid
    )
    SELECT c.id, i.data FROM chain c LEFT JOIN items i ON i.response_id = c.id
    ORDER BY c.depth DESC, i.kind, i.position
    """
)


def hash_key(secret: str) -> str:
    # Keys are 256-bit random tokens, so a fast hash is enough (no password stretching needed).
    return hashlib.sha256(secret.encode()).hexdigest()


def make_engine(url: str) -> AsyncEngine:
    # hide_parameters: statement parameters (API key hashes among them) never reach a log line or an
    # error's text, whatever the log level.
    if url.startswith("sqlite"):
        engine = create_async_engine(url, pool_size=4, max_overflow=4, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=False, hide_parameters=True)


class SqlStore(SqlPrompts, SqlConversations, SqlBackground, SqlWebPages, SqlFiles):
    """Responses, items, API keys, prompt templates, conversations, the page cache and files in one SQL
    database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.writer = GroupCommitWriter(engine)

    @classmethod
    async def open(cls, url: str) -> SqlStore:
        engine = make_engine(url)
        await migrate(engine)
        store = cls(engine)
        store.writer.start()
        return store

    async def close(self) -> None:
        await self.writer.stop()
        await self.engine.dispose()

    # -- responses -------------------------------------------------------------------------------

    async def save_response(self, project_id: str, response: dict[str, Any], input_items: list[Item]) -> None:
        rows = item_rows(project_id, response["id"], 0, input_items)
        rows += item_rows(project_id, response["id"], 1, response["output"])
        await self.writer.submit(Write(inserts=[(tables.responses, [response_row(project_id, response)]),
                                                (tables.items, rows)]))

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
        return True

    async def load_context(self, project_id: str, response_id: str) -> list[Item] | None:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(_CHAIN_SQL, {"rid": response_id, "pid": project_id})).all()
        if not rows:
            return None
        return [orjson.loads(data) for _, data in rows if data is not None]

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

    # -- API keys --------------------------------------------------------------------------------

    async def create_key(self, project_id: str, name: str) -> tuple[ApiKeyRecord, str]:
        secret = "sk-parley-" + secrets.token_urlsafe(32)
        record = ApiKeyRecord(new_id("key"), project_id, name, secret[:14], int(time.time()), None)
        async with self.engine.begin() as conn:
            await conn.execute(
                tables.api_keys.insert().values(
                    id=record.id, project_id=project_id, name=name, key_hash=hash_key(secret),
                    key_prefix=record.key_prefix, created_at=record.created_at, revoked_at=None,
                )
            )
        return record, secret

    async def list_keys(self, project_id: str | None = None) -> list[ApiKeyRecord]:
        k = tables.api_keys
        query = select(k.c.id, k.c.project_id, k.c.name, k.c.key_prefix, k.c.created_at, k.c.revoked_at)
        if project_id is not None:
            query = query.where(k.c.project_id == project_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(k.c.created_at, k.c.id))).all()
        return [ApiKeyRecord(*row) for row in rows]

    async def revoke_key(self, key_id: str) -> bool:
        k = tables.api_keys
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(k).where(k.c.id == key_id, k.c.revoked_at.is_(None)).values(revoked_at=int(time.time()))
            )
        return bool(result.rowcount)

    async def find_key(self, key_hash: str) -> ApiKeyRecord | None:
        k = tables.api_keys
        query = select(k.c.id, k.c.project_id, k.c.name, k.c.key_prefix, k.c.created_at, k.c.revoked_at).where(
            k.c.key_hash == key_hash, k.c.revoked_at.is_(None)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return ApiKeyRecord(*row) if row else None

    async def any_active_key(self) -> bool:
        k = tables.api_keys
        async with self.engine.connect() as conn:
            count = (await conn.execute(select(func.count()).where(k.c.revoked_at.is_(None)))).scalar_one()
        return bool(count)


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
