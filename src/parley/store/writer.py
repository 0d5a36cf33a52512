"""Group commit: writes from concurrent requests are merged into one transaction.

Each caller awaits its own write; the writer task takes everything queued, inserts rows of the same
table with one executemany, and commits once. If a merged batch fails, each write is retried in its
own transaction so one bad write cannot fail the others. A write that was queued completes even if
the caller is cancelled meanwhile, so nothing is half-written when a client disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger("parley.store")

Statement = Callable[[AsyncConnection], Awaitable[Any]]


@dataclass(slots=True)
class Write:
    """Rows to insert (merged across writes) and statements to run before them, in one transaction."""

    before: list[Statement] = field(default_factory=list)
    inserts: list[tuple[Table, list[dict[str, Any]]]] = field(default_factory=list)


class GroupCommitWriter:
    def __init__(self, engine: AsyncEngine, max_batch: int = 512) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[Write, asyncio.Future[None]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="parley-store-writer")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def submit(self, write: Write) -> None:
        if self._task is None:
            await self._commit([write])
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((write, future))
        await asyncio.shield(future)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit([w for w, _ in batch])
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
            except Exception:
                log.warning("group commit of %d writes failed; retrying one by one", len(batch), exc_info=True)
                await self._one_by_one(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _one_by_one(self, batch: list[tuple[Write, asyncio.Future[None]]]) -> None:
        for write, future in batch:
            try:
                await self._commit([write])
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(None)

    async def _commit(self, writes: list[Write]) -> None:
        # Inserts are merged per table; statements flush what is pending first, so order is preserved.
        pending: dict[Table, list[dict[str, Any]]] = {}
        async with self._engine.begin() as conn:
            for write in writes:
                if write.before:
                    await _flush(conn, pending)
                    for statement in write.before:
                        await statement(conn)
                for table, rows in write.inserts:
                    pending.setdefault(table, []).extend(rows)
            await _flush(conn, pending)


async def _flush(conn: AsyncConnection, pending: dict[Table, list[dict[str, Any]]]) -> None:
    for table, rows in pending.items():
        if rows:
            await conn.execute(insert(table), rows)
    pending.clear()
