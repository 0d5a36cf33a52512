"""The background runner ends every run it claims: a run that crashes, or whose upstream never opens
before the time limit, ends `failed` with a terminal event instead of staying in progress."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import update
from tests.services.background_support import accepted_background

from parley.engine.run import ResponseRun
from parley.engine.stream import StreamBuilder, sse_frame
from parley.errors import UpstreamError
from parley.ids import new_id
from parley.providers.base import Finish, TextDelta
from parley.schema.requests import CreateResponseRequest
from parley.schema.response import new_response
from parley.services.background import BackgroundLimits, BackgroundRunner
from parley.store import tables
from parley.store.sql import SqlStore
from parley.store.sql_background import BackgroundJob

PROJECT = "proj"


async def _queued(store: SqlStore) -> str:
    response: dict[str, Any] = {
        "id": new_id("resp"), "object": "response", "created_at": 1, "status": "queued", "model": "m",
        "previous_response_id": None, "conversation": None, "background": True, "output": [], "error": None,
        "usage": None,
    }
    await store.enqueue_background(PROJECT, response, [], {"response": response},
                                   [(0, b"event: response.created\n"), (1, b"event: response.queued\n")])
    return str(response["id"])


async def _ended(store: SqlStore, response_id: str) -> dict[str, Any]:
    for _ in range(3000):
        if await store.response_status(PROJECT, response_id) == "failed":
            stored = await store.get_response(PROJECT, response_id)
            assert stored is not None
            return stored
        await asyncio.sleep(0.02)
    raise AssertionError("the run never ended")


async def _run_with(tmp_path: Path, factory: Any, limits: BackgroundLimits) -> tuple[dict[str, Any], list[bytes]]:
    store = await SqlStore.open(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    runner = BackgroundRunner(store, limits)

    def turn(job: BackgroundJob, response: dict[str, Any]) -> None:
        assert response["status"] == "failed"  # what the final flush asks a conversation turn of
        return None

    runner.start(factory, turn)
    try:
        response_id = await _queued(store)
        runner.notify()
        ended = await _ended(store, response_id)
        frames = [frame for _, frame in await store.read_events(response_id, -1)]
    finally:
        await runner.stop()
        await store.close()
    return ended, frames


async def test_a_crashing_run_ends_failed(tmp_path: Path) -> None:
    async def broken(job: BackgroundJob) -> ResponseRun:
        raise RuntimeError("a bug")

    ended, frames = await _run_with(tmp_path, broken, BackgroundLimits())
    assert ended["error"]["code"] == "server_error" and "a bug" not in ended["error"]["message"]
    last = orjson.loads(frames[-1].split(b"data: ", 1)[1])
    assert last["type"] == "response.failed" and last["sequence_number"] == len(frames) - 1


async def test_an_upstream_that_never_opens_hits_the_time_limit(tmp_path: Path) -> None:
    async def hanging(job: BackgroundJob) -> ResponseRun:
        await asyncio.sleep(60)
        raise AssertionError("unreachable")

    ended, frames = await _run_with(tmp_path, hanging, BackgroundLimits(time_limit_s=0.2))
    assert "time limit" in ended["error"]["message"]
    assert frames[-1].startswith(b"event: response.failed\n")


async def test_a_run_cancelled_while_its_worker_was_dead_keeps_its_open_item_incomplete(tmp_path: Path) -> None:
    store = await SqlStore.open(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    response = {**new_response(CreateResponseRequest(model="m", input="hi", background=True),
                                response_id=new_id("resp"), model="m", status="queued", store=True)}
    builder = StreamBuilder(response, emit=True, obfuscate=False)
    first = builder.start()
    await store.enqueue_background(PROJECT, response, [], {"response": dict(response)},
                                   [(e["sequence_number"], sse_frame(e)) for e in first])
    await store.claim_background("dead-worker", 1, 1)  # a lease that has run out: its process died
    logged = builder.in_progress() + builder.feed(TextDelta("half an ans"))
    await store.append_events(PROJECT, builder.response, [(e["sequence_number"], sse_frame(e)) for e in logged],
                              [], 0)
    await store.cancel_background(PROJECT, response["id"])
    runner = BackgroundRunner(store, BackgroundLimits())

    async def never(job: BackgroundJob) -> ResponseRun:
        raise AssertionError("no job is queued")

    def turn(job: BackgroundJob, response: dict[str, Any]) -> None:
        raise AssertionError("no run of this runner ends: the interrupted one is closed from its log")

    runner.start(never, turn)
    try:
        for _ in range(3000):
            if not await store.expired_runs():
                break
            await asyncio.sleep(0.02)
        stored = await store.get_response(PROJECT, response["id"])
        events = await store.read_events(response["id"], -1)
    finally:
        await runner.stop()
        await store.close()
    assert stored is not None and stored["status"] == "cancelled"  # the cancel stands: not failed
    part = {"type": "output_text", "text": "half an ans", "annotations": [], "logprobs": []}
    assert [(item["status"], item["content"]) for item in stored["output"]] == [("incomplete", [part])]
    assert [seq for seq, _ in events] == list(range(len(first) + len(logged)))  # no events added (no terminal one)



@pytest.mark.parametrize("claims", [1, 3])
async def test_a_job_whose_worker_died_before_it_started_runs_again_a_few_times_only(
    tmp_path: Path, claims: int
) -> None:
    """A claimed job whose worker died before its run logged anything is queued again and runs from the start (here
    its upstream refuses: it fails with that, not as interrupted); after 3 claims it fails as interrupted instead,
    so a job that kills its process cannot do so forever."""
    store = await SqlStore.open(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    runner = BackgroundRunner(store, BackgroundLimits())
    built: list[str] = []

    async def refused(job: BackgroundJob) -> ResponseRun:
        built.append(job.response_id)
        raise UpstreamError.bad_gateway("the upstream refused")

    response_id = await accepted_background(store, PROJECT)
    try:
        await store.claim_background("dead-worker", 1, 1)  # a lease that runs out at once: its process died
        async with store.engine.begin() as conn:  # as if it had been claimed `claims` times
            await conn.execute(update(tables.background_jobs).values(attempts=claims))
        await asyncio.sleep(0.01)
        runner.start(refused)
        ended = await _ended(store, response_id)
    finally:
        await runner.stop()
        await store.close()
    if claims < 3:
        assert built == [response_id] and ended["error"]["message"] == "the upstream refused"
    else:
        assert built == [] and "interrupted" in ended["error"]["message"]


async def test_a_run_is_stored_as_started_before_it_goes_on(tmp_path: Path) -> None:
    """The run's first events (response.in_progress) are stored before it reads on (and runs any tool): a process
    dying after that point fails the run, it is never taken for one that never started and run twice."""
    store = await SqlStore.open(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    runner = BackgroundRunner(store, BackgroundLimits())
    seen: list[str | None] = []

    class Upstream:
        async def __aiter__(self) -> Any:
            seen.append(await store.response_status(PROJECT, response_id))  # as the first read begins
            yield [TextDelta("hello")]
            yield [Finish("stop")]

        async def aclose(self) -> None:
            return None

    async def opened(job: BackgroundJob) -> ResponseRun:
        return ResponseRun(StreamBuilder(dict(job.request["response"]), emit=True, obfuscate=False), Upstream())

    response_id = await accepted_background(store, PROJECT)
    runner.start(opened)
    try:
        for _ in range(3000):
            if await store.response_status(PROJECT, response_id) == "completed":
                break
            await asyncio.sleep(0.02)
    finally:
        await runner.stop()
        await store.close()
    assert seen == ["in_progress"]
