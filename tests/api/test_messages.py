"""The Anthropic Messages API door through the official `anthropic` SDK (in-process app, the fake Chat Completions
upstream over real HTTP): every Message and stream event strictly validated against the SDK's types, and what
the upstream was sent checked — text, system prompts and turns, merging, tools and tool_choice, thinking with
signed blocks, stop sequences, max_tokens, images and documents, count_tokens, models, keys and usage."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from sqlalchemy import select

from parley.config import EmbeddedConfig, ModelConfig, ProfileOverrides, Settings
from parley.store import tables
from parley.store.sql import SqlStore
from parley.testing.anthropic_wire import (
    anthropic_client,
    check_count,
    check_message,
    check_model,
    check_stream,
    sse_events,
)
from parley.testing.documents import make_pdf
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import in_process

WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}
TIME = {"name": "get_time", "description": "The time", "input_schema": {"type": "object", "properties": {}}}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()


@dataclass
class Env:
    http: httpx.AsyncClient
    client: anthropic.AsyncAnthropic
    fake: FakeUpstream
    store: SqlStore
    key: str

    @property
    def sent(self) -> dict[str, Any]:
        return self.fake.requests[-1]

    def headers(self, **extra: str) -> dict[str, str]:
        return {"x-api-key": self.key, "anthropic-version": "2023-06-01", **extra}

    async def create(self, **body: Any) -> dict[str, Any]:
        """A non-streamed create, strictly checked; its raw body."""
        resp = await self.http.post("/v1/messages", json=body, headers=self.headers())
        assert resp.status_code == 200, resp.text
        assert resp.headers["request-id"].startswith("req_") and resp.headers["x-request-id"]
        raw: dict[str, Any] = resp.json()
        check_message(raw)
        return raw

    async def stream(self, **body: Any) -> list[dict[str, Any]]:
        """A streamed create (as Claude Code sends it, `?beta=true`), every event strictly checked."""
        resp = await self.http.post("/v1/messages?beta=true", json={**body, "stream": True}, headers=self.headers())
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].startswith("text/event-stream") and resp.headers["request-id"]
        events = sse_events(resp.content)
        check_stream(events)
        return events


def fold(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The message the SDK's own stream accumulator builds from the events."""
    snapshot = None
    bufs: dict[int, bytes] = {}
    for event in events:
        if event["type"] != "ping":
            snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=bufs)  # type: ignore[arg-type]
    assert snapshot is not None
    folded: dict[str, Any] = snapshot.model_dump(mode="json", exclude_none=True)
    return folded


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    fake = FakeUpstream()
    await fake.start()
    models = [ModelConfig(id=name, base_url=fake.base_url, upstream_model=upstream, context_window=400_000,
                          quirks=quirks)
              for name, upstream, quirks in [
                  ("echo", "echo", ProfileOverrides()), ("tools", "tools", ProfileOverrides()),
                  ("reasoning", "reasoning", ProfileOverrides()), ("length", "length", ProfileOverrides()),
                  ("slow", "slow", ProfileOverrides()),
                  ("json", "json-valid", ProfileOverrides(reasoning_effort=True)),
                  ("passback", "reasoning", ProfileOverrides(reasoning_passback=True, reasoning_effort=True)),
                  ("vision", "echo", ProfileOverrides(vision=True))]]
    settings = Settings(data_dir=tmp_path_factory.mktemp("messages"), models=models, auth="keys",
                        embedded=EmbeddedConfig(enabled=False))
    async with in_process(settings) as parley:
        store: SqlStore = parley.app.state.runtime.store
        _, key = await store.create_key("team", "team")
        yield Env(parley.http, anthropic_client(parley.app, key), fake, store, key)
    await fake.stop()


# -- text ------------------------------------------------------------------------------------------------------


