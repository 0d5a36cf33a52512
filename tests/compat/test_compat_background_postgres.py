"""Two `parley serve` processes on one PostgreSQL database: a background stream started on one is resumed
on the other, woken by LISTEN/NOTIFY rather than by polling.

The upstream's reply waits half-way until the test resumes it (parley.testing.paused_upstream), and the follower
polls once an hour (`poll_s`): the events after the pause reach the follower only if a notification wakes it. The
read timeout is there to fail the test if none comes, not to time anything."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from compat_support import ParleyServer, model_toml
from tests.pg_support import new_database

from parley.testing.paused_upstream import PausingUpstream, ThreadedPausingUpstream

INPUT = "one two three four five six"  # "echo: one two three four five six": the first 3 words, then the pause
HALF = "echo: one two "


@pytest.fixture
def pausing() -> Iterator[PausingUpstream]:
    with ThreadedPausingUpstream() as upstream:
        yield upstream


def _config(upstream: PausingUpstream, database_url: str) -> str:
    # An hour between polls: a follower on the other process that is not notified does not see the rest.
    return (f'database_url = "{database_url}"\n' + model_toml("pause", upstream.base_url, "pause")
            + "[embedded]\nenabled = false\n[background]\npoll_s = 3600\n")


def _deltas(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


@pytest.mark.slow
def test_stream_resumed_on_another_process_via_notify(
    pausing: PausingUpstream, postgres_server: Any, tmp_path: Path
) -> None:
    # A new database, not the default one other tests share: these servers would run what others leave queued.
    database_url = asyncio.run(new_database(postgres_server, "parley_bg_notify"))
    first = ParleyServer(tmp_path / "a", _config(pausing, database_url))
    second = ParleyServer(tmp_path / "b", _config(pausing, database_url))
    first.start()
    second.start()
    try:
        body = {"model": "pause", "input": INPUT, "background": True, "stream": True}
        head: list[dict[str, Any]] = []
        with httpx.stream("POST", first.base_url + "/responses", json=body, timeout=60) as resp:
            for line in resp.iter_lines():
                if line.startswith("data: {"):
                    head.append(json.loads(line[6:]))
                    if _deltas(head) == HALF:
                        break  # the upstream waits here until resumed; the run goes on without this client
        response_id = head[0]["response"]["id"]
        params = {"stream": "true", "starting_after": str(head[1]["sequence_number"])}
        rest: list[dict[str, Any]] = []
        try:
            with httpx.stream("GET", f"{second.base_url}/responses/{response_id}", params=params,
                              timeout=60) as resp:
                assert resp.status_code == 200
                lines = resp.iter_lines()
                for line in lines:  # what was logged before the pause: the follower replays it from the log
                    if line.startswith("data: {"):
                        rest.append(json.loads(line[6:]))
                        if _deltas(rest) == HALF:
                            break
                # The follower now waits for more. The run can only go on once resumed (it is paused), so what
                # follows was logged after the follower had read the log: only a NOTIFY can bring it here.
                pausing.resume()
                rest += [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
        except httpx.ReadTimeout:
            pytest.fail("the follower was not woken: the events logged after the pause never reached it")
        assert rest[0]["sequence_number"] == head[1]["sequence_number"] + 1
        assert [e["sequence_number"] for e in rest] == list(range(rest[0]["sequence_number"],
                                                                  rest[0]["sequence_number"] + len(rest)))
        assert rest[-1]["type"] == "response.completed"
        assert _deltas(rest) == "echo: " + INPUT
    finally:
        pausing.resume()
        first.stop()
        second.stop()
