"""SQL implementation of the web_search page cache (table `web_pages`, migration 7), mixed into SqlStore.

One row per (project, URL): the page's readable text as the model was given it. A project never sees
another's pages. Search is a portable candidate query (a term in the title or text, newest first, on
SQLite and PostgreSQL alike); the caller ranks the candidates (tools/web/pages.py).
"""

from __future__ import annotations

import hashlib
import time

from sqlalchemy import and_, delete, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from parley.store import tables
from parley.store.base import WebPageRecord


def url_hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


class SqlWebPages:
    engine: AsyncEngine

    async def get_web_page(self, project_id: str, url: str) -> WebPageRecord | None:
        t = tables.web_pages
        query = select(t.c.url, t.c.title, t.c.text, t.c.fetched_at).where(
            t.c.project_id == project_id, t.c.url_hash == url_hash(url))
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return WebPageRecord(row.url, row.title, row.text, row.fetched_at) if row is not None else None

    async def put_web_page(self, project_id: str, page: WebPageRecord, *, keep_s: float) -> None:
        """Store (or replace) the page, and drop the project's pages older than `keep_s`."""
        t = tables.web_pages
        key = url_hash(page.url)
        async with self.engine.begin() as conn:
            await conn.execute(delete(t).where(t.c.project_id == project_id, t.c.url_hash == key))
            await conn.execute(insert(t).values(project_id=project_id, url_hash=key, url=page.url, title=page.title,
                                                text=page.text, fetched_at=page.fetched_at))
            cutoff = int(time.time() - keep_s)
            await conn.execute(delete(t).where(t.c.project_id == project_id, t.c.fetched_at < cutoff))

    async def search_web_pages(self, project_id: str, terms: list[str], limit: int) -> list[WebPageRecord]:
        """Pages whose title or text contains any of the (lower-case) terms, newest first."""
        if not terms:
            return []
        t = tables.web_pages
        matches = [func.lower(column).contains(term, autoescape=True) for term in terms
                   for column in (t.c.title, t.c.text)]
        query = (select(t.c.url, t.c.title, t.c.text, t.c.fetched_at)
                 .where(and_(t.c.project_id == project_id, or_(*matches)))
                 .order_by(t.c.fetched_at.desc()).limit(limit))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [WebPageRecord(row.url, row.title, row.text, row.fetched_at) for row in rows]
