"""Background responses against real `parley serve` processes: polling, resumable streams, cancellation,
time limits, two processes on one database, and a SIGKILL in the middle of a run."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from compat_support import (
    ParleyServer,
    check_events,
    check_response,
    fold_output,
    fold_text,
    metric,
    model_toml,
    wait_for,
)
from openai import OpenAI
from openai.types.responses import ResponseFailedEvent, ResponseOutputMessage
from tests.pg_support import new_database

from parley.testing.fake_upstream import FakeUpstream

LONG = "one two three four five six seven eight nine ten eleven twelve"  # ~14 chunks, 0.2 s apart


def _config(fake: FakeUpstream, db: Path | None = None, **background: Any) -> str:
    config = f'database_url = "sqlite+aiosqlite:///{db}"\n' if db else ""
    config += "".join(model_toml(m, fake.base_url, m) for m in ("echo", "slow", "text-held", "error-500"))
    config += "[embedded]\nenabled = false\n[background]\n"
    config += "".join(f"{k} = {v}\n" for k, v in background.items())
    return config


@pytest.fixture(scope="module")
def bg(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ParleyServer]:
    server = ParleyServer(tmp_path_factory.mktemp("bg"), _config(fake, max_concurrent=1, time_limit_s=30))
    server.start()
    yield server
    server.stop()


def _client(server: ParleyServer) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key="sk-local", max_retries=0, timeout=30.0)


def _wait_status(client: OpenAI, response_id: str, statuses: set[str], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = client.responses.retrieve(response_id)
        if current.status in statuses:
            return current
        time.sleep(0.05)
    raise AssertionError(f"{response_id} never reached {statuses}")


def _read_events(base_url: str, body: dict[str, Any], stop_after_seq: int) -> list[dict[str, Any]]:
    """Stream a create and hang up after event `stop_after_seq`."""
    events: list[dict[str, Any]] = []
    with httpx.stream("POST", base_url + "/responses", json=body, timeout=30.0,
                      headers={"authorization": "Bearer sk-local"}) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                import json

                events.append(json.loads(line[6:]))
                if events[-1]["sequence_number"] >= stop_after_seq:
                    break
    return events


def _replay(base_url: str, response_id: str, starting_after: int | None = None) -> list[dict[str, Any]]:
    import json

    params = {"stream": "true"} | ({"starting_after": str(starting_after)} if starting_after is not None else {})
    with httpx.stream("GET", f"{base_url}/responses/{response_id}", params=params, timeout=30.0) as resp:
        assert resp.status_code == 200, resp.read()
        return [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")]


def test_background_create_then_poll(bg: ParleyServer) -> None:
    with _client(bg) as client:
        raw = client.responses.with_raw_response.create(model="echo", input="hello", background=True)
        first = check_response(raw.http_response.json())
        assert first.status in ("queued", "in_progress") and first.background is True
        done = _wait_status(client, first.id, {"completed"})
        assert done.output_text == "echo: hello" and done.usage is not None


def test_background_stream_drop_and_resume(bg: ParleyServer) -> None:
    body = {"model": "slow", "input": LONG, "background": True, "stream": True}
    head = _read_events(bg.base_url, body, stop_after_seq=5)
    assert [e["type"] for e in head[:3]] == ["response.created", "response.queued", "response.in_progress"]
    assert head[0]["response"]["status"] == "queued"
    response_id = head[0]["response"]["id"]
    rest = _replay(bg.base_url, response_id, starting_after=5)
    assert rest[0]["sequence_number"] == 6 and rest[-1]["type"] == "response.completed"
    full = _replay(bg.base_url, response_id)  # the whole log, from response.created
    check_events(full)
    assert [e["sequence_number"] for e in full] == list(range(len(full)))
    assert full[6:] == rest
    with _client(bg) as client:
        resumed = [event.sequence_number for event in
                   client.responses.retrieve(response_id, stream=True, starting_after=5)]
        assert resumed == [e["sequence_number"] for e in rest]
        with client.responses.stream(response_id=response_id, starting_after=5) as stream:
            seen = [event.sequence_number for event in stream]
            final = stream.get_final_response()
        assert seen[0] == 6 and final.output_text == "echo: " + LONG


def _padding(events: list[dict[str, Any]]) -> list[str | None]:
    """Each text delta's `obfuscation` (None: none), checked to pad its delta to a multiple of 16 characters."""
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert deltas
    for event in deltas:
        if "obfuscation" in event:
            assert (len(event["delta"]) + len(event["obfuscation"])) % 16 == 0, event
    return [e.get("obfuscation") for e in deltas]