async def test_create_answers_a_message(env: Env) -> None:
    raw = await env.create(model="echo", max_tokens=100, messages=[{"role": "user", "content": "hello there"}])
    assert raw["content"] == [{"type": "text", "text": "echo: hello there"}]
    assert (raw["role"], raw["model"], raw["stop_reason"], raw["stop_sequence"]) == (
        "assistant", "echo", "end_turn", None)
    assert raw["usage"]["input_tokens"] > 0 and raw["usage"]["output_tokens"] == 3
    assert env.sent["max_tokens"] == 100 and env.sent["messages"] == [{"role": "user", "content": "hello there"}]
    message = await env.client.messages.create(model="echo", max_tokens=100,
                                               messages=[{"role": "user", "content": "via the SDK"}])
    assert message.content[0].type == "text" and message.content[0].text == "echo: via the SDK"


async def test_stream_has_anthropics_event_sequence_and_folds_to_the_message(env: Env) -> None:
    body = {"model": "echo", "max_tokens": 100, "messages": [{"role": "user", "content": "one two three"}]}
    events = await env.stream(**body)
    assert [e["type"] for e in events] == [
        "message_start", "ping", "content_block_start", *["content_block_delta"] * 4, "content_block_stop",
        "message_delta", "message_stop"]
    assert events[0]["message"]["stop_reason"] is None and events[0]["message"]["content"] == []
    assert events[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    created = await env.create(**body)
    folded = fold(events)
    assert folded["content"] == created["content"] and folded["usage"] == created["usage"]
    assert folded["stop_reason"] == created["stop_reason"]
    async with env.client.messages.stream(**body) as stream:  # type: ignore[arg-type]
        text = "".join([chunk async for chunk in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "echo: one two three" and final.stop_reason == "end_turn"


async def test_pings_keep_a_quiet_stream_alive(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("parley.api.messages.PING_INTERVAL_S", 0.05)  # the slow model waits 0.2 s per chunk
    events = await env.stream(model="slow", max_tokens=100, messages=[{"role": "user", "content": "a b"}])
    kinds = [e["type"] for e in events]
    assert kinds.count("ping") > 3 and kinds[-1] == "message_stop"
    assert fold(events)["content"] == [{"type": "text", "text": "echo: a b"}]


async def test_nothing_is_stored_but_usage_is_recorded(env: Env) -> None:
    raw = await env.create(model="echo", max_tokens=50, messages=[{"role": "user", "content": "not kept"}])
    response_id = "resp_" + raw["id"].removeprefix("msg_")
    assert (await env.http.get(f"/v1/responses/{response_id}",
                               headers={"authorization": f"Bearer {env.key}"})).status_code == 404
    for _ in range(6000):  # a store:false usage record is committed by the writer without anyone waiting for it
        async with env.store.engine.connect() as conn:
            row = (await conn.execute(select(tables.usage_records).where(
                tables.usage_records.c.response_id == response_id))).first()
        if row is not None:
            break
        await asyncio.sleep(0.01)
    assert row is not None and row.project_id == "team" and row.output_tokens == raw["usage"]["output_tokens"]


async def test_keys_by_x_api_key_or_bearer(env: Env) -> None:
    body = {"model": "echo", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    bearer = await env.http.post("/v1/messages", json=body, headers={"authorization": f"Bearer {env.key}"})
    assert bearer.status_code == 200
    beta = {"anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14"}
    assert (await env.http.post("/v1/messages", json=body, headers=env.headers(**beta))).status_code == 200
    wrong = await env.http.post("/v1/messages", json=body, headers={"x-api-key": "sk-wrong"})
    assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
    missing = await env.http.post("/v1/messages", json=body)
    assert missing.status_code == 401 and "x-api-key" in missing.json()["error"]["message"]


# -- system, merging, multimodal ---------------------------------------------------------------------------


async def test_system_blocks_and_system_turns_and_merged_messages(env: Env) -> None:
    await env.create(model="echo", max_tokens=50, system=[
        {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Be kind."}], messages=[
        {"role": "user", "content": [{"type": "text", "text": "first", "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": "second"},
        {"role": "system", "content": [{"type": "text", "text": "Mind the time."}]},
    ])
    messages = env.sent["messages"]
    assert messages[0] == {"role": "system", "content": "Be brief.\nBe kind."}
    assert messages[1]["role"] == "user" and len(messages) == 3  # the two user turns are one message
    assert messages[1]["content"] == "first\nsecond"  # the generic profile sends text parts as one string
    assert messages[2] == {"role": "system", "content": "Mind the time."}
    await env.create(model="echo", max_tokens=50, system="Just a string.", messages=[
        {"role": "user", "content": "hi"}])
    assert env.sent["messages"][0] == {"role": "system", "content": "Just a string."}


async def test_images_and_documents(env: Env) -> None:
    pdf = base64.b64encode(make_pdf([["The launch code is 4242."]])).decode()
    await env.create(model="vision", max_tokens=50, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "document", "title": "plan.pdf", "context": "From the archive.",
         "source": {"type": "base64", "media_type": "application/pdf", "data": pdf}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Plain notes."}},
        {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "Inline doc."}]}},
        {"type": "text", "text": "Summarise."}]}])
    parts = env.sent["messages"][0]["content"]
    assert parts[0] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "auto"}}
    assert parts[1]["image_url"]["url"] == "https://example.com/cat.png"
    texts = [p.get("text", "") for p in parts]
    assert any("plan.pdf" in t and "The launch code is 4242." in t for t in texts), texts  # PDF text extracted
    assert "From the archive." in texts and any("Plain notes." in t for t in texts)
    assert "Inline doc." in texts and texts[-1] == "Summarise."


