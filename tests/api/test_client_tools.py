"""Client-executed tools with their own item types (issue 18): computer (and its preview), local_shell, shell
with a local environment, apply_patch. The model calls a function Parley offers; the client gets the tool's
item, runs it, returns the `*_output` item, and the model sees the result on the next turn."""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from parley.config import EmbeddedConfig, ModelConfig, Settings
from parley.testing.fake_agent import AgentUpstream
from parley.testing.in_process import InProcess, in_process

EVENTS = TypeAdapter(ResponseStreamEvent)


def _png() -> str:
    """A real 1x1 PNG as a data URL."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    raw = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", (1).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00")
    raw += chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(raw).decode()


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[AgentUpstream]:
    upstream = AgentUpstream()
    await upstream.start()
    yield upstream
    await upstream.stop()


@pytest.fixture(scope="module")
async def app(fake: AgentUpstream, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcess]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("client-tools"), embedded=EmbeddedConfig(enabled=False),
        models=[ModelConfig(id="agent", base_url=fake.base_url, upstream_model="call-agent"),
                ModelConfig(id="blind", base_url=fake.base_url, upstream_model="call-agent",
                            quirks={"vision": False})],  # type: ignore[arg-type]
    )
    async with in_process(settings) as running:
        yield running


@pytest.fixture(scope="module")
def sdk(app: InProcess) -> AsyncOpenAI:
    return app.sdk()


def _ask(call: str, arguments: dict[str, Any]) -> str:
    return json.dumps({"call": call, "arguments": arguments})


TOOLS: dict[str, dict[str, Any]] = {
    "computer": {"type": "computer"},
    "computer_use_preview": {"type": "computer_use_preview", "display_width": 1024, "display_height": 768,
                             "environment": "linux"},
    "local_shell": {"type": "local_shell"},
    "shell": {"type": "shell", "environment": {"type": "local"}},
    "apply_patch": {"type": "apply_patch"},
}


async def _stream(app: InProcess, body: dict[str, Any]) -> list[dict[str, Any]]:
    async with app.http.stream("POST", "/v1/responses", json={**body, "stream": True}) as resp:
        assert resp.status_code == 200, await resp.aread()
        text = (await resp.aread()).decode()
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    for event in events:
        EVENTS.validate_python(event)
    return events


async def test_computer_call_then_a_screenshot(sdk: AsyncOpenAI, app: InProcess, fake: AgentUpstream) -> None:
    ask = _ask("computer", {"actions": [{"type": "click", "x": 10, "y": 20}, {"type": "type", "text": "hi"}]})
    first = await sdk.responses.create(model="agent", input=ask, tools=[TOOLS["computer"]])  # type: ignore[list-item]
    call = first.output[-1]
    assert call.type == "computer_call" and call.status == "completed" and call.pending_safety_checks == []
    assert [a.type for a in call.actions or ()] == ["click", "type"]
    assert call.actions[0].x == 10  # type: ignore[index,union-attr]
    # The client took the screenshot: the model sees the result and the image.
    output = {"type": "computer_call_output", "call_id": call.call_id,
              "output": {"type": "computer_screenshot", "image_url": _png()}}
    second = await sdk.responses.create(model="agent", previous_response_id=first.id, input=[output],  # type: ignore[list-item]
                                        tools=[TOOLS["computer"]])  # type: ignore[list-item]
    assert second.output_text.endswith("(with an image)")
    sent = fake.requests[-1]["messages"]
    assert sent[-2]["role"] == "tool" and sent[-1]["content"][0]["type"] == "image_url"
    # The stored input item shows the image only when asked.
    listed = (await app.http.get(f"/v1/responses/{second.id}/input_items")).json()["data"]
    assert "image_url" not in listed[0]["output"]
    included = (await app.http.get(f"/v1/responses/{second.id}/input_items",
                                   params={"include[]": "computer_call_output.output.image_url"})).json()["data"]
    assert included[0]["output"]["image_url"].startswith("data:image/png")


async def test_computer_use_preview_has_one_action(sdk: AsyncOpenAI) -> None:
    ask = _ask("computer", {"actions": [{"type": "screenshot"}]})
    response = await sdk.responses.create(model="agent", input=ask, tools=[TOOLS["computer_use_preview"]],  # type: ignore[list-item]
                                          tool_choice={"type": "computer_use_preview"})  # type: ignore[arg-type]
    call = response.output[-1]
    assert call.type == "computer_call" and call.action is not None and call.action.type == "screenshot"
    assert call.actions is None


async def test_screenshots_need_a_vision_model(sdk: AsyncOpenAI, app: InProcess) -> None:
    first = await sdk.responses.create(model="blind", input=_ask("computer", {"actions": [{"type": "wait"}]}),
                                       tools=[TOOLS["computer"]])  # type: ignore[list-item]
    output = {"type": "computer_call_output", "call_id": first.output[-1].call_id,  # type: ignore[union-attr]
              "output": {"type": "computer_screenshot", "image_url": _png()}}
    refused = await app.http.post("/v1/responses", json={"model": "blind", "previous_response_id": first.id,
                                                         "input": [output], "tools": [TOOLS["computer"]]})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "unsupported_value"


async def test_local_shell_round_trip(sdk: AsyncOpenAI, fake: AgentUpstream) -> None:
    ask = _ask("local_shell", {"command": ["echo", "hi"], "working_directory": "/tmp", "timeout_ms": 5000})
    first = await sdk.responses.create(model="agent", input=ask, tools=[TOOLS["local_shell"]])  # type: ignore[list-item]
    call = first.output[-1]
    assert call.type == "local_shell_call"
    assert call.action.command == ["echo", "hi"] and call.action.working_directory == "/tmp"
    # The Agents SDK names the call with `call_id`; the SDK's input type with `id`: both work.
    for key in ("call_id", "id"):
        out = {"type": "local_shell_call_output", key: call.call_id, "output": "hi\n"}
        second = await sdk.responses.create(model="agent", previous_response_id=first.id, input=[out],  # type: ignore[list-item]
                                            tools=[TOOLS["local_shell"]])  # type: ignore[list-item]
        assert second.output_text == "done: hi\n"


async def test_shell_streams_its_commands(app: InProcess, sdk: AsyncOpenAI) -> None:
    body = {"model": "agent", "input": _ask("shell", {"commands": ["ls", "pwd"], "timeout_ms": 1000}),
            "tools": [TOOLS["shell"]]}
    events = await _stream(app, body)
    types = [e["type"] for e in events]
    assert types.count("response.shell_call_command.added") == 2
    done = [e["command"] for e in events if e["type"] == "response.shell_call_command.done"]
    assert done == ["ls", "pwd"]
    # Padded like the other deltas (api-surface.md §6.5): obfuscation is on by default.
    deltas = [e for e in events if e["type"] == "response.shell_call_command.delta"]
    assert [e["delta"] for e in deltas] == ["ls", "pwd"]
    assert all((len(e["delta"]) + len(e["obfuscation"])) % 16 == 0 for e in deltas)
    unpadded = await _stream(app, {**body, "stream_options": {"include_obfuscation": False}})
    assert not [e for e in unpadded if "obfuscation" in e]
    final = Response.model_validate(events[-1]["response"])
    call = final.output[-1]
    assert call.type == "shell_call" and call.action.commands == ["ls", "pwd"]
    out = {"type": "shell_call_output", "call_id": call.call_id, "output": [
        {"stdout": "a\n", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}},
        {"stdout": "", "stderr": "", "outcome": {"type": "timeout"}}]}
    second = await sdk.responses.create(model="agent", previous_response_id=final.id, input=[out],  # type: ignore[list-item]
                                        tools=[TOOLS["shell"]])  # type: ignore[list-item]
    assert "exit code 0" in second.output_text and "timed out" in second.output_text


async def test_apply_patch_round_trip(sdk: AsyncOpenAI) -> None:
    diff = "@@\n+hello\n"
    first = await sdk.responses.create(
        model="agent", input=_ask("apply_patch", {"type": "create_file", "path": "a.txt", "diff": diff}),
        tools=[TOOLS["apply_patch"]], tool_choice={"type": "apply_patch"})  # type: ignore[list-item,arg-type]
    call = first.output[-1]
    assert call.type == "apply_patch_call" and call.operation.type == "create_file"
    assert call.operation.diff == diff  # type: ignore[union-attr]
    out = {"type": "apply_patch_call_output", "call_id": call.call_id, "status": "failed", "output": "no space"}
    second = await sdk.responses.create(model="agent", previous_response_id=first.id, input=[out],  # type: ignore[list-item]
                                        tools=[TOOLS["apply_patch"]])  # type: ignore[list-item]
    assert second.output_text == "done: The patch failed.\nno space"


async def test_unusable_arguments_fail_the_response(app: InProcess) -> None:
    body = {"model": "agent", "input": _ask("apply_patch", {"type": "explode"}), "tools": [TOOLS["apply_patch"]]}
    response = await app.http.post("/v1/responses", json=body)
    assert response.status_code == 502 and response.json()["error"]["code"] == "model_output_invalid"
    events = await _stream(app, body)
    assert events[-1]["type"] == "response.failed"


@pytest.mark.parametrize(("tools", "param"), [
    ([{"type": "computer_use_preview"}], "tools[0].display_width"),
    ([{"type": "shell", "environment": {"type": "cloud"}}], "tools[0].environment.type"),
    ([{"type": "shell"}, {"type": "shell"}], "tools"),
])
async def test_bad_declarations(app: InProcess, tools: list[dict[str, Any]], param: str) -> None:
    response = await app.http.post("/v1/responses", json={"model": "agent", "input": "x", "tools": tools})
    assert response.status_code == 400 and response.json()["error"]["param"] == param


@pytest.mark.parametrize(("item", "param"), [
    ({"type": "computer_call_output", "call_id": "c", "output": {"type": "nope"}}, "input[0].output.type"),
    ({"type": "shell_call_output", "call_id": "c", "output": [{"stdout": 1}]}, "input[0].output[0].stdout"),
    ({"type": "apply_patch_call_output", "call_id": "c", "status": "maybe"}, "input[0].status"),
    ({"type": "local_shell_call_output", "output": "x"}, "input[0]"),
    ({"type": "computer_call_output", "call_id": "nope",
      "output": {"type": "computer_screenshot", "image_url": "data:image/png;base64,AA=="}}, "input[0].call_id"),
])
async def test_bad_items(app: InProcess, item: dict[str, Any], param: str) -> None:
    response = await app.http.post("/v1/responses", json={"model": "agent", "input": [item]})
    assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text


async def test_agents_sdk_local_shell(app: InProcess, tmp_path: Path) -> None:
    from agents import Agent, LocalShellTool, Runner, set_tracing_disabled
    from agents.models.openai_responses import OpenAIResponsesModel

    set_tracing_disabled(True)
    ran: list[list[str]] = []

    def executor(request: Any) -> str:
        ran.append(list(request.data.action.command))
        return "agents-ok"

    model = OpenAIResponsesModel(model="agent", openai_client=app.sdk())
    agent = Agent(name="a", model=model, tools=[LocalShellTool(executor=executor)])
    result = await Runner.run(agent, _ask("local_shell", {"command": ["true"]}))
    assert ran == [["true"]] and result.final_output == "done: agents-ok"



async def test_a_screenshot_sent_as_a_file(sdk: AsyncOpenAI, fake: AgentUpstream) -> None:
    first = await sdk.responses.create(model="agent", input=_ask("computer", {"actions": [{"type": "wait"}]}),
                                       tools=[TOOLS["computer"]])  # type: ignore[list-item]
    png = base64.b64decode(_png().split(",", 1)[1])
    uploaded = await sdk.files.create(file=("screen.png", png), purpose="vision")
    output = {"type": "computer_call_output", "call_id": first.output[-1].call_id,  # type: ignore[union-attr]
              "output": {"type": "computer_screenshot", "file_id": uploaded.id}}
    second = await sdk.responses.create(model="agent", previous_response_id=first.id, input=[output],  # type: ignore[list-item]
                                        tools=[TOOLS["computer"]])  # type: ignore[list-item]
    assert second.output_text.endswith("(with an image)")
    url = fake.requests[-1]["messages"][-1]["content"][0]["image_url"]["url"]
    assert base64.b64decode(url.split(",", 1)[1]) == png
