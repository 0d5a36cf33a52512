"""A write's `done` callback (store/writer.py): called once, on the event loop, when the write has committed or
failed, whether or not its submitter still waits; also when its batch failed and it was retried on its own, and for
a write still queued when the writer stops. On SQLite (the writer thread) and PostgreSQL (one statement per batch,
batches in flight). What services/live_responses.py relies on to drop a running response exactly when its row is
there. Writes are queued in one step of the event loop (tasks created together, none suspends before it queues),
so they are one batch: no sleeps."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from tests.store.test_store_contract import PROJECT, message, response

from parley.store.sql import SqlStore
from parley.store.writer import Write


class Calls:
    """Who was called back, how often, and whether its row was readable by then is checked after."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()

    def done(self, response_id: str) -> Callable[[], None]:
        return lambda: self.count.update([response_id])


def new_response(n: int) -> dict[str, Any]:
    return response([message(f"answer {n}", role="assistant")])


async def save(store: SqlStore, resp: dict[str, Any], calls: Calls) -> None:
    await store.save_response(PROJECT, resp, [message("question")], done=calls.done(resp["id"]))


async def leave(store: SqlStore, resp: dict[str, Any], calls: Calls) -> None:
    """A submitter cancelled right after its write is queued (before the writer takes it): the write goes on."""
    me = asyncio.current_task()
    assert me is not None
    asyncio.get_running_loop().call_soon(me.cancel)  # runs before the writer, which this write wakes, runs
    await save(store, resp, calls)


async def test_done_once_when_a_batch_commits_also_for_a_submitter_that_left(store: SqlStore) -> None:
    calls = Calls()
    responses = [new_response(n) for n in range(6)]
    tasks = [asyncio.ensure_future((leave if n == 2 else save)(store, resp, calls)) for n, resp in enumerate(responses)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["NoneType"] * 2 + ["CancelledError"] + ["NoneType"] * 3
    await store.writer.stop()  # nothing is queued any more: no callback may come later
    assert calls.count == Counter(r["id"] for r in responses)
    for resp in responses:  # the one whose submitter left too
        assert await store.get_response(PROJECT, resp["id"]) == resp


async def test_done_once_when_a_batch_fails_and_its_writes_are_retried_one_by_one(store: SqlStore) -> None:
    """A write that cannot commit (its response id is taken) fails the merged batch; each write is then retried
    alone: the others commit, it fails, each called back once (the one whose submitter left too)."""
    calls = Calls()
    taken = new_response(0)
    await save(store, taken, calls)
    assert calls.count == Counter([taken["id"]])
    again = dict(taken, output=[message("other", role="assistant")])
    others = [new_response(n) for n in range(1, 5)]
    batch = [others[0], again, others[1], others[2], others[3]]
    transactions = store.writer.transactions
    tasks = [asyncio.ensure_future((leave if resp is others[2] else save)(store, resp, calls)) for resp in batch]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] is None and results[2] is None and results[4] is None
    assert isinstance(results[1], Exception) and not isinstance(results[1], asyncio.CancelledError)
    assert isinstance(results[3], asyncio.CancelledError)
    await store.writer.stop()
    assert store.writer.transactions - transactions == 4  # the merged one failed: the four good ones alone
    assert calls.count == Counter([taken["id"], taken["id"]] + [r["id"] for r in others])
    for resp in others:
        assert await store.get_response(PROJECT, resp["id"]) == resp
    assert await store.get_response(PROJECT, taken["id"]) == taken


async def test_done_for_writes_still_with_the_writer_when_it_stops(store: SqlStore,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The first batch is held in the writer (the second queued behind it, or in flight beside it on PostgreSQL),
    both submitters gone; stop() commits them and calls both back before it returns."""
    calls = Calls()
    held, proceed = asyncio.Event(), asyncio.Event()
    writer = store.writer
    real: Callable[..., Awaitable[None]] = writer._commit_batch

    async def commit_batch(batch: list[tuple[Write, asyncio.Future[None]]], statement: Any) -> None:
        if not held.is_set():
            held.set()
            await proceed.wait()
        await real(batch, statement)

    monkeypatch.setattr(writer, "_commit_batch", commit_batch)
    first, second = new_response(0), new_response(1)
    gone = [asyncio.ensure_future(leave(store, first, calls))]
    await held.wait()
    gone.append(asyncio.ensure_future(leave(store, second, calls)))
    await asyncio.wait(gone)
    assert all(task.cancelled() for task in gone) and not calls.count  # nothing committed yet
    stopping = asyncio.ensure_future(writer.stop())
    proceed.set()
    await stopping
    assert calls.count == Counter([first["id"], second["id"]])
    assert [await store.get_response(PROJECT, r["id"]) for r in (first, second)] == [first, second]


async def test_a_callback_that_raises_fails_nothing_else(store: SqlStore, caplog: pytest.LogCaptureFixture) -> None:
    calls = Calls()

    def boom() -> None:
        raise RuntimeError("callback bug")

    first, second = new_response(0), new_response(1)
    await asyncio.gather(store.save_response(PROJECT, first, [], done=boom), save(store, second, calls))
    assert calls.count == Counter([second["id"]])
    assert await store.get_response(PROJECT, first["id"]) == first
    assert "a write's done callback failed" in caplog.text


class _FailingObserver:
    """A write observer (telemetry) that raises when told of a commit."""

    def __init__(self) -> None:
        self.calls = 0

    def committed(self, writes: int) -> None:
        self.calls += 1
        raise RuntimeError("observer broke")

    def write(self) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext()


async def test_an_observer_that_raises_leaves_no_writer_waiting(store: SqlStore) -> None:
    """Telemetry told of a commit that raises: the committed writes' callers are answered, their callbacks run, and
    the writer goes on (before, the exception left the batch's futures unresolved and stopped the writer task)."""
    observer = _FailingObserver()
    store.writer.observer = observer
    calls = Calls()
    first, second = new_response(1), new_response(2)
    await asyncio.wait_for(save(store, first, calls), 60)
    await asyncio.wait_for(save(store, second, calls), 60)  # a later batch: the writer still runs
    assert observer.calls == 2
    assert calls.count == Counter([first["id"], second["id"]])
    for resp in (first, second):
        assert await store.get_response(PROJECT, resp["id"]) == resp