# -- tools -----------------------------------------------------------------------------------------------------


async def test_tool_use_and_tool_result_round_trip(env: Env) -> None:
    first = await env.create(model="tools", max_tokens=200, tools=[WEATHER],
                             messages=[{"role": "user", "content": "Weather in Paris?"}])
    assert first["stop_reason"] == "tool_use"
    use = first["content"][0]
    assert use == {"type": "tool_use", "id": use["id"], "name": "get_weather", "input": {"location": "Paris"}}
    sent_tool = env.sent["tools"][0]["function"]
    assert sent_tool["name"] == "get_weather" and sent_tool["parameters"] == WEATHER["input_schema"]
    await env.create(model="echo", max_tokens=200, tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": first["content"]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": use["id"], "content": "no network", "is_error": True},
            {"type": "text", "text": "Try again later."}]},
    ])
    messages = env.sent["messages"]
    assert messages[1]["tool_calls"][0]["id"] == use["id"]
    assert json.loads(messages[1]["tool_calls"][0]["function"]["arguments"]) == {"location": "Paris"}
    assert messages[2] == {"role": "tool", "tool_call_id": use["id"], "content": "Error: no network"}
    assert messages[3]["role"] == "user"


async def test_streamed_tool_use_is_one_block_per_call(env: Env) -> None:
    events = await env.stream(model="tools", max_tokens=200, tools=[WEATHER],
                              messages=[{"role": "user", "content": "Weather twice"}])
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [s["content_block"]["type"] for s in starts] == ["tool_use", "tool_use"]
    assert starts[0]["content_block"]["input"] == {}
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    assert all(d["type"] == "input_json_delta" for d in deltas)
    folded = fold(events)
    assert [b["input"] for b in folded["content"]] == [{"location": "Paris"}] * 2
    assert folded["stop_reason"] == "tool_use"


@pytest.mark.parametrize(("choice", "sent"), [
    ({"type": "auto"}, "auto"),
    ({"type": "any"}, "required"),
    ({"type": "tool", "name": "get_time"}, {"type": "function", "function": {"name": "get_time"}}),
])
async def test_tool_choice(env: Env, choice: dict[str, Any], sent: Any) -> None:
    raw = await env.create(model="tools", max_tokens=50, tools=[WEATHER, TIME], tool_choice=choice,
                           messages=[{"role": "user", "content": "hi"}])
    assert env.sent["tool_choice"] == sent and raw["stop_reason"] == "tool_use"
    none = await env.create(model="tools", max_tokens=50, tools=[WEATHER, TIME], tool_choice={"type": "none"},
                            messages=[{"role": "user", "content": "hi"}])
    assert "tools" not in env.sent and none["stop_reason"] == "end_turn"  # no tool is offered


