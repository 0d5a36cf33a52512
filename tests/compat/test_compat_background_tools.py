"""Background runs stopped while a built-in tool runs, against real `parley serve` processes: a server shutdown
during a code_interpreter cell, the time limit during a shell command, a SIGKILL while a shell command's output
streams, and a custom tool call stopped while its input streams. The tool (or the upstream) is held open on a fifo
nobody writes to (or a stream never ended), so it is running whenever the run stops. Each replayed stream (raw and
through the openai SDK) must stay well formed: the open streams and items closed before `response.failed`,
sequence numbers contiguous, the stored output what the events fold to."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from compat_support import ParleyServer, check_events, fold_output, model_toml
from openai import OpenAI
from openai.types.responses import ResponseFailedEvent
from tests.pg_support import new_database

from parley.testing.fake_coder import ThreadedCoderUpstream
from parley.testing.fake_upstream import FakeUpstream

SHELL = {"type": "shell", "environment": {"type": "container_auto"}}
# Prints, then waits on a fifo no one writes to: held until the run is stopped.
HELD_COMMAND = "echo waiting && mkfifo gate && cat gate"
HELD_CELL = "import os\nos.mkfifo('gate')\nprint(open('gate').read())"


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadedCoderUpstream]:
    with ThreadedCoderUpstream() as running:
        yield running


def _config(upstream: ThreadedCoderUpstream, database_url: str, **background: Any) -> str:
    config = f'database_url = "{database_url}"\n[embedded]\nenabled = false\n'
    config += "[code_interpreter]\ncell_timeout_s = 600\n"
    for model, upstream_model in (("code-agent", "code-agent"), ("agent", "call-agent")):
        config += f'[[models]]\nid = "{model}"\nbase_url = "{upstream.base_url}"\nupstream_model = "{upstream_model}"\n'
    config += "[background]\n" + "".join(f"{k} = {v}\n" for k, v in background.items())
    return config


def _database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}"
    # A new database (tests/pg_support.py), not the default one other tests share: this test's servers
    # (max_concurrent = 1) would first run what others leave queued, and later servers would take up what this
    # crash leaves.
    return asyncio.run(new_database(request.getfixturevalue("postgres_server"), "parley_bg_tools"))


def _shell_body(command: str) -> dict[str, Any]:
    return {"model": "agent", "tools": [SHELL], "background": True, "stream": True,
            "input": json.dumps({"call": "shell", "arguments": {"commands": [command]}})}


def _follow(server: ParleyServer, body: dict[str, Any], until: str | None) -> list[dict[str, Any]]:
    """Create the run and read its stream (what a follower reads is logged) up to the first `until` event, or to
    its end."""
    events: list[dict[str, Any]] = []
    with httpx.stream("POST", server.base_url + "/responses", json=body, timeout=60.0) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line[6:]))
                if events[-1]["type"] == until:
                    break
    return events


def _replay(server: ParleyServer, response_id: str) -> list[dict[str, Any]]:
    with httpx.stream("GET", f"{server.base_url}/responses/{response_id}", params={"stream": "true"},
                      timeout=30.0) as resp:
        assert resp.status_code == 200, resp.read()
        return [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")]


def _wait_failed(server: ParleyServer, response_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current: dict[str, Any] = httpx.get(f"{server.base_url}/responses/{response_id}", timeout=30.0).json()
        if current["status"] == "failed":
            return current
        time.sleep(0.1)
    raise AssertionError(f"{response_id} never failed")


def _check_closed(server: ParleyServer, log: list[dict[str, Any]], reason: str) -> dict[str, Any]:
    """The log is well formed and every item it opened is closed; the failed response, the events' fold and the
    stored response agree, and the SDK reads the same stream. Returns the failed response."""
    check_events(log)  # SDK types, sequence numbers 0..n, one terminal event, last
    added = [e["output_index"] for e in log if e["type"] == "response.output_item.added"]
    done = [e["output_index"] for e in log if e["type"] == "response.output_item.done"]
    assert sorted(added) == sorted(done) == list(range(len(added)))
    failed: dict[str, Any] = log[-1]["response"]
    assert log[-1]["type"] == "response.failed" and reason in failed["error"]["message"]
    assert failed["output"] == fold_output(log)
    stored = httpx.get(f"{server.base_url}/responses/{failed['id']}", timeout=30.0).json()
    assert stored["status"] == "failed" and stored["output"] == failed["output"]
    with OpenAI(base_url=server.base_url, api_key="local", max_retries=0, timeout=30.0) as client:
        typed = list(client.responses.retrieve(failed["id"], stream=True))
        assert [e.type for e in typed] == [e["type"] for e in log]
        with client.responses.stream(response_id=failed["id"]) as stream:
            seen = list(stream)
        assert isinstance(seen[-1], ResponseFailedEvent)
        assert [item.model_dump(exclude_none=True) for item in seen[-1].response.output] == [
            {k: v for k, v in item.items() if v is not None} for item in failed["output"]]
    return failed


def test_shutdown_while_a_cell_runs_closes_its_item(upstream: ThreadedCoderUpstream, tmp_path: Path) -> None:
    config = _config(upstream, f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}")
    first = ParleyServer(tmp_path / "first", config)
    first.start()
    body = {"model": "code-agent", "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
            "background": True, "stream": True, "input": json.dumps([HELD_CELL])}
    try:
        head = _follow(first, body, until="response.code_interpreter_call.interpreting")
    finally:
        first.stop()  # SIGTERM while the cell waits: the runner fails the run as it stops
    again = ParleyServer(tmp_path / "again", config)
    again.start()
    try:
        log = _replay(again, head[0]["response"]["id"])
        assert log[:len(head)] == head
        failed = _check_closed(again, log, "shut down")
        closing = log[len(head):]
        assert [e["type"] for e in closing] == ["response.output_item.done", "response.failed"]
        cell = closing[0]["item"]
        assert cell["type"] == "code_interpreter_call" and cell["status"] == "incomplete"
        assert cell["code"] == HELD_CELL and failed["output"] == [cell]
    finally:
        again.stop()


def test_time_limit_while_a_shell_command_runs(upstream: ThreadedCoderUpstream, tmp_path: Path) -> None:
    """The command never ends (its fifo is never written): the run's time limit stops it, and the live stream
    closes the command's output (what it printed, ended as `timeout`) and the output item before `response.failed`."""
    server = ParleyServer(tmp_path, _config(upstream, f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}",
                                            time_limit_s=15))
    server.start()
    try:
        live = _follow(server, _shell_body(HELD_COMMAND), until=None)
        failed = _check_closed(server, live, "time limit")
        assert _replay(server, failed["id"]) == live
        output = {"stdout": "waiting\n", "stderr": "", "outcome": {"type": "timeout"}}
        kinds = [e["type"] for e in live]
        at = kinds.index("response.shell_call_output_content.done")
        assert kinds[at:] == ["response.shell_call_output_content.done", "response.output_item.done",
                              "response.failed"]
        assert live[at]["command_index"] == 0 and live[at]["output"] == [output]
        item = live[at + 1]["item"]
        assert item["type"] == "shell_call_output" and item["status"] == "incomplete"
        assert item["output"] == [output] and failed["output"][-1] == item
        assert [i["type"] for i in failed["output"]] == ["shell_call", "shell_call_output"]
    finally:
        server.stop()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def test_sigkill_while_shell_output_streams(upstream: ThreadedCoderUpstream, tmp_path: Path, backend: str,
                                            request: pytest.FixtureRequest) -> None:
    """The worker dies while a command's output streams: the process ending the run closes that output stream
    (`shell_call_output_content.done` with what the logged deltas built) and the item, as a live run does."""
    config = _config(upstream, _database_url(backend, request, tmp_path), lease_s=1.0, max_concurrent=1)
    doomed = ParleyServer(tmp_path / "doomed", config)
    doomed.start()
    try:
        head = _follow(doomed, _shell_body(HELD_COMMAND), until="response.shell_call_output_content.delta")
        assert head[-1]["delta"] == {"stdout": "waiting\n"}
    finally:
        assert doomed.process is not None
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait(5)
    survivor = ParleyServer(tmp_path / "survivor", config)
    survivor.start()
    try:
        response_id = head[0]["response"]["id"]
        _wait_failed(survivor, response_id)
        log = _replay(survivor, response_id)
        assert log[:len(head)] == head
        failed = _check_closed(survivor, log, "interrupted")
        closing = log[len(head):]
        output = {"stdout": "waiting\n", "stderr": "", "outcome": {"type": "timeout"}}
        assert [e["type"] for e in closing] == ["response.shell_call_output_content.done",
                                                "response.output_item.done", "response.failed"]
        assert closing[0]["command_index"] == 0 and closing[0]["output"] == [output]
        item = closing[1]["item"]
        assert item["type"] == "shell_call_output" and item["status"] == "incomplete" and item["output"] == [output]
        assert failed["output"][-1] == item
    finally:
        survivor.stop()


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_a_custom_call_stopped_mid_input_keeps_the_input_it_streamed(fake: FakeUpstream, tmp_path: Path,
                                                                      stop: str) -> None:
    """The upstream streams a custom tool call's arguments (`{"input": "print(4`) and never ends them: the input
    streams as it comes (so the log holds it), and a run stopped there (a shutdown fails it live; a SIGKILL leaves
    it to the process that takes it up) closes the call with that input."""
    config = f'database_url = "sqlite+aiosqlite:///{tmp_path / "runs.db"}"\n[embedded]\nenabled = false\n'
    config += model_toml("tools-held", fake.base_url, "tools-held") + "[background]\nlease_s = 1.0\n"
    body = {"model": "tools-held", "background": True, "stream": True, "input": "run it",
            "tools": [{"type": "custom", "name": "run_python", "description": "Runs Python code."}]}
    first = ParleyServer(tmp_path / "first", config)
    first.start()
    try:
        head = _follow(first, body, until="response.custom_tool_call_input.delta")
        assert head[-1]["delta"] == "print(4"
    finally:
        if stop == "sigkill":
            assert first.process is not None
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(5)
        else:
            first.stop()
    again = ParleyServer(tmp_path / "again", config)
    again.start()
    try:
        response_id = head[0]["response"]["id"]
        _wait_failed(again, response_id)
        log = _replay(again, response_id)
        assert log[:len(head)] == head
        failed = _check_closed(again, log, "shut down" if stop == "sigterm" else "interrupted")
        closing = log[len(head):]
        assert [e["type"] for e in closing] == ["response.custom_tool_call_input.done", "response.output_item.done",
                                                "response.failed"]
        assert closing[0]["input"] == "print(4"
        call = closing[1]["item"]
        assert call["type"] == "custom_tool_call" and call["input"] == "print(4" and call["name"] == "run_python"
        assert failed["output"] == [call]
    finally:
        again.stop()
