"""A run whose process stalled past its lease, and which another process meanwhile failed as "interrupted", stops
where it runs once the process resumes: its upstream call is closed, nothing more of it is written (the log keeps the
one terminal event the other process wrote) and one warning says so, no exception. Two runners on one store stand for
the two processes; the stall is the test holding the first one's lease renewals (or the lease simply running out
while no renewal comes), then letting it go on. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from sqlalchemy import update
from tests.pg_support import new_database
from tests.services.background_support import accepted_background

from parley.engine.run import TERMINAL_EVENTS, ResponseRun
from parley.engine.stream import StreamBuilder
from parley.providers.base import TextDelta
from parley.services.background import BackgroundLimits, BackgroundRunner
from parley.store import tables
from parley.store.base import ConversationTurn, UsageRecord
from parley.store.sql import SqlStore
from parley.store.sql_background import BackgroundJob

PROJECT = "proj"
LIMIT_S = 60.0  # fails what never happens; never a claim on speed


class _Stalling:
    """The store as the stalling process sees it: while `going` is clear its lease renewals wait (the process is
    stopped); it tells when its lease pass has looked once and when one of its log flushes failed."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store
        self.going = asyncio.Event()
        self.going.set()
        self.renewal_held = asyncio.Event()
        self.looked = asyncio.Event()
        self.flush_failed = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def renew_leases(self, worker_id: str, response_ids: list[str], lease_ms: int) -> set[str]:
        if response_ids and not self.going.is_set():
            self.renewal_held.set()
            await self.going.wait()
        return await self._store.renew_leases(worker_id, response_ids, lease_ms)

    async def expired_runs(self) -> list[tuple[str, str]]:
        runs = await self._store.expired_runs()
        self.looked.set()
        return runs

    async def append_events(self, project_id: str, response: dict[str, Any], events: list[tuple[int, bytes]],
                            done_items: list[dict[str, Any]], first_position: int, usage: UsageRecord | None = None,
                            turn: ConversationTurn | None = None) -> bool:
        try:
            return await self._store.append_events(project_id, response, events, done_items, first_position, usage,
                                                   turn)
        except Exception:
            self.flush_failed.set()
            raise


class _HeldUpstream:
    """Streams "half", then " more" once `more` is set, then " again" once `again` is set, then holds until closed."""

    def __init__(self) -> None:
        self.more = asyncio.Event()
        self.again = asyncio.Event()
        self.closed = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[list[Any]]:
        yield [TextDelta("half")]
        await self.more.wait()
        yield [TextDelta(" more")]
        await self.again.wait()
        yield [TextDelta(" again")]
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        self.closed.set()


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + LIMIT_S
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.02)


async def _event(event: asyncio.Event, what: str) -> None:
    try:
        await asyncio.wait_for(event.wait(), LIMIT_S)
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStore]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'p.db'}"
    else:
        url = await new_database(request.getfixturevalue("postgres_server"), "parley_lease")
    opened = await SqlStore.open(url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.mark.parametrize("resumes_with", ["renewal", "flush"])
async def test_a_run_another_process_ended_while_its_own_stalled_stops_quietly(
    store: SqlStore, resumes_with: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`renewal`: the resumed process's first act is its lease renewal, which finds the job no longer its own.
    `flush`: its run goes on first (the upstream had more text), its next log flush collides with the events the other
    process wrote, and the run learns so where it goes on; the other process's end stands either way."""
    caplog.set_level(logging.INFO, logger="parley.background")
    stalling = _Stalling(store)
    upstream = _HeldUpstream()

    async def factory(job: BackgroundJob) -> ResponseRun:
        return ResponseRun(StreamBuilder(dict(job.request["response"]), emit=True, obfuscate=False),
                           cast(Any, upstream))

    async def never(job: BackgroundJob) -> ResponseRun:
        raise AssertionError("the other process runs no job")

    # `renewal`: renewals every 0.1 s, held by the test; `flush`: one lease pass at start, none in the test's time.
    lease_ms = 300 if resumes_with == "renewal" else 3_600_000
    runner = BackgroundRunner(cast(SqlStore, stalling), BackgroundLimits(lease_ms=lease_ms, flush_ms=10))
    other = BackgroundRunner(store, BackgroundLimits(lease_ms=300))
    response_id = await accepted_background(store, PROJECT)
    runner.start(factory)
    try:
        async def half_logged() -> bool:
            return any(b'"delta":"half"' in data for _, data in await store.read_events(response_id, -1))

        await _until(half_logged, "the run logs its first text")
        await _event(stalling.looked, "the stalling process's lease pass has run once")
        if resumes_with == "renewal":
            stalling.going.clear()
            await _event(stalling.renewal_held, "the stalling process's renewal is held")
        async with store.engine.begin() as conn:  # its lease ran out while it was stopped
            await conn.execute(update(tables.background_jobs)
                               .where(tables.background_jobs.c.response_id == response_id).values(lease_until=0))
        other.start(never)

        async def failed_by_the_other() -> bool:
            return await store.response_status(PROJECT, response_id) == "failed"

        await _until(failed_by_the_other, "the other process fails the run")
        if resumes_with == "renewal":
            stalling.going.set()
        else:
            upstream.more.set()
            await _event(stalling.flush_failed, "the resumed run's flush collides with the other process's events")
            upstream.again.set()
        await _event(upstream.closed, "the resumed process closes the run's upstream call")

        async def run_gone() -> bool:
            return runner.running == 0

        await _until(run_gone, "the resumed process's run has ended")
        events = [orjson.loads(data.split(b"data: ", 1)[1]) for _, data in await store.read_events(response_id, -1)]
        stored = await store.get_response(PROJECT, response_id)
        jobs = [job.response_id for job in await store.claim_background("late", 60_000, 10)]
    finally:
        await runner.stop()
        await other.stop()
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events if e["type"] in TERMINAL_EVENTS] == ["response.failed"]
    assert events[-1]["type"] == "response.failed" and "interrupted" in events[-1]["response"]["error"]["message"]
    assert not any(e.get("delta") in (" more", " again") for e in events)  # nothing of the resumed run's
    assert stored is not None and stored["status"] == "failed" and jobs == []
    lost = [r for r in caplog.records if "its lease ran out while this process stalled" in r.getMessage()]
    assert len(lost) == 1 and lost[0].levelno == logging.WARNING
    # No "crashed", no error. (`flush`: the store's writer says, as a warning, that the colliding write failed.)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert not [r for r in caplog.records if r.name == "parley.background" and r.exc_info], caplog.text