async def test_disable_parallel_tool_use_keeps_one_call(env: Env) -> None:
    raw = await env.create(model="tools", max_tokens=200, tools=[WEATHER],
                           tool_choice={"type": "auto", "disable_parallel_tool_use": True},
                           messages=[{"role": "user", "content": "Weather twice"}])
    assert env.sent["parallel_tool_calls"] is False
    assert [b["type"] for b in raw["content"]] == ["tool_use"]


async def test_deferred_tools_are_offered_once_a_tool_reference_loads_them(env: Env) -> None:
    search = {"name": "ToolSearch", "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}}
    deferred = {**TIME, "defer_loading": True}
    await env.create(model="echo", max_tokens=50, tools=[search, deferred],
                     messages=[{"role": "user", "content": "hi"}])
    assert [t["function"]["name"] for t in env.sent["tools"]] == ["ToolSearch"]
    await env.create(model="echo", max_tokens=50, tools=[search, deferred], messages=[
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "ToolSearch",
                                           "input": {"query": "time"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": [{"type": "tool_reference", "tool_name": "get_time"}]}]},
    ])
    assert [t["function"]["name"] for t in env.sent["tools"]] == ["ToolSearch", "get_time"]
    assert env.sent["messages"][-1]["content"] == "Tool 'get_time' is now available."


# -- max_tokens, stop sequences, structured output ----------------------------------------------------------


async def test_max_tokens_is_the_stop_reason_when_cut(env: Env) -> None:
    raw = await env.create(model="length", max_tokens=1, messages=[{"role": "user", "content": "go on"}])
    assert raw["stop_reason"] == "max_tokens" and env.sent["max_tokens"] == 1  # any max_tokens from 1
    events = await env.stream(model="length", max_tokens=5, messages=[{"role": "user", "content": "go on"}])
    assert events[-2]["delta"]["stop_reason"] == "max_tokens"


@pytest.mark.parametrize("stream", [False, True])
async def test_stop_sequences_end_the_text(env: Env, stream: bool) -> None:
    body = {"model": "echo", "max_tokens": 100, "stop_sequences": ["never", "gamma delta"],
            "messages": [{"role": "user", "content": "alpha beta gamma delta epsilon"}]}
    raw = fold(await env.stream(**body)) if stream else await env.create(**body)
    assert raw["content"] == [{"type": "text", "text": "echo: alpha beta "}]
    assert (raw["stop_reason"], raw["stop_sequence"]) == ("stop_sequence", "gamma delta")
    assert raw["usage"]["output_tokens"] >= 1
    assert "stop" not in env.sent  # applied by Parley: the upstream is not told


async def test_structured_output_and_effort(env: Env) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}
    raw = await env.create(model="json", max_tokens=100, messages=[{"role": "user", "content": "Who?"}],
                           output_config={"effort": "high", "format": {"type": "json_schema", "schema": schema}})
    assert json.loads(raw["content"][0]["text"]) == {"name": "Ada", "age": 36}
    assert env.sent["response_format"]["json_schema"]["schema"] == schema
    assert env.sent["reasoning_effort"] == "high"


async def test_accepted_options(env: Env) -> None:
    """What Claude Code sends besides: metadata, context_management, top-level cache_control, betas, top_k."""
    raw = await env.create(model="echo", max_tokens=50, temperature=0.5, top_p=0.9, top_k=5,
                           metadata={"user_id": json.dumps({"device_id": "d" * 64, "session_id": "s"})},
                           context_management={"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
                           cache_control={"type": "ephemeral"}, service_tier="auto",
                           messages=[{"role": "user", "content": "hi", "output_config": {"effort": "low"}}])
    assert raw["stop_reason"] == "end_turn"
    assert env.sent["temperature"] == 0.5 and env.sent["top_p"] == 0.9 and "user" not in env.sent


# -- thinking --------------------------------------------------------------------------------------------------


async def test_thinking_blocks_are_signed_and_come_back(env: Env) -> None:
    thinking = {"type": "enabled", "budget_tokens": 1024}
    first = await env.create(model="passback", max_tokens=2000, thinking=thinking,
                             messages=[{"role": "user", "content": "Think first"}])
    block = first["content"][0]
    assert block["type"] == "thinking" and block["thinking"] == "Let me think about it."
    assert block["signature"].startswith("prl1.") and first["content"][1]["type"] == "text"
    assert env.sent["reasoning_effort"] == "low"  # a 1024-token budget
    history = [{"role": "user", "content": "Think first"},
               {"role": "assistant", "content": first["content"]},
               {"role": "user", "content": "And now?"}]
    # display "omitted" (Claude Code): the text stays in the signature, and comes back with it.
    await env.create(model="passback", max_tokens=2000, thinking={"type": "adaptive", "display": "omitted"},
                     messages=[history[0], {"role": "assistant", "content": [
                         {**block, "thinking": ""}, first["content"][1]]}, history[2]])
    assert env.sent["messages"][1]["reasoning_content"] == "Let me think about it."
    forged = {**block, "signature": block["signature"][:-8] + "AAAAAAAA"}
    refused = await env.http.post("/v1/messages", headers=env.headers(), json={
        "model": "passback", "max_tokens": 2000, "messages": [history[0], {"role": "assistant", "content": [
            forged, first["content"][1]]}, history[2]]})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"].startswith("messages[1].content[0]: ")


async def test_thinking_streams_deltas_then_the_signature(env: Env) -> None:
    events = await env.stream(model="reasoning", max_tokens=2000, thinking={"type": "adaptive"},
                              messages=[{"role": "user", "content": "hmm"}])
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta" and e["index"] == 0]
    assert [d["type"] for d in deltas] == ["thinking_delta"] * 5 + ["signature_delta"]
    omitted = await env.stream(model="reasoning", max_tokens=2000, thinking={"type": "adaptive", "display": "omitted"},
                               messages=[{"role": "user", "content": "hmm"}])
    folded = fold(omitted)
    assert folded["content"][0]["thinking"] == "" and folded["content"][0]["signature"].startswith("prl1.")
    plain = await env.create(model="reasoning", max_tokens=200, messages=[{"role": "user", "content": "hmm"}])
    assert [b["type"] for b in plain["content"]] == ["text"]  # thinking not asked for: not shown


# -- count_tokens and models ----------------------------------------------------------------------------------


async def test_count_tokens_counts_what_create_would_send(env: Env) -> None:
    body = {"model": "echo", "system": "Be brief.", "tools": [WEATHER],
            "messages": [{"role": "user", "content": "How many tokens is this?"}]}
    resp = await env.http.post("/v1/messages/count_tokens", json=body, headers=env.headers())
    assert resp.status_code == 200 and resp.headers["request-id"]
    counted = check_count(resp.json())
    same = await env.http.post("/v1/responses/input_tokens", headers={"authorization": f"Bearer {env.key}"}, json={
        "model": "echo", "instructions": "Be brief.", "input": "How many tokens is this?",
        "tools": [{"type": "function", "name": "get_weather", "description": "Weather for a city",
                   "parameters": WEATHER["input_schema"]}]})
    assert counted == same.json()["input_tokens"] > 0
    sdk = await env.client.messages.count_tokens(model="echo", messages=[{"role": "user", "content": "hi"}])
    assert sdk.input_tokens > 0


async def test_models_in_anthropics_shape_with_anthropic_version(env: Env) -> None:
    page = await env.client.models.list(limit=2)
    assert [m.id for m in page.data] == ["echo", "tools"] and page.has_more
    raw = (await env.http.get("/v1/models", headers=env.headers())).json()
    assert set(raw) == {"data", "has_more", "first_id", "last_id"}
    for model in raw["data"]:
        check_model(model)
    after = (await env.http.get("/v1/models", params={"after_id": "tools", "limit": 2}, headers=env.headers())).json()
    assert [m["id"] for m in after["data"]] == ["reasoning", "length"] and after["has_more"]
    one = await env.client.models.retrieve("echo")
    assert one.id == "echo" and one.max_input_tokens == 400_000
    missing = await env.http.get("/v1/models/nope", headers=env.headers())
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    openai = (await env.http.get("/v1/models", headers={"authorization": f"Bearer {env.key}"})).json()
    assert openai["object"] == "list" and openai["data"][0]["object"] == "model"
