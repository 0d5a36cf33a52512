"""`shell` with a container environment (issue 18): the model's commands run on the server in a container's
sandboxed session (the code_interpreter sandbox), and the call comes back as shell_call + shell_call_output."""

from __future__ import annotations

import asyncio
import errno
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from parley.config import CodeInterpreterConfig, EmbeddedConfig, ModelConfig, Settings
from parley.testing.fake_agent import AgentUpstream
from parley.testing.in_process import InProcess, Served, in_process, served

EVENTS = TypeAdapter(ResponseStreamEvent)
AUTO = {"type": "shell", "environment": {"type": "container_auto"}}


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[AgentUpstream]:
    upstream = AgentUpstream()
    await upstream.start()
    yield upstream
    await upstream.stop()


@pytest.fixture(scope="module")
async def app(fake: AgentUpstream, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcess]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("shell"), embedded=EmbeddedConfig(enabled=False),
                        models=[ModelConfig(id="agent", base_url=fake.base_url, upstream_model="call-agent")],
                        code_interpreter=CodeInterpreterConfig(cell_timeout_s=10))
    async with in_process(settings) as running:
        yield running


@pytest.fixture(scope="module")
def sdk(app: InProcess) -> AsyncOpenAI:
    return app.sdk()


def _ask(arguments: dict[str, Any]) -> str:
    return json.dumps({"call": "shell", "arguments": arguments})


async def _stream(app: InProcess, body: dict[str, Any]) -> list[dict[str, Any]]:
    async with app.http.stream("POST", "/v1/responses", json={**body, "stream": True}) as resp:
        assert resp.status_code == 200, await resp.aread()
        text = (await resp.aread()).decode()
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    for event in events:
        EVENTS.validate_python(event)
    return events


async def test_commands_run_in_a_container(app: InProcess, sdk: AsyncOpenAI) -> None:
    body = {"model": "agent", "tools": [AUTO],
            "input": _ask({"commands": ["echo hi > a.txt", "cat a.txt; echo oops >&2", "exit 3"]})}
    events = await _stream(app, body)
    kinds = [e["type"] for e in events]
    assert kinds.count("response.shell_call_command.added") == 3
    assert [e["command"] for e in events if e["type"] == "response.shell_call_command.done"] == [
        "echo hi > a.txt", "cat a.txt; echo oops >&2", "exit 3"]
    commands = [e for e in events if e["type"] == "response.shell_call_command.delta"]  # padded (on by default)
    assert commands and all((len(e["delta"]) + len(e["obfuscation"])) % 16 == 0 for e in commands)
    deltas = [e for e in events if e["type"] == "response.shell_call_output_content.delta"]
    assert "".join(e["delta"].get("stdout", "") for e in deltas if e["command_index"] == 1) == "hi\n"
    assert "".join(e["delta"].get("stderr", "") for e in deltas if e["command_index"] == 1) == "oops\n"
    done = [e for e in events if e["type"] == "response.shell_call_output_content.done"]
    assert [e["command_index"] for e in done] == [0, 1, 2]
    assert done[2]["output"] == [{"stdout": "", "stderr": "", "outcome": {"type": "exit", "exit_code": 3}}]
    assert kinds.index("response.shell_call_command.added") < kinds.index("response.shell_call_output_content.done")
    final = Response.model_validate(events[-1]["response"])
    call, output, answer = final.output
    assert call.type == "shell_call" and call.status == "completed"
    assert call.environment is not None and call.environment.type == "container_reference"
    assert output.type == "shell_call_output" and output.call_id == call.call_id
    assert [o.outcome.type for o in output.output] == ["exit", "exit", "exit"]
    assert [o.outcome.exit_code for o in output.output] == [0, 0, 3]  # type: ignore[union-attr]
    assert output.output[1].stdout == "hi\n" and output.output[1].stderr == "oops\n"
    assert answer.type == "message" and "exit code 3" in final.output_text
    # The next response of the chain reuses the container: the file is still there.
    again = await sdk.responses.create(model="agent", previous_response_id=final.id, tools=[AUTO],  # type: ignore[list-item]
                                       input=_ask({"commands": ["cat a.txt"]}))
    reused = again.output[0]
    assert reused.type == "shell_call" and reused.environment is not None
    assert reused.environment.container_id == call.environment.container_id  # type: ignore[union-attr]
    assert again.output[1].output[0].stdout == "hi\n"  # type: ignore[union-attr]
    files = [f.path async for f in sdk.containers.files.list(call.environment.container_id)]  # type: ignore[union-attr]
    assert "/mnt/data/a.txt" in files


