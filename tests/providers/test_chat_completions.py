"""The Chat Completions provider: request translation (unit) and stream parsing against a real HTTP fake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from parley.config import ProfileOverrides
from parley.errors import InvalidRequest, ParleyError
from parley.providers.base import Finish, ModelCall, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from parley.providers.chat_completions import ChatCompletionsProvider
from parley.providers.chat_request import chat_body
from parley.providers.http1 import Http1Pool
from parley.providers.profiles import PROFILES, resolve_profile
from parley.testing.fake_upstream import FakeUpstream


def _msg(role: str, text: str) -> dict[str, Any]:
    kind = "output_text" if role == "assistant" else "input_text"
    return {"id": "m", "type": "message", "role": role, "content": [{"type": kind, "text": text}]}


def test_tool_call_only_assistant_message_content_follows_the_profile() -> None:
    items = [_msg("user", "weather?"),
             {"id": "fc1", "type": "function_call", "call_id": "c1", "name": "get", "arguments": "{}"},
             {"id": "o1", "type": "function_call_output", "call_id": "c1", "output": "sunny"}]
    call = ModelCall("up", items)
    openai_form = chat_body(call, PROFILES["generic"])["messages"][1]
    assert openai_form["content"] is None and openai_form["tool_calls"][0]["id"] == "c1"
    # llama-cpp-python's server types the content as a string: `null` there is an error.
    llamacpp = chat_body(call, PROFILES["llamacpp"])["messages"][1]
    assert llamacpp["content"] == "" and llamacpp["tool_calls"] == openai_form["tool_calls"]


def test_history_translation() -> None:
    items = [
        _msg("developer", "be brief"),
        _msg("user", "weather?"),
        _msg("assistant", "checking"),
        {"id": "fc1", "type": "function_call", "call_id": "c1", "name": "get", "arguments": "{}"},
        {"id": "fc2", "type": "function_call", "call_id": "c2", "name": "get", "arguments": "{}"},
        {"id": "o1", "type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"id": "o2", "type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "x"}]},
        {"id": "rs", "type": "reasoning", "summary": []},
    ]
    body = chat_body(ModelCall("up", items, instructions="sys"), PROFILES["generic"])
    assert body["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "checking", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "get", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "x"},
    ]
    assert body["stream_options"] == {"include_usage": True}


def test_profile_flags_shape_the_body() -> None:
    call = ModelCall("up", [_msg("developer", "d")], max_output_tokens=64, user="u1", service_tier="flex",
                     reasoning_effort="low", stream=True)
    openai_body = chat_body(call, PROFILES["openai"])
    assert openai_body["messages"][0]["role"] == "developer"
    assert openai_body["max_completion_tokens"] == 64 and "max_tokens" not in openai_body
    assert openai_body["service_tier"] == "flex" and openai_body["reasoning_effort"] == "low"
    assert openai_body["messages"][0]["content"] == [{"type": "text", "text": "d"}]
    llama = chat_body(call, PROFILES["llamacpp"])
    assert llama["max_tokens"] == 64 and "stream_options" not in llama
    assert "service_tier" not in llama and "reasoning_effort" not in llama
    custom = resolve_profile("generic", ProfileOverrides(developer_role="developer", user_field=False))
    body = chat_body(call, custom)
    assert body["messages"][0]["role"] == "developer" and "user" not in body


def test_untranslatable_item_is_rejected_with_param() -> None:
    items = [_msg("user", "a"), {"id": "x", "type": "computer_call", "call_id": "c"}]
    with pytest.raises(InvalidRequest) as info:
        chat_body(ModelCall("up", items), PROFILES["generic"])
    assert info.value.param == "input[1].type"


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeUpstream]:
    server = FakeUpstream()
    await server.start()
    yield server
    await server.stop()


async def _events(fake: FakeUpstream, model: str, *, stream: bool, **extra: Any) -> list[Any]:
    http = Http1Pool()
    try:
        provider = ChatCompletionsProvider(
            model_id="m", base_url=fake.base_url, api_key="sk-secret-upstream", profile=PROFILES["generic"],
            http=http, connect_timeout_s=2, read_timeout_s=2,
        )
        opened = await provider.open(ModelCall(model, [_msg("user", "hello world")], stream=stream, **extra))
        try:
            return [e async for batch in opened for e in batch]
        finally:
            await opened.aclose()
    finally:
        await http.close()


@pytest.mark.parametrize("stream", [True, False])
async def test_text_and_usage(fake: FakeUpstream, stream: bool) -> None:
    events = await _events(fake, "echo", stream=stream)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "echo: hello world"
    assert isinstance(events[-1], Finish) and events[-1].reason == "stop"
    usage = [e for e in events if isinstance(e, Usage)]
    assert usage and usage[0].output_tokens == 3


@pytest.mark.parametrize("stream", [True, False])
async def test_reasoning_and_tool_calls(fake: FakeUpstream, stream: bool) -> None:
    events = await _events(fake, "reasoning", stream=stream)
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "Let me think about it."
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
    events = await _events(fake, "tools", stream=stream, tools=[tool])
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert calls[0].call_id == "call_fake0" and calls[0].name == "get_weather"
    assert "".join(c.arguments for c in calls) == '{"location": "Paris"}'
    assert events[-1] == Finish("tool_calls")
    assert fake.requests[-1]["tools"][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize(("model", "status", "code"), [
    ("error-429", 429, "rate_limit_exceeded"), ("error-401", 502, "upstream_auth_failed"),
    ("error-500", 502, "upstream_error"), ("error-400", 400, "invalid_request"), ("error-504", 504, None),
])
async def test_upstream_status_mapping(fake: FakeUpstream, model: str, status: int, code: str | None) -> None:
    with pytest.raises(ParleyError) as info:
        await _events(fake, model, stream=True)
    assert info.value.status == status
    if code:
        assert info.value.code == code
    assert "sk-secret-upstream" not in info.value.message
    if status == 429:
        assert info.value.headers == {"retry-after": "7"}


async def test_dropped_stream_raises_bad_gateway(fake: FakeUpstream) -> None:
    with pytest.raises(ParleyError) as info:
        await _events(fake, "drop", stream=True)
    assert info.value.status == 502


async def test_missing_usage_chunk_is_estimated(fake: FakeUpstream) -> None:
    events = await _events(fake, "nousage", stream=True)
    usage = next(e for e in events if isinstance(e, Usage))
    assert usage.output_tokens == 3 and usage.input_tokens >= 1


def test_llamacpp_grammar_forms() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "name": "x", "schema": schema, "strict": True}
    tool = {"name": "only", "description": None, "parameters": schema, "strict": None}
    call = ModelCall("up", [_msg("user", "a")], text_format=fmt, tools=[tool], tool_choice="required")
    llama = chat_body(call, PROFILES["llamacpp"])
    assert llama["response_format"] == {"type": "json_object", "schema": schema}
    assert llama["tool_choice"] == {"type": "function", "function": {"name": "only"}}  # forcible by grammar
    generic = chat_body(call, PROFILES["generic"])
    assert generic["response_format"]["json_schema"]["schema"] == schema and generic["tool_choice"] == "required"
    two = ModelCall("up", [_msg("user", "a")], tools=[tool, {**tool, "name": "other"}], tool_choice="required")
    assert chat_body(two, PROFILES["llamacpp"])["tool_choice"] == "auto"  # checked after the turn instead
    assert chat_body(two, PROFILES["ollama"])["tool_choice"] == "auto"