def test_a_resumed_stream_is_obfuscated_as_its_reader_asks(bg: ParleyServer) -> None:
    """`include_obfuscation` on GET /v1/responses/{id}?stream=true decides the replayed deltas' padding, with the
    same default as `stream_options.include_obfuscation` on create (on), whichever way the run was created (it was
    not read: a replay was padded as the run's create had asked)."""
    with _client(bg) as client:
        padded = client.responses.create(model="echo", input="pad me twice", background=True)  # logged padded
        _wait_status(client, padded.id, {"completed"})
        with client.responses.create(model="echo", input="do not pad me", background=True, stream=True,
                                     stream_options={"include_obfuscation": False}) as created:
            streamed = list(created)
        assert all(p is None for p in _padding([event.to_dict() for event in streamed]))
        assert streamed[0].type == "response.created"
        unpadded = streamed[0].response.id
        for response_id, text in ((padded.id, "echo: pad me twice"), (unpadded, "echo: do not pad me")):
            on = [e.to_dict() for e in client.responses.retrieve(response_id, stream=True, include_obfuscation=True)]
            off = [e.to_dict() for e in client.responses.retrieve(response_id, stream=True, include_obfuscation=False)]
            default = _replay(bg.base_url, response_id)
            assert all(isinstance(p, str) for p in _padding(on) + _padding(default))
            assert all(p is None for p in _padding(off))
            check_events(default)
            for events in (on, off, default):  # (the SDK's to_dict makes created_at a float: checked raw only)
                assert fold_text(events) == text
            assert [{k: v for k, v in e.items() if k != "obfuscation"} for e in on] == off
        for query in ("stream=true&include_obfuscation=maybe", "include_obfuscation=2"):
            bad = httpx.get(f"{bg.base_url}/responses/{padded.id}?{query}", timeout=30.0)
            assert bad.status_code == 400, bad.text
            assert bad.json()["error"]["param"] == "include_obfuscation"


def test_cancel_in_progress_and_queued(bg: ParleyServer, fake: FakeUpstream) -> None:
    with _client(bg) as client:
        # text-held: it runs until cancelled (with `slow`, a test stalled ~2 s saw it completed, the queued one run)
        running = client.responses.create(model="text-held", input=LONG + " running", background=True)
        _wait_status(client, running.id, {"in_progress"})
        queued = client.responses.create(model="slow", input="queued marker", background=True)
        assert client.responses.retrieve(queued.id).status == "queued"  # max_concurrent = 1

        cancelled = client.responses.cancel(queued.id)
        assert cancelled.status == "cancelled"
        disconnects = len(fake.disconnects)
        stopped = client.responses.cancel(running.id)
        assert stopped.status == "cancelled"
        assert wait_for(lambda: len(fake.disconnects) > disconnects, timeout=30)  # the upstream call was closed
        # Its worker has ended (nothing runs in this process now): nothing can write over the cancellation any more.
        assert wait_for(lambda: metric(bg, "parley_background_running") == 0, timeout=30)
        assert client.responses.retrieve(running.id).status == "cancelled"  # the worker did not overwrite it
        assert client.responses.retrieve(queued.id).status == "cancelled"
        assert not any("queued marker" in str(r["messages"]) for r in fake.requests)  # it never ran
        again = client.responses.cancel(running.id)  # idempotent
        assert again.status == "cancelled"


def test_cancel_finished_and_foreground(bg: ParleyServer) -> None:
    with _client(bg) as client:
        done = client.responses.create(model="echo", input="x", background=True)
        _wait_status(client, done.id, {"completed"})
        assert client.responses.cancel(done.id).status == "completed"
        foreground = client.responses.create(model="echo", input="x")
        with pytest.raises(openai.BadRequestError):
            client.responses.cancel(foreground.id)
        with pytest.raises(openai.BadRequestError):
            client.responses.retrieve(foreground.id, stream=True)
        with pytest.raises(openai.BadRequestError) as info:
            client.responses.create(model="echo", input="x", background=True, store=False)
        assert info.value.param == "background"


