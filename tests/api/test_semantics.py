"""Request semantics through the official SDK (in-process app, real upstream HTTP): tools, tool_choice,
structured output, logprobs, include."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI
from openai.types.responses import ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

from parley.config import EmbeddedConfig, ModelConfig, ProfileOverrides, Settings
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import in_process

EVENTS = TypeAdapter(ResponseStreamEvent)
WEATHER = {
    "type": "function", "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}
TIME = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}


class Env:
    def __init__(self, client: AsyncOpenAI, fake: FakeUpstream) -> None:
        self.client = client
        self.fake = fake

    @property
    def sent(self) -> dict[str, Any]:
        return self.fake.requests[-1]


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    fake = FakeUpstream()
    await fake.start()
    no_choice = ProfileOverrides(tool_choice_required=False, tool_choice_named=False)
    models = [
        ModelConfig(id=name, base_url=fake.base_url, upstream_model=upstream, quirks=quirks)
        for name, upstream, quirks in [
            ("echo", "echo", ProfileOverrides()), ("tools", "tools", ProfileOverrides()),
            ("tools-nochoice", "tools", no_choice), ("echo-nochoice", "echo", no_choice),
            ("json-valid", "json-valid", ProfileOverrides()), ("json-invalid", "json-invalid", ProfileOverrides()),
            ("passback", "reasoning", ProfileOverrides(reasoning_passback=True)),
        ]
    ]
    data_dir: Path = tmp_path_factory.mktemp("semantics")
    async with in_process(Settings(data_dir=data_dir, models=models, embedded=EmbeddedConfig(enabled=False))) as p:
        yield Env(p.sdk(), fake)
    await fake.stop()


async def test_function_call_round_trip(env: Env) -> None:
    first = await env.client.responses.create(model="tools", input="Weather in Paris?", tools=[WEATHER])
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.arguments == '{"location": "Paris"}' and call.status == "completed"
    assert first.tools[0].name == "get_weather"  # type: ignore[union-attr]
    second = await env.client.responses.create(
        model="echo", previous_response_id=first.id, tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "22C and sunny"}],
    )
    assert second.status == "completed"
    messages = env.sent["messages"]
    assert messages[-2]["tool_calls"][0]["id"] == call.call_id
    assert messages[-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "22C and sunny"}


async def test_parallel_calls_and_parallel_false(env: Env) -> None:
    both = await env.client.responses.create(model="tools", input="Do it twice", tools=[WEATHER])
    assert [o.type for o in both.output] == ["function_call", "function_call"]
    one = await env.client.responses.create(model="tools", input="Do it twice", tools=[WEATHER],
                                            parallel_tool_calls=False)
    assert [o.type for o in one.output] == ["function_call"]
    assert env.sent["parallel_tool_calls"] is False and one.parallel_tool_calls is False


async def test_streamed_function_call_events(env: Env) -> None:
    stream = await env.client.responses.create(model="tools", input="x", tools=[WEATHER], stream=True)
    events = [e async for e in stream]
    for event in events:
        EVENTS.validate_python(event.model_dump())
    kinds = [e.type for e in events]
    assert kinds.count("response.function_call_arguments.delta") == 2
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == '{"location": "Paris"}' and done.name == "get_weather"  # type: ignore[union-attr]


@pytest.mark.parametrize(("choice", "upstream"), [
    ("none", None), ("auto", "auto"), ("required", "required"),
    ({"type": "function", "name": "get_time"}, {"type": "function", "function": {"name": "get_time"}}),
    ({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_time"}]}, "required"),
])
async def test_tool_choice_forwarding(env: Env, choice: Any, upstream: Any) -> None:
    resp = await env.client.responses.create(model="tools", input="x", tools=[WEATHER, TIME], tool_choice=choice)
    assert env.sent.get("tool_choice") == upstream
    offered = [t["function"]["name"] for t in env.sent.get("tools", [])]
    if choice == "none":
        assert offered == [] and resp.output[0].type == "message"
    elif isinstance(choice, dict):
        assert resp.output[0].name == "get_time"  # type: ignore[union-attr]
        assert offered == (["get_time"] if choice["type"] == "allowed_tools" else ["get_weather", "get_time"])
    assert resp.tool_choice == choice or resp.tool_choice.type == choice["type"]  # type: ignore[union-attr]


async def test_tool_choice_enforced_without_native_support(env: Env) -> None:
    # The upstream cannot force a call (profile flag), so Parley sends "auto" and checks the result.
    ok = await env.client.responses.create(
        model="tools-nochoice", input="x", tools=[WEATHER], tool_choice={"type": "function", "name": "get_weather"})
    assert env.sent["tool_choice"] == "auto" and ok.output[0].type == "function_call"
    with pytest.raises(openai.APIStatusError) as info:
        await env.client.responses.create(model="echo-nochoice", input="x", tools=[WEATHER], tool_choice="required")
    assert info.value.status_code == 502 and info.value.code == "model_output_invalid"
    stream = await env.client.responses.create(
        model="echo-nochoice", input="x", tools=[WEATHER], tool_choice="required", stream=True)
    last = [e async for e in stream][-1]
    assert last.type == "response.failed" and "tool_choice" in last.response.error.message  # type: ignore[union-attr]


async def test_custom_and_namespace_tools(env: Env) -> None:
    custom = {"type": "custom", "name": "run_python", "description": "Runs code",
              "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}}
    resp = await env.client.responses.create(model="tools", input="x", tools=[custom])
    call = resp.output[0]
    assert call.type == "custom_tool_call" and call.input == "print(42)" and call.name == "run_python"
    offered = env.sent["tools"][0]["function"]
    assert offered["parameters"]["required"] == ["input"] and "lark grammar" in offered["description"]
    await env.client.responses.create(
        model="echo", previous_response_id=resp.id, tools=[custom],
        input=[{"type": "custom_tool_call_output", "call_id": call.call_id, "output": "42"}])
    assert env.sent["messages"][-2]["tool_calls"][0]["function"]["arguments"] == '{"input":"print(42)"}'
    assert env.sent["messages"][-1]["content"] == "42"

    stream = await env.client.responses.create(model="tools", input="x", tools=[custom], stream=True)
    events = [e async for e in stream]
    for event in events:
        EVENTS.validate_python(event.model_dump())
    assert any(e.type == "response.custom_tool_call_input.done" for e in events)

    namespace = {"type": "namespace", "name": "weather", "description": "Weather tools", "tools": [WEATHER]}
    resp = await env.client.responses.create(model="tools", input="x", tools=[namespace])  # type: ignore[list-item]
    assert env.sent["tools"][0]["function"]["name"] == "weather__get_weather"
    raw = resp.output[0].model_dump()
    assert raw["name"] == "get_weather" and raw["namespace"] == "weather"


class Person(BaseModel):
    name: str
    age: int


async def test_structured_output_parse_and_guard(env: Env) -> None:
    parsed = await env.client.responses.parse(model="json-valid", input="Who?", text_format=Person)
    assert parsed.output_parsed == Person(name="Ada", age=36)
    fmt = env.sent["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Person" and fmt["json_schema"]["strict"]
    with pytest.raises(openai.APIStatusError) as info:
        await env.client.responses.parse(model="json-invalid", input="Who?", text_format=Person)
    assert info.value.status_code == 502 and "JSON schema" in info.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        await env.client.responses.create(model="json-valid", input="x", text={"format": {
            "type": "json_schema", "name": "x", "schema": {"type": "nonsense"}}})
    assert bad.value.param == "text.format.schema"


async def test_logprobs(env: Env) -> None:
    resp = await env.client.responses.create(
        model="echo", input="a b", include=["message.output_text.logprobs"], top_logprobs=2)
    assert env.sent["logprobs"] is True and env.sent["top_logprobs"] == 2
    logprobs = resp.output[0].content[0].logprobs  # type: ignore[union-attr]
    assert logprobs is not None and [lp.token for lp in logprobs] == ["echo:", " a", " b"]
    assert len(logprobs[0].top_logprobs) == 2
    stream = await env.client.responses.create(
        model="echo", input="a b", include=["message.output_text.logprobs"], top_logprobs=1, stream=True)
    deltas = [e for e in [e async for e in stream] if e.type == "response.output_text.delta"]
    assert all(len(d.logprobs) == 1 for d in deltas)


async def test_tool_include_without_tool_is_rejected(env: Env) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await env.client.responses.create(model="echo", input="x", include=["file_search_call.results"])
    assert info.value.param == "include[0]"


async def test_max_tool_calls_and_reasoning_echo(env: Env) -> None:
    resp = await env.client.responses.create(model="echo", input="x", max_tool_calls=3,
                                             reasoning={"effort": "low"}, text={"verbosity": "low"})
    assert resp.max_tool_calls == 3 and resp.reasoning.effort == "low"  # type: ignore[union-attr]
    assert resp.text.verbosity == "low"  # type: ignore[union-attr]


async def test_encrypted_reasoning_round_trip_without_store(env: Env) -> None:
    include: Any = ["reasoning.encrypted_content"]
    first = await env.client.responses.create(model="passback", input="think", store=False, include=include)
    reasoning = first.output[0]
    assert reasoning.type == "reasoning" and reasoning.encrypted_content
    assert first.usage is not None and first.usage.output_tokens_details.reasoning_tokens == 5
    history: list[Any] = [{"role": "user", "content": "think"}, reasoning.model_dump(exclude_none=True),
                          first.output[1].model_dump(exclude_none=True), {"role": "user", "content": "again"}]
    history[1].pop("content", None)  # a stateless client only has the sealed copy
    await env.client.responses.create(model="passback", input=history, store=False)
    assistant = env.sent["messages"][1]
    assert assistant["role"] == "assistant" and assistant["reasoning_content"] == "Let me think about it."
    history[1]["encrypted_content"] = reasoning.encrypted_content[:-4] + "AAAA"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as info:
        await env.client.responses.create(model="passback", input=history, store=False)
    assert info.value.param == "input[1].encrypted_content"


async def test_streamed_reasoning_events(env: Env) -> None:
    stream = await env.client.responses.create(model="passback", input="x", stream=True,
                                               include=["reasoning.encrypted_content"])
    events = [e async for e in stream]
    for event in events:
        EVENTS.validate_python(event.model_dump())
    done = next(e for e in events if e.type == "response.output_item.done")
    assert done.item.type == "reasoning" and done.item.encrypted_content  # type: ignore[union-attr]
    assert any(e.type == "response.reasoning_text.delta" for e in events)
