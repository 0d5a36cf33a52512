"""SQL implementation of ConversationStore (conversations and their ordered items), mixed into SqlStore.

Concurrency rule (ARCHITECTURE.md, "Conversations"): one append is one transaction that first bumps the
conversation's `next_position` counter (an UPDATE: a row lock on PostgreSQL, the write lock on SQLite)
and then inserts its items at the positions it reserved. Appends to one conversation therefore take
turns, and each append's items are contiguous; nothing interleaves and nothing is lost.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from parley.errors import InvalidRequest
from parley.ids import new_id
from parley.store import tables
from parley.store.base import ConversationRecord, Item, Page, PageQuery
from parley.store.conversation_cache import ConversationCache
from parley.store.pages import keyset_page
from parley.store.writer import GroupCommitWriter, Statement, Write


def _item_rows(project_id: str, conversation_id: str, items: list[Item], start: int) -> list[dict[str, Any]]:
    return [
        {
            "project_id": project_id,
            "conversation_id": conversation_id,
            "position": position,
            "item_id": item["id"],
            "type": item["type"],
            "data": orjson.dumps(item).decode(),
        }
        for position, item in enumerate(items, start)
    ]


def conversation_append(project_id: str, conversation_id: str, items: list[Item],
                        found: list[bool] | None = None) -> Statement:
    """The statement appending `items` to the conversation (nothing if it is gone), for a write's transaction;
    `found` gets whether the conversation was there."""
    c = tables.conversations

    def append(conn: Connection) -> None:
        # The UPDATE comes first: it takes the row lock (PostgreSQL) or the write lock (SQLite) before
        # positions are chosen, so concurrent appends to one conversation are serialised.
        reserved = conn.execute(
            update(c)
            .where(c.c.id == conversation_id, c.c.project_id == project_id)
            .values(next_position=c.c.next_position + len(items))
            .returning(c.c.next_position)
        )
        end = reserved.scalar_one_or_none()
        if found is not None:
            found.append(end is not None)
        if end is not None and items:
            rows = _item_rows(project_id, conversation_id, items, int(end) - len(items))
            conn.execute(insert(tables.conversation_items), rows)

    return append


class SqlConversations:
    engine: AsyncEngine
    writer: GroupCommitWriter
    conversation_cache: ConversationCache | None  # recently continued conversations' items (None: off)

    async def create_conversation(
        self, project_id: str, metadata: dict[str, str], items: list[Item]
    ) -> ConversationRecord:
        record = ConversationRecord(new_id("conv"), int(time.time()), metadata)
        row = {
            "id": record.id, "project_id": project_id, "created_at": record.created_at,
            "metadata": orjson.dumps(metadata).decode(), "next_position": len(items),
        }
        rows = _item_rows(project_id, record.id, items, 0)
        await self.writer.submit(Write(inserts=[(tables.conversations, [row]), (tables.conversation_items, rows)]))
        return record

    async def get_conversation(self, project_id: str, conversation_id: str) -> ConversationRecord | None:
        c = tables.conversations
        query = select(c.c.id, c.c.created_at, c.c.metadata).where(
            c.c.id == conversation_id, c.c.project_id == project_id
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return ConversationRecord(row[0], int(row[1]), orjson.loads(row[2])) if row is not None else None

    async def update_conversation(
        self, project_id: str, conversation_id: str, metadata: dict[str, str]
    ) -> ConversationRecord | None:
        c = tables.conversations
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(c)
                .where(c.c.id == conversation_id, c.c.project_id == project_id)
                .values(metadata=orjson.dumps(metadata).decode())
                .returning(c.c.created_at)
            )
            created_at = result.scalar_one_or_none()
        return ConversationRecord(conversation_id, int(created_at), metadata) if created_at is not None else None

    async def delete_conversation(self, project_id: str, conversation_id: str) -> bool:
        c, ci = tables.conversations, tables.conversation_items
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(c).where(c.c.id == conversation_id, c.c.project_id == project_id))
            if not result.rowcount:
                return False
            await conn.execute(
                delete(ci).where(ci.c.conversation_id == conversation_id, ci.c.project_id == project_id)
            )
        return True

    async def append_conversation_items(self, project_id: str, conversation_id: str, items: list[Item]) -> bool:
        found: list[bool] = []
        await self.writer.submit(Write(before=[conversation_append(project_id, conversation_id, items, found)]))
        return found[-1]  # the last run of the statement: a failed batch is retried alone

    async def load_conversation(self, project_id: str, conversation_id: str) -> list[Item] | None:
        """Every item, oldest first, in one query (None if the conversation does not exist); with the cache, the
        items appended since the conversation was last read here are the only ones read."""
        if self.conversation_cache is not None:
            return await self.conversation_cache.load(project_id, conversation_id)
        c, ci = tables.conversations, tables.conversation_items
        query = (
            select(c.c.id, ci.c.data)
            .select_from(c.outerjoin(ci, ci.c.conversation_id == c.c.id))
            .where(c.c.id == conversation_id, c.c.project_id == project_id)
            .order_by(ci.c.position)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        if not rows:
            return None
        return [orjson.loads(data) for _, data in rows if data is not None]

    async def list_conversation_items(
        self, project_id: str, conversation_id: str, page: PageQuery
    ) -> Page | None:
        c, ci = tables.conversations, tables.conversation_items
        async with self.engine.connect() as conn:
            exists = (
                await conn.execute(select(c.c.id).where(c.c.id == conversation_id, c.c.project_id == project_id))
            ).first()
            if exists is None:
                return None
            query = select(ci.c.data).where(ci.c.conversation_id == conversation_id)

            async def locate(item_id: str, param: str) -> int:
                return await _position_of(conn, conversation_id, item_id, param)

            rows, has_more = await keyset_page(conn, query, ci.c.position, page, locate)
        return Page([orjson.loads(row.data) for row in rows], has_more=has_more)

    async def get_conversation_item(self, project_id: str, conversation_id: str, item_id: str) -> Item | None:
        ci = tables.conversation_items
        query = (
            select(ci.c.data)
            .where(ci.c.conversation_id == conversation_id, ci.c.project_id == project_id, ci.c.item_id == item_id)
            .order_by(ci.c.position.desc())
            .limit(1)
        )
        async with self.engine.connect() as conn:
            data = (await conn.execute(query)).scalar_one_or_none()
        return orjson.loads(data) if data is not None else None

    async def delete_conversation_item(self, project_id: str, conversation_id: str, item_id: str) -> bool:
        c, ci = tables.conversations, tables.conversation_items
        async with self.engine.begin() as conn:
            result = await conn.execute(
                delete(ci).where(
                    ci.c.conversation_id == conversation_id, ci.c.project_id == project_id, ci.c.item_id == item_id
                )
            )
            if result.rowcount:
                # Every process's conversation cache sees this with the conversation's next read and reads it whole.
                await conn.execute(
                    update(c)
                    .where(c.c.id == conversation_id, c.c.project_id == project_id)
                    .values(item_deletions=c.c.item_deletions + 1)
                )
        return bool(result.rowcount)


async def _position_of(conn: AsyncConnection, conversation_id: str, item_id: str, param: str) -> int:
    ci = tables.conversation_items
    position = (
        await conn.execute(
            select(func.min(ci.c.position)).where(ci.c.conversation_id == conversation_id, ci.c.item_id == item_id)
        )
    ).scalar_one_or_none()
    if position is None:
        raise InvalidRequest(f"No item with id '{item_id}' in this conversation.", param=param)
    return int(position)
