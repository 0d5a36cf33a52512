"""Two `parley serve` processes on one PostgreSQL database: a background stream started on one is resumed
on the other, woken by LISTEN/NOTIFY rather than by polling."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from compat_support import ParleyServer, model_toml
from sqlalchemy.engine import make_url

from parley.testing.fake_upstream import FakeUpstream

LONG = "one two three four five six seven eight nine ten eleven twelve"


def _config(fake: FakeUpstream, database_url: str) -> str:
    # poll_s is far longer than the run: only a notification can wake the follower in time.
    return (f'database_url = "{database_url}"\n' + model_toml("slow", fake.base_url, "slow")
            + "[embedded]\nenabled = false\n[background]\npoll_s = 30\n")


def _events(resp: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")]


@pytest.mark.slow
def test_stream_resumed_on_another_process_via_notify(
    fake: FakeUpstream, postgres_server: Any, tmp_path: Path
) -> None:
    database_url = make_url(postgres_server.get_uri(driver="asyncpg")).render_as_string(hide_password=False)
    first = ParleyServer(tmp_path / "a", _config(fake, database_url))
    second = ParleyServer(tmp_path / "b", _config(fake, database_url))
    first.start()
    second.start()
    try:
        body = {"model": "slow", "input": LONG, "background": True, "stream": True}
        head: list[dict[str, Any]] = []
        with httpx.stream("POST", first.base_url + "/responses", json=body, timeout=30) as resp:
            for line in resp.iter_lines():
                if line.startswith("data: {"):
                    head.append(json.loads(line[6:]))
                    if head[-1]["sequence_number"] >= 4:
                        break
        response_id = head[0]["response"]["id"]
        started = time.monotonic()
        params = {"stream": "true", "starting_after": "4"}
        with httpx.stream("GET", f"{second.base_url}/responses/{response_id}", params=params, timeout=60) as resp:
            rest = _events(resp)
        elapsed = time.monotonic() - started
        assert rest[0]["sequence_number"] == 5 and rest[-1]["type"] == "response.completed"
        assert [e["sequence_number"] for e in rest] == list(range(5, 5 + len(rest)))
        assert elapsed < 15, f"the follower waited {elapsed:.1f} s: it was not notified"
    finally:
        first.stop()
        second.stop()
