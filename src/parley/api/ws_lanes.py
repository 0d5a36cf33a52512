"""The lanes of one WebSocket connection: `response.create` events by `stream_id`.

Within a lane, responses run one after the other in the order they arrived (the default lane is the one
without `stream_id`); lanes run concurrently, at most `max_in_flight` responses at once per connection (the
others wait for a slot, in arrival order), at most `max_lanes` lanes with work and `max_queued` waiting
responses at once. Each lane with work has one task; it ends when its lane is empty.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from parley.config import WebSocketConfig
from parley.errors import InvalidRequest, ParleyError

W = TypeVar("W")


class TooManyQueued(ParleyError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"Too many responses are waiting on this connection (at most {limit}); wait for some to "
                         "finish.", None, "too_many_queued_responses", 429, "invalid_request_error")


class Lanes(Generic[W]):
    """`run(work)` is awaited for each piece of work, in its lane's order; it must not raise."""

    def __init__(self, limits: WebSocketConfig, run: Callable[[W], Awaitable[None]]) -> None:
        self._limits = limits
        self._run = run
        self._slots = asyncio.Semaphore(limits.max_in_flight)
        self._lanes: dict[str | None, deque[W]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending = 0  # submitted, not finished: running (at most max_in_flight) or waiting

    def submit(self, lane: str | None, work: W) -> None:
        """Queue `work` on its lane (400 invalid_stream_id past the lane limit, 429 past the queue limit)."""
        queue = self._lanes.get(lane)
        if queue is None:
            if len(self._lanes) >= self._limits.max_lanes:
                raise InvalidRequest(f"This connection already has {self._limits.max_lanes} lanes with responses "
                                     "running or waiting; use an existing stream_id or wait.", param="stream_id",
                                     code="invalid_stream_id")
        if self._pending >= self._limits.max_in_flight + self._limits.max_queued:
            raise TooManyQueued(self._limits.max_queued)
        self._pending += 1
        if queue is None:
            self._lanes[lane] = queue = deque()
            task = asyncio.create_task(self._drain(lane, queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        queue.append(work)

    @property
    def busy(self) -> bool:
        return bool(self._lanes)

    async def _drain(self, lane: str | None, queue: deque[W]) -> None:
        try:
            while queue:
                async with self._slots:
                    await self._run(queue[0])
                queue.popleft()
                self._pending -= 1
        finally:
            del self._lanes[lane]

    async def aclose(self) -> None:
        """Cancel every lane (the connection is gone) and wait for them."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_idle(self) -> None:
        """Until every lane is empty."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
