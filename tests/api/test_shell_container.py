"""`shell` with a container environment (issue 18): the model's commands run on the server in a container's
sandboxed session (the code_interpreter sandbox), and the call comes back as shell_call + shell_call_output."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from parley.config import CodeInterpreterConfig, EmbeddedConfig, ModelConfig, Settings
from parley.testing.fake_agent import AgentUpstream
from parley.testing.in_process import InProcess, in_process

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
    deltas = [e["delta"] for e in events if e["type"] == "response.shell_call_output_content.delta"]
    assert {"stdout": "hi\n", "stderr": "oops\n"} in deltas
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
