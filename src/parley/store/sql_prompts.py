"""SQL implementation of PromptStore (prompt templates, one row per version), mixed into SqlStore."""

from __future__ import annotations

import time
from typing import Any

import orjson
from sqlalchemy import and_, delete, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from parley.errors import InvalidRequest
from parley.ids import new_id
from parley.store import tables
from parley.store.base import PageQuery, PromptPage, PromptRecord
from parley.store.pages import keyset_page

# Concurrent new versions of one prompt are serialised by a row lock on PostgreSQL; SQLite has no row
# locks, so two writers may pick the same number: the unique constraint rejects one, which tries again.
_VERSION_ATTEMPTS = 8


class SqlPrompts:
    engine: AsyncEngine

    async def create_prompt(self, project_id: str, body: dict[str, Any]) -> PromptRecord:
        record = PromptRecord(new_id("pmpt"), 1, int(time.time()), body)
        async with self.engine.begin() as conn:
            await _insert(conn, project_id, record)
        return record

    async def add_prompt_version(self, project_id: str, prompt_id: str, body: dict[str, Any]) -> PromptRecord | None:
        p = tables.prompts
        mine = and_(p.c.project_id == project_id, p.c.prompt_id == prompt_id)
        for attempt in range(_VERSION_ATTEMPTS):
            try:
                async with self.engine.begin() as conn:
                    # Lock the first version's row (PostgreSQL) so writers of this prompt take turns.
                    first = select(p.c.seq).where(mine, p.c.version == 1).with_for_update()
                    if (await conn.execute(first)).first() is None:
                        return None
                    latest = (await conn.execute(select(func.max(p.c.version)).where(mine))).scalar_one()
                    record = PromptRecord(prompt_id, int(latest) + 1, int(time.time()), body)
                    await _insert(conn, project_id, record)
                    return record
            except IntegrityError:
                if attempt == _VERSION_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def get_prompt(self, project_id: str, prompt_id: str, version: int | None = None) -> PromptRecord | None:
        p = tables.prompts
        query = select(p.c.prompt_id, p.c.version, p.c.created_at, p.c.body).where(
            p.c.project_id == project_id, p.c.prompt_id == prompt_id
        )
        query = query.where(p.c.version == version) if version is not None else query
        async with self.engine.connect() as conn:
            row = (await conn.execute(query.order_by(p.c.version.desc()).limit(1))).first()
        return _record(row) if row is not None else None

    async def list_prompts(self, project_id: str, page: PageQuery) -> PromptPage:
        p = tables.prompts
        groups = (
            select(p.c.prompt_id, func.min(p.c.seq).label("first_seq"), func.max(p.c.version).label("latest"))
            .where(p.c.project_id == project_id)
            .group_by(p.c.prompt_id)
            .subquery()
        )
        query = select(p.c.prompt_id, p.c.version, p.c.created_at, p.c.body).join(
            groups, and_(p.c.prompt_id == groups.c.prompt_id, p.c.version == groups.c.latest)
        )
        async with self.engine.connect() as conn:

            async def locate(prompt_id: str, param: str) -> int:
                return await _first_seq(conn, project_id, prompt_id, param)

            rows, has_more = await keyset_page(conn, query, groups.c.first_seq, page, locate)
        return PromptPage([_record(row) for row in rows], has_more=has_more)

    async def delete_prompt(self, project_id: str, prompt_id: str) -> bool:
        p = tables.prompts
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(p).where(p.c.project_id == project_id, p.c.prompt_id == prompt_id))
        return bool(result.rowcount)


async def _insert(conn: AsyncConnection, project_id: str, record: PromptRecord) -> None:
    await conn.execute(
        insert(tables.prompts).values(
            project_id=project_id, prompt_id=record.id, version=record.version, created_at=record.created_at,
            body=orjson.dumps(record.body).decode(),
        )
    )


async def _first_seq(conn: AsyncConnection, project_id: str, prompt_id: str, param: str) -> int:
    p = tables.prompts
    seq = (
        await conn.execute(select(func.min(p.c.seq)).where(p.c.project_id == project_id, p.c.prompt_id == prompt_id))
    ).scalar_one()
    if seq is None:
        raise InvalidRequest(f"No prompt with id '{prompt_id}'.", param=param)
    return int(seq)


def _record(row: Any) -> PromptRecord:  # a row of (prompt_id, version, created_at, body), from two queries
    return PromptRecord(row.prompt_id, int(row.version), int(row.created_at), orjson.loads(row.body))