async def test_a_container_reference_and_a_timeout(sdk: AsyncOpenAI) -> None:
    container = await sdk.containers.create(name="shell")
    await sdk.containers.files.create(container.id, file=("data.txt", b"from the user"))
    tool = {"type": "shell", "environment": {"type": "container_reference", "container_id": container.id}}
    response = await sdk.responses.create(model="agent", tools=[tool],  # type: ignore[list-item]
                                          input=_ask({"commands": ["cat data.txt", "sleep 30"], "timeout_ms": 2000}))
    output = response.output[1]
    assert output.type == "shell_call_output"
    assert output.output[0].stdout == "from the user"
    assert output.output[1].outcome.type == "timeout"
    assert "timed out" in response.output_text


@pytest.mark.parametrize(("tool", "param"), [
    ({"type": "shell", "environment": {"type": "container_reference", "container_id": "cntr_nope"}},
     "tools[0].environment.container_id"),
    ({"type": "shell", "environment": {"type": "container_auto", "file_ids": ["file-nope"]}},
     "tools[0].environment.file_ids[0]"),
    ({"type": "shell", "environment": {"type": "container_auto", "skills": [{"type": "skill_reference"}]}},
     "tools[0].environment.skills"),
])
async def test_bad_environments(app: InProcess, tool: dict[str, Any], param: str) -> None:
    response = await app.http.post("/v1/responses", json={"model": "agent", "input": "x", "tools": [tool]})
    assert response.status_code in (400, 404), response.text
    assert response.json()["error"]["param"] == param


async def test_tool_choice_shell_forces_the_container_shell(sdk: AsyncOpenAI, fake: AgentUpstream) -> None:
    response = await sdk.responses.create(model="agent", tools=[AUTO], tool_choice={"type": "shell"},  # type: ignore[list-item]
                                          input=_ask({"commands": ["true"]}))
    assert response.output[0].type == "shell_call"
    assert fake.requests[-2]["tool_choice"] == {"type": "function", "function": {"name": "shell"}}


@pytest.mark.parametrize(("arguments", "said"), [
    ({"timeout_ms": 1e300}, "timeout_ms is out of range"),
    ({"max_output_length": 10**30}, "max_output_length is out of range"),
    ({"max_output_length": -5}, "max_output_length is negative"),
    ({"timeout_ms": -1}, "timeout_ms is negative"),
])
async def test_a_call_with_an_impossible_limit_is_the_tools_failure_not_the_responses(
        app: InProcess, arguments: dict[str, Any], said: str) -> None:
    # The model's arguments are untrusted: a number no JSON encoder here can write (past 64 bits) broke the stream
    # (TypeError in the SSE frame), and a negative limit was echoed on the item and cut the output to nothing.
    events = await _stream(app, {"model": "agent", "tools": [AUTO],
                                 "input": _ask({"commands": ["echo hi"], **arguments})})
    assert events[-1]["type"] == "response.completed"
    final = Response.model_validate(events[-1]["response"])
    assert [item.type for item in final.output] == ["shell_call", "message"]
    assert final.output[0].status == "incomplete"
    assert "The commands could not run" in final.output_text and said in final.output_text


async def test_a_command_the_shell_cannot_start_fails_alone_and_the_session_lives_on(app: InProcess) -> None:
    # A NUL byte in a command (exec refuses it) raised in the driver, which died: both commands came back as
    # timeouts and the container's session (its Python state too) was restarted.
    events = await _stream(app, {"model": "agent", "tools": [AUTO],
                                 "input": _ask({"commands": ["echo a\u0000b", "echo next"]})})
    final = Response.model_validate(events[-1]["response"])
    output = final.output[1]
    assert output.type == "shell_call_output" and output.status == "completed"
    first, second = output.output
    assert first.outcome.type == "exit" and first.outcome.exit_code == 126  # type: ignore[union-attr]
    assert "null" in first.stderr and second.stdout == "next\n"
    assert "restarted" not in final.output_text