def test_background_upstream_failure(bg: ParleyServer) -> None:
    with _client(bg) as client:
        created = client.responses.create(model="error-500", input="x", background=True)
        failed = _wait_status(client, created.id, {"failed"})
        assert failed.error is not None and "HTTP 500" in failed.error.message
    events = _replay(bg.base_url, created.id)
    assert events[-1]["type"] == "response.failed"


def test_time_limit(fake: FakeUpstream, tmp_path: Path) -> None:
    server = ParleyServer(tmp_path / "limit", _config(fake, time_limit_s=0.6))
    server.start()
    try:
        with _client(server) as client:
            created = client.responses.create(model="slow", input=LONG, background=True)
            failed = _wait_status(client, created.id, {"failed"})
            assert failed.error is not None and "time limit" in failed.error.message
    finally:
        server.stop()


def test_stream_resumes_on_another_process(fake: FakeUpstream, tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    first = ParleyServer(tmp_path / "a", _config(fake, db))
    second = ParleyServer(tmp_path / "b", _config(fake, db))
    first.start()
    second.start()
    try:
        body = {"model": "slow", "input": LONG, "background": True, "stream": True}
        head = _read_events(first.base_url, body, stop_after_seq=4)
        response_id = head[0]["response"]["id"]
        rest = _replay(second.base_url, response_id, starting_after=4)  # follows the run on the other process
        assert rest[0]["sequence_number"] == 5 and rest[-1]["type"] == "response.completed"
        assert rest[-1]["response"]["output"][0]["content"][0]["text"] == "echo: " + LONG
    finally:
        first.stop()
        second.stop()


def test_sigkill_mid_run_then_restart(fake: FakeUpstream, tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    config = _config(fake, db, max_concurrent=1, lease_s=1.0)
    doomed = ParleyServer(tmp_path / "doomed", config)
    doomed.start()
    # text-held: it runs until the kill, and the job behind it stays queued (with `slow`, a test stalled ~2 s saw the
    # run completed and the queued job claimed)
    body = {"model": "text-held", "input": LONG, "background": True, "stream": True}
    head = _read_events(doomed.base_url, body, stop_after_seq=4)
    interrupted = head[0]["response"]["id"]
    with _client(doomed) as client:
        waiting = client.responses.create(model="echo", input="waiting in the queue", background=True)
        assert client.responses.retrieve(waiting.id).status == "queued"
    assert doomed.process is not None
    doomed.process.send_signal(signal.SIGKILL)
    doomed.process.wait(5)

    survivor = ParleyServer(tmp_path / "survivor", config)
    survivor.start()
    try:
        with _client(survivor) as client:
            failed = _wait_status(client, interrupted, {"failed"})
            assert failed.error is not None and "interrupted" in failed.error.message
            resumed = _wait_status(client, waiting.id, {"completed"})  # the queued job ran after the restart
            assert resumed.output_text == "echo: waiting in the queue"
        log = _replay(survivor.base_url, interrupted)
        assert [e["sequence_number"] for e in log] == list(range(len(log)))  # nothing lost or duplicated
        assert log[:5] == head[:5] and log[-1]["type"] == "response.failed"
        assert sum(e["type"] == "response.failed" for e in log) == 1
    finally:
        survivor.stop()


def _database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'crash.db'}"
    # A new database (tests/pg_support.py), not the default one other tests share: a later server there would take
    # up what this crash leaves, and this test's servers what others leave (their queued runs before this one's).
    return asyncio.run(new_database(request.getfixturevalue("postgres_server"), "parley_bg_crash"))


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def test_sigkill_mid_text_closes_the_open_item(
    fake: FakeUpstream, tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """A run killed while its message streams: the replayed log closes the message (incomplete, with the text its
    deltas built) before `response.failed`, and the stored response holds that same item. The upstream holds the
    answer's last word back until the server is gone, so the kill lands mid-text however late it comes (with `slow`
    a test stalled ~2 s between its read and the kill let the run complete first)."""
    config = f'database_url = "{_database_url(backend, request, tmp_path)}"\n'
    config += model_toml("text-held", fake.base_url, "text-held")
    config += "[embedded]\nenabled = false\n[background]\nmax_concurrent = 1\nlease_s = 1.0\n"
    doomed = ParleyServer(tmp_path / "doomed", config)
    doomed.start()
    head: list[dict[str, Any]] = []
    body = {"model": "text-held", "input": LONG, "background": True, "stream": True}
    with httpx.stream("POST", doomed.base_url + "/responses", json=body, timeout=30.0) as resp:
        for line in resp.iter_lines():  # a follower only sees logged events: these are in the log
            if line.startswith("data: {"):
                head.append(json.loads(line[6:]))
                if sum(e["type"] == "response.output_text.delta" for e in head) == 2:
                    break
    assert doomed.process is not None
    doomed.process.send_signal(signal.SIGKILL)
    doomed.process.wait(5)
    response_id = head[0]["response"]["id"]

    survivor = ParleyServer(tmp_path / "survivor", config)
    survivor.start()
    try:
        with _client(survivor) as client:
            _wait_status(client, response_id, {"failed"})
        log = _replay(survivor.base_url, response_id)
        check_events(log)  # SDK types, sequence numbers 0..n, one terminal event, last
        assert log[:len(head)] == head and log[-1]["type"] == "response.failed"
        streamed = fold_text(log)
        assert streamed and ("echo: " + LONG).startswith(streamed) and streamed != "echo: " + LONG  # cut mid-text
        closing = log[len(head):]
        assert [e["type"] for e in closing[-4:]] == ["response.output_text.done", "response.content_part.done",
                                                     "response.output_item.done", "response.failed"]
        part = {"type": "output_text", "text": streamed, "annotations": [], "logprobs": []}
        assert closing[-4]["text"] == streamed and closing[-3]["part"] == part
        message = closing[-2]["item"]
        assert message["status"] == "incomplete" and message["content"] == [part]
        for opened, closed in (("output_item", "output_index"), ("content_part", "content_index")):
            added = [(e["output_index"], e.get(closed)) for e in log if e["type"] == f"response.{opened}.added"]
            done = [(e["output_index"], e.get(closed)) for e in log if e["type"] == f"response.{opened}.done"]
            assert added == done
        failed = log[-1]["response"]
        assert failed["status"] == "failed" and "interrupted" in failed["error"]["message"]
        assert failed["output"] == fold_output(log) == [message]  # nothing lost, nothing invented
        stored = httpx.get(f"{survivor.base_url}/responses/{response_id}", timeout=30.0).json()
        assert stored["status"] == "failed" and stored["output"] == failed["output"]

        with _client(survivor) as client:  # the SDK reads the same stream, and its accumulator takes it
            typed = list(client.responses.retrieve(response_id, stream=True))
            assert [e.type for e in typed] == [e["type"] for e in log]
            with client.responses.stream(response_id=response_id) as stream:
                seen = list(stream)
            assert isinstance(seen[-1], ResponseFailedEvent)
            item = seen[-1].response.output[0]
            assert isinstance(item, ResponseOutputMessage) and item.status == "incomplete"
            assert [c.text for c in item.content if c.type == "output_text"] == [streamed]
            text_done = [e for e in seen if e.type == "response.output_text.done"]
            assert len(text_done) == 1 and text_done[0].text == streamed
    finally:
        survivor.stop()


def test_graceful_shutdown_fails_the_running_run(fake: FakeUpstream, tmp_path: Path) -> None:
    db = tmp_path / "shutdown.db"
    server = ParleyServer(tmp_path / "one", _config(fake, db))
    server.start()
    with _client(server) as client:
        created = client.responses.create(model="text-held", input=LONG, background=True)  # runs until stopped
        _wait_status(client, created.id, {"in_progress"})
    server.stop()  # SIGTERM: uvicorn shuts down, the runner stops its runs
    again = ParleyServer(tmp_path / "two", _config(fake, db))
    again.start()
    try:
        with _client(again) as client:
            ended = client.responses.retrieve(created.id)
            assert ended.status == "failed" and ended.error is not None and "shut down" in ended.error.message
        log = _replay(again.base_url, created.id)
        assert log[-1]["type"] == "response.failed"
        assert [e["sequence_number"] for e in log] == list(range(len(log)))
    finally:
        again.stop()
