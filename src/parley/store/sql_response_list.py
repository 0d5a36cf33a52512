"""Listing stored responses for the console's explorer (GET /v1/responses/list): newest first by default,
filtered by model, status, metadata and creation time, paged by response id over (created_at, id)."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import JSON, and_, cast, or_, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

from parley.errors import InvalidRequest
from parley.store import tables
from parley.store.base import Page, PageQuery, ResponseFilter


class SqlResponseList:
    engine: AsyncEngine

    async def list_responses(self, project_id: str, where: ResponseFilter, page: PageQuery) -> Page:
        """Response objects without `output` (open one with GET /v1/responses/{id} for its items)."""
        r = tables.responses
        query = select(r.c.id, r.c.created_at, r.c.body).where(r.c.project_id == project_id)
        if where.model is not None:
            query = query.where(r.c.model == where.model)
        if where.status is not None:
            query = query.where(r.c.status == where.status)
        if where.created_after is not None:
            query = query.where(r.c.created_at >= where.created_after)
        if where.created_before is not None:
            query = query.where(r.c.created_at < where.created_before)
        body = (type_coerce(r.c.body, JSON) if self.engine.dialect.name == "sqlite" else cast(r.c.body, JSONB))
        for key, value in where.metadata.items():
            query = query.where(body["metadata"][key].as_string() == value)
        desc = page.order == "desc"
        async with self.engine.connect() as conn:
            for cursor, forward, param in ((page.after, True, "after"), (page.before, False, "before")):
                if cursor is None:
                    continue
                found = (await conn.execute(select(r.c.created_at).where(
                    r.c.id == cursor, r.c.project_id == project_id))).scalar_one_or_none()
                if found is None:
                    raise InvalidRequest(f"No response found with id '{cursor}' to page from.", param=param)
                later = or_(r.c.created_at > found, and_(r.c.created_at == found, r.c.id > cursor))
                earlier = or_(r.c.created_at < found, and_(r.c.created_at == found, r.c.id < cursor))
                query = query.where(earlier if desc == forward else later)
            backwards = page.before is not None and page.after is None
            newest_first = desc != backwards
            order = (r.c.created_at.desc(), r.c.id.desc()) if newest_first else (r.c.created_at.asc(), r.c.id.asc())
            rows = list((await conn.execute(query.order_by(*order).limit(page.limit + 1))).all())
        page_rows = rows[: page.limit]
        if backwards:
            page_rows.reverse()
        data: list[dict[str, Any]] = [orjson.loads(row.body) for row in page_rows]
        return Page(data, has_more=len(rows) > page.limit)