async def test_a_command_that_redirects_its_own_output_runs_to_its_end(app: InProcess) -> None:
    # `exec >log 2>&1` closes the pipes the driver reads: it took their end for the command's and SIGKILLed it at
    # once (exit 137, made.txt never written). It now waits for the command, within its time limit.
    events = await _stream(app, {"model": "agent", "tools": [AUTO], "input": _ask({"commands": [
        "exec >log.txt 2>&1; sleep 0.5; echo written; touch made.txt", "cat log.txt; ls made.txt",
        "exec >&- 2>&-; sleep 30"], "timeout_ms": 3000})})
    final = Response.model_validate(events[-1]["response"])
    output = final.output[1]
    assert output.type == "shell_call_output"
    redirected, checked, held = output.output
    assert redirected.outcome.type == "exit" and redirected.outcome.exit_code == 0  # type: ignore[union-attr]
    assert checked.stdout == "written\nmade.txt\n"
    assert held.outcome.type == "timeout"  # still killed at its time limit


# -- live output, limits, cancellation ---------------------------------------------------------------------


@pytest.fixture(scope="module")
async def server(fake: AgentUpstream, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    """The app behind a real socket: an SSE stream reaches the client as it is written (the ASGI transport of
    the in-process client hands a body over only once it is complete)."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("shell-live"), embedded=EmbeddedConfig(enabled=False),
                        models=[ModelConfig(id="agent", base_url=fake.base_url, upstream_model="call-agent")],
                        code_interpreter=CodeInterpreterConfig(cell_timeout_s=600))
    async with served(settings) as running:
        yield running


def _workdir(server: Served, container_id: str) -> Path:
    pool = server.app.state.runtime.containers._pool
    assert pool is not None
    workdir = pool.slot(container_id).workdir
    assert workdir is not None
    return Path(workdir)


def _has_reader(fifo: Path) -> bool:
    """Whether a process has the fifo open for reading (opening it to write without blocking tells)."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as err:
        if err.errno == errno.ENXIO:
            return False
        raise
    os.close(fd)
    return True


def _release(fifo: Path) -> None:
    with open(fifo, "w") as gate:  # blocks until the command opens the fifo to read it
        gate.write("go\n")


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    async for line in lines:
        if line.startswith("data: {"):
            event = json.loads(line[6:])
            EVENTS.validate_python(event)
            yield event


async def test_output_streams_while_the_command_runs(server: Served) -> None:
    """The first line a command prints reaches the client while the command still waits (on a fifo only this
    test writes to), and what follows arrives after the release."""
    command = "mkfifo gate && echo first && cat gate && echo second >&2"
    body = {"model": "agent", "tools": [AUTO], "stream": True,
            "input": _ask({"commands": [command, "echo third"]})}
    events: list[dict[str, Any]] = []
    released_at: int | None = None
    container_id = ""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client, \
            client.stream("POST", "/responses", json=body) as resp:
        assert resp.status_code == 200
        async for event in _events(resp.aiter_lines()):
            events.append(event)
            if event["type"] == "response.output_item.added" and event["item"]["type"] == "shell_call_output":
                assert released_at is None
            if event["type"] == "response.output_item.done" and event["item"]["type"] == "shell_call":
                container_id = event["item"]["environment"]["container_id"]
            if event["type"] == "response.shell_call_output_content.delta" and released_at is None:
                assert event["delta"] == {"stdout": "first\n"} and event["command_index"] == 0
                fifo = _workdir(server, container_id) / "gate"
                released_at = len(events)
                await asyncio.to_thread(_release, fifo)
    assert released_at is not None
    kinds = [e["type"] for e in events]
    first_delta = kinds.index("response.shell_call_output_content.delta")
    assert first_delta == released_at - 1
    later = [e for e in events[released_at:] if e["type"] == "response.shell_call_output_content.delta"]
    assert "".join(e["delta"].get("stdout", "") for e in later if e["command_index"] == 0) == "go\n"
    assert "".join(e["delta"].get("stderr", "") for e in later if e["command_index"] == 0) == "second\n"
    # The call's item is final before its output starts; the output's item folds its deltas.
    call_done = next(i for i, e in enumerate(events) if e["type"] == "response.output_item.done"
                     and e["item"]["type"] == "shell_call")
    output_added = next(i for i, e in enumerate(events) if e["type"] == "response.output_item.added"
                        and e["item"]["type"] == "shell_call_output")
    assert call_done < output_added < first_delta
    final = Response.model_validate(events[-1]["response"])
    output = final.output[1]
    assert output.type == "shell_call_output" and output.status == "completed"
    deltas = [e for e in events if e["type"] == "response.shell_call_output_content.delta"]
    for index, out in enumerate(output.output):
        assert out.stdout == "".join(e["delta"].get("stdout", "") for e in deltas if e["command_index"] == index)
        assert out.stderr == "".join(e["delta"].get("stderr", "") for e in deltas if e["command_index"] == index)
    assert output.output[0].stdout == "first\ngo\n" and output.output[0].stderr == "second\n"
    assert output.output[1].stdout == "third\n"
    done = [e for e in events if e["type"] == "response.shell_call_output_content.done"]
    assert [e["command_index"] for e in done] == [0, 1]
    assert done[0]["output"][0]["outcome"] == {"type": "exit", "exit_code": 0}


async def test_output_is_cut_at_max_output_length(server: Served, fake: AgentUpstream) -> None:
    sdk = server.sdk()
    commands = ["yes 0123456789 | head -c 200000; yes e | head -c 50 >&2", "echo small"]
    response = await sdk.responses.create(model="agent", tools=[AUTO],  # type: ignore[list-item]
                                          input=_ask({"commands": commands, "max_output_length": 1000}))
    output = response.output[1]
    assert output.type == "shell_call_output" and output.max_output_length == 1000
    assert len(output.output[0].stdout) + len(output.output[0].stderr) == 1000
    assert output.output[0].stdout.startswith("0123456789\n0123456789\n")
    assert output.output[1].stdout == "small\n"
    assert [o.outcome.type for o in output.output] == ["exit", "exit"]
    told = json.dumps(fake.requests[-1]["messages"])
    assert "output cut to its first 1000 characters; the command wrote 200050 bytes" in told


async def test_each_command_has_its_own_time_limit(server: Served) -> None:
    sdk = server.sdk()
    response = await sdk.responses.create(model="agent", tools=[AUTO],  # type: ignore[list-item]
                                          input=_ask({"commands": ["echo before; sleep 600", "echo after"],
                                                      "timeout_ms": 1000}))
    output = response.output[1]
    assert output.type == "shell_call_output" and output.status == "completed"
    assert output.output[0].outcome.type == "timeout" and output.output[0].stdout == "before\n"
    assert output.output[1].outcome.type == "exit" and output.output[1].stdout == "after\n"


async def _until(check: Any) -> None:
    for _ in range(4000):  # a bound on the wait, not a timing assertion
        if check():
            return
        await asyncio.sleep(0.025)
    raise AssertionError("the condition never held")


async def test_a_client_that_goes_away_kills_the_command(server: Served) -> None:
    body = {"model": "agent", "tools": [AUTO], "stream": True,
            "input": _ask({"commands": ["mkfifo gate && echo waiting && cat gate"]})}
    response_id = container_id = ""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
        async with client.stream("POST", "/responses", json=body) as resp:
            async for event in _events(resp.aiter_lines()):
                if event["type"] == "response.created":
                    response_id = event["response"]["id"]
                if event["type"] == "response.output_item.done" and event["item"]["type"] == "shell_call":
                    container_id = event["item"]["environment"]["container_id"]
                if event["type"] == "response.shell_call_output_content.delta":
                    break  # the command now waits on the fifo; the client leaves
        fifo = _workdir(server, container_id) / "gate"
        pool = server.app.state.runtime.containers._pool
        await _until(lambda: not pool.slot(container_id).live)
        # The command is gone with its session (the sandbox's pid namespace is torn down just after the session's
        # process is reaped, so its last process may hold the fifo a moment longer: wait, bounded).
        await _until(lambda: not fifo.exists() or not _has_reader(fifo))
        stored = (await client.get(f"/responses/{response_id}")).json()
    assert stored["status"] == "cancelled"
    assert [(i["type"], i["status"]) for i in stored["output"]] == [
        ("shell_call", "completed"), ("shell_call_output", "incomplete")]


async def test_cancelling_a_background_response_kills_the_command(server: Served) -> None:
    sdk = server.sdk()
    created = await sdk.responses.create(model="agent", tools=[AUTO], background=True,  # type: ignore[list-item]
                                         input=_ask({"commands": ["mkfifo gate && cat gate"]}))
    pool = server.app.state.runtime.containers._pool
    before = {cid for cid, slot in pool._slots.items() if slot.workdir is not None}

    def started() -> list[str]:  # the response's container, once its command made the fifo
        return [cid for cid, slot in list(pool._slots.items()) if cid not in before and slot.workdir is not None
                and (Path(slot.workdir) / "gate").exists()]

    await _until(lambda: bool(started()))
    container_id = started()[0]
    fifo = _workdir(server, container_id) / "gate"
    assert pool.slot(container_id).live
    cancelled = await sdk.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    await _until(lambda: not pool.slot(container_id).live)
    await _until(lambda: not fifo.exists() or not _has_reader(fifo))  # torn down with the session's namespace


async def test_the_cancel_reply_is_the_cancelled_response_as_stored(server: Served) -> None:
    # The reply to POST /cancel was read before the run had written what it produced: it lacked the
    # shell_call_output that the stored response (read a moment later) has, as incomplete.
    sdk = server.sdk()
    created = await sdk.responses.create(model="agent", tools=[AUTO], background=True,  # type: ignore[list-item]
                                         input=_ask({"commands": ["echo first", "mkfifo gate && cat gate"]}))
    pool = server.app.state.runtime.containers._pool
    before = {cid for cid, slot in pool._slots.items() if slot.workdir is not None}

    def started() -> bool:  # the second command made its fifo: the first one's output is in
        return any(cid not in before and slot.workdir is not None and (Path(slot.workdir) / "gate").exists()
                   for cid, slot in list(pool._slots.items()))

    await _until(started)
    cancelled = await sdk.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    stored = await sdk.responses.retrieve(created.id)
    assert [item.model_dump() for item in cancelled.output] == [item.model_dump() for item in stored.output]
    output = cancelled.output[1]
    assert output.type == "shell_call_output" and output.status == "incomplete"
    assert output.output[0].stdout == "first\n"


async def test_a_background_run_replays_the_live_output(app: InProcess) -> None:
    """The live item's events are logged like any other: a background run's stream replays them, from the start
    or after a given event, and they fold into the stored output."""
    sdk = app.sdk()
    created = await sdk.responses.create(model="agent", tools=[AUTO], background=True,  # type: ignore[list-item]
                                         input=_ask({"commands": ["echo one; echo two >&2", "echo three"]}))
    for _ in range(4000):  # a bound on the wait, not a timing assertion
        done = await sdk.responses.retrieve(created.id)
        if done.status not in ("queued", "in_progress"):
            break
        await asyncio.sleep(0.025)
    assert done.status == "completed", done.error
    async with app.http.stream("GET", f"/v1/responses/{created.id}?stream=true") as resp:
        text = (await resp.aread()).decode()
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    for event in events:
        EVENTS.validate_python(event)
    output = done.output[1]
    assert output.type == "shell_call_output" and output.status == "completed"
    deltas = [e for e in events if e["type"] == "response.shell_call_output_content.delta"]
    for index, out in enumerate(output.output):
        assert out.stdout == "".join(e["delta"].get("stdout", "") for e in deltas if e["command_index"] == index)
        assert out.stderr == "".join(e["delta"].get("stderr", "") for e in deltas if e["command_index"] == index)
    assert [o.stdout for o in output.output] == ["one\n", "three\n"] and output.output[0].stderr == "two\n"
    first = deltas[0]["sequence_number"]
    replay = await sdk.responses.retrieve(created.id, stream=True, starting_after=first)
    tail = [event async for event in replay]
    assert tail[0].sequence_number == first + 1 and tail[-1].type == "response.completed"
    assert [e.type for e in tail].count("response.shell_call_output_content.done") == 2
