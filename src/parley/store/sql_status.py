"""What the health of the database looks like to /ready and /metrics: one trivial query, and the background queue
depth (jobs no worker has claimed yet, in every process sharing the database)."""

from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from parley.store import tables


async def ping(engine: AsyncEngine) -> None:
    """One round trip (`SELECT 1`) on a pooled connection; raises if the database cannot answer."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def queued_background_jobs(engine: AsyncEngine) -> int:
    jobs = tables.background_jobs
    async with engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(jobs).where(jobs.c.state == "queued"))).scalar()
    return int(count or 0)
