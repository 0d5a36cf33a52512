"""Background jobs and event logs in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

from parley.ids import new_id
from parley.store.sql import SqlStore

PROJECT = "proj-bg"


def _queued() -> dict[str, Any]:
    return {"id": new_id("resp"), "object": "response", "created_at": 1, "status": "queued", "model": "m",
            "previous_response_id": None, "conversation": None, "background": True, "output": []}


async def _enqueue(store: SqlStore) -> dict[str, Any]:
    response = _queued()
    inputs = [{"id": new_id("msg"), "type": "message", "role": "user", "content": [], "status": "completed"}]
    await store.enqueue_background(PROJECT, response, inputs, {"response": response},
                                   [(0, b"event: response.created\n"), (1, b"event: response.queued\n")])
    return response


async def test_enqueue_claim_once_and_log(store: SqlStore) -> None:
    response = await _enqueue(store)
    assert await store.response_status(PROJECT, response["id"]) == "queued"
    claims = await asyncio.gather(*(store.claim_background(f"w{i}", 10_000, 5) for i in range(4)))
    claimed = [job for jobs in claims for job in jobs]
    assert [job.response_id for job in claimed] == [response["id"]]  # exactly one worker got it
    assert claimed[0].input_items[0]["role"] == "user" and claimed[0].request["response"]["id"] == response["id"]
    assert await store.claim_background("late", 10_000, 5) == []

    running = {**response, "status": "in_progress"}
    item = {"id": "msg_out", "type": "message", "role": "assistant", "status": "completed", "content": []}
    ok = await store.append_events(PROJECT, {**running, "output": [item]}, [(2, b"a"), (3, b"b")], [item], 0)
    assert ok and await store.response_status(PROJECT, response["id"]) == "in_progress"
    assert [seq for seq, _ in await store.read_events(response["id"], 0)] == [1, 2, 3]
    assert await store.read_events(response["id"], 3) == []
    stored = await store.get_response(PROJECT, response["id"])
    assert stored is not None and stored["output"] == [item]


async def test_cancel_wins_over_a_finishing_worker(store: SqlStore) -> None:
    response = await _enqueue(store)
    await store.claim_background("w", 10_000, 1)
    cancelled = await store.cancel_background(PROJECT, response["id"])
    assert cancelled is not None and cancelled["status"] == "cancelled"
    ok = await store.append_events(PROJECT, {**response, "status": "completed"}, [(2, b"x")], [], 0)
    assert ok is False  # the worker learns it was cancelled ...
    assert await store.response_status(PROJECT, response["id"]) == "cancelled"  # ... and cannot undo it
    again = await store.cancel_background(PROJECT, response["id"])
    assert again is not None and again["status"] == "cancelled"
    assert await store.cancel_background("other-project", response["id"]) is None


async def test_cancelled_queued_job_is_never_claimed(store: SqlStore) -> None:
    response = await _enqueue(store)
    await store.cancel_background(PROJECT, response["id"])
    assert await store.claim_background("w", 10_000, 5) == []


async def test_expired_lease_ends_the_run_once(store: SqlStore) -> None:
    live = await _enqueue(store)
    dead = await _enqueue(store)
    jobs = await store.claim_background("dead-worker", 1, 2)  # a 1 ms lease: already expired
    assert {j.response_id for j in jobs} == {live["id"], dead["id"]}
    await store.renew_leases("dead-worker", [live["id"]], 60_000)  # one run is still looked after
    await asyncio.sleep(0.01)
    assert [rid for rid, _ in await store.expired_runs()] == [dead["id"]]
    run = await store.interrupted_run(dead["id"])
    assert run is not None and await store.interrupted_run(live["id"]) is None
    assert run.status == "queued" and run.output == [] and [seq for seq, _ in run.events] == [0, 1]
    failed = {**dead, "status": "failed", "error": {"code": "server_error", "message": "gone"}}
    item = {"id": "msg_cut", "type": "message", "role": "assistant", "status": "incomplete", "content": []}
    assert await store.end_interrupted(run, failed, [(2, b"event: response.failed\n")], [item])
    assert await store.end_interrupted(run, failed, [(2, b"again")], []) is False  # ended exactly once
    assert await store.interrupted_run(dead["id"]) is None
    stored = await store.get_response(PROJECT, dead["id"])
    assert stored is not None and stored["status"] == "failed" and stored["output"] == [item]
    assert await store.read_events(dead["id"], 1) == [(2, b"event: response.failed\n")]
    assert await store.response_status(PROJECT, live["id"]) == "queued"


async def test_an_interrupted_run_cancelled_meanwhile_is_not_failed(store: SqlStore) -> None:
    response = await _enqueue(store)
    await store.claim_background("dead-worker", 1, 1)
    await asyncio.sleep(0.01)
    run = await store.interrupted_run(response["id"])
    assert run is not None
    await store.cancel_background(PROJECT, response["id"])  # between the read and the write
    assert await store.end_interrupted(run, {**response, "status": "failed"}, [(2, b"x")], []) is False
    assert await store.response_status(PROJECT, response["id"]) == "cancelled"
    assert [seq for seq, _ in await store.read_events(response["id"], -1)] == [0, 1]
    again = await store.interrupted_run(response["id"])  # taken up again, as it is now
    assert again is not None and again.status == "cancelled"
    assert await store.end_interrupted(again, None, [], [])
    assert await store.response_status(PROJECT, response["id"]) == "cancelled"


async def test_a_renewal_tells_which_leases_the_worker_no_longer_holds(store: SqlStore) -> None:
    """A worker that stalled past its leases learns, when it renews them, which runs another process took meanwhile
    (ended as interrupted, queued again) or its own last write ended: it must stop those without writing more."""
    kept, ended, requeued, finished = [await _enqueue(store) for _ in range(4)]
    ids = [kept["id"], ended["id"], requeued["id"], finished["id"]]
    assert len(await store.claim_background("stalled", -1000, 4)) == 4  # leases over already: the worker stalled
    run = await store.interrupted_run(ended["id"])
    assert run is not None
    assert await store.end_interrupted(run, {**ended, "status": "failed"}, [(2, b"event: response.failed\n")], [])
    run = await store.interrupted_run(requeued["id"])
    assert run is not None and await store.requeue_interrupted(run, 3)
    assert [job.response_id for job in await store.claim_background("other", 60_000, 4)] == [requeued["id"]]
    await store.finish_background(finished["id"])

    assert await store.renew_leases("stalled", ids, 60_000) == {ended["id"], requeued["id"], finished["id"]}
    assert await store.expired_runs() == []  # the one it still held is renewed
    assert await store.renew_leases("other", [requeued["id"]], 60_000) == set()  # the new owner's is untouched
    assert await store.renew_leases("stalled", [], 60_000) == set()
    assert [seq for seq, _ in await store.read_events(ended["id"], 1)] == [2]
