"""The background runner ends every run it claims: a run that crashes, or whose upstream never opens
before the time limit, ends `failed` with a terminal event instead of staying in progress."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from parley.engine.run import ResponseRun
from parley.ids import new_id
from parley.services.background import BackgroundLimits, BackgroundRunner
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
    for _ in range(200):
        if await store.response_status(PROJECT, response_id) == "failed":
            stored = await store.get_response(PROJECT, response_id)
            assert stored is not None
            return stored
        await asyncio.sleep(0.02)
    raise AssertionError("the run never ended")


async def _run_with(tmp_path: Path, factory: Any, limits: BackgroundLimits) -> tuple[dict[str, Any], list[bytes]]:
    store = await SqlStore.open(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    runner = BackgroundRunner(store, limits)

    async def finished(job: BackgroundJob, response: dict[str, Any]) -> None:
        raise AssertionError("a failed run is not finished")

    runner.start(factory, finished)
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
