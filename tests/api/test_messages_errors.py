"""Errors of the Anthropic Messages door in Anthropic's shape (`{"type": "error", "error": {"type", "message"},
"request_id"}`) with its statuses: bad input of every kind the OpenAI door refuses, keys, limits, upstream
failures before the first byte, and an `error` event when the upstream fails mid-stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import pytest

from parley.config import EmbeddedConfig, LimitsConfig, ModelConfig, RateLimits, Settings
from parley.errors import InvalidRequest, ModelUnavailable, ParleyError, PayloadTooLarge, UpstreamError
from parley.store.base import KeySpec
from parley.store.sql import SqlStore
from parley.testing.anthropic_wire import anthropic_client, check_error, check_event, sse_events
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import in_process

USER = [{"role": "user", "content": "hi"}]
USE = {"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {}}
TOOL = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}


@dataclass
class Env:
    http: httpx.AsyncClient
    client: anthropic.AsyncAnthropic
    store: SqlStore
    key: str

    async def post(self, body: Any, path: str = "/v1/messages", key: str | None = None) -> httpx.Response:
        headers = {"x-api-key": key or self.key, "anthropic-version": "2023-06-01"}
        if isinstance(body, bytes):
            return await self.http.post(path, content=body, headers={**headers, "content-type": "application/json"})
        return await self.http.post(path, json=body, headers=headers)


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    fake = FakeUpstream()
    await fake.start()
    models = [ModelConfig(id=name, base_url=fake.base_url, upstream_model=name, context_window=4096)
              for name in ("echo", "drop", "error-500", "error-429", "error-401", "error-400")]
    limits = LimitsConfig(projects={"small": RateLimits(requests_per_minute=1)})
    settings = Settings(data_dir=tmp_path_factory.mktemp("messages-errors"), models=models, auth="keys",
                        limits=limits, max_body_bytes=200_000, embedded=EmbeddedConfig(enabled=False))
    async with in_process(settings) as parley:
        store: SqlStore = parley.app.state.runtime.store
        _, key = await store.create_key("team", "team")
        yield Env(parley.http, anthropic_client(parley.app, key), store, key)
    await fake.stop()


BAD_BODIES: list[tuple[str, Any, str]] = [
    ("not JSON", b"{nope", "JSON"),
    ("no max_tokens", {"model": "echo", "messages": USER}, "max_tokens"),
    ("no messages", {"model": "echo", "max_tokens": 10, "messages": []}, "messages"),
    ("a bad role", {"model": "echo", "max_tokens": 10, "messages": [{"role": "robot", "content": "x"}]}, "role"),
    ("an unknown block", {"model": "echo", "max_tokens": 10, "messages": [
        {"role": "user", "content": [{"type": "hologram"}]}]}, "content block type"),
    ("a bad image type", {"model": "echo", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": "AA=="}}]}]}, "media_type"),
    ("empty content", {"model": "echo", "max_tokens": 10, "messages": [{"role": "user", "content": []}]},
     "non-empty content"),
    ("temperature above 1", {"model": "echo", "max_tokens": 10, "temperature": 1.5, "messages": USER}, "temperature"),
    ("max_tokens 0", {"model": "echo", "max_tokens": 0, "messages": USER}, "max_tokens"),
    ("max_tokens as a string", {"model": "echo", "max_tokens": "10", "messages": USER}, "max_tokens"),
    ("stream as a string", {"model": "echo", "max_tokens": 10, "stream": "true", "messages": USER}, "stream"),
    ("is_error as a number", {"model": "echo", "max_tokens": 10, "messages": [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok", "is_error": 1}]}]},
     "is_error"),
    ("a thinking budget under 1024", {"model": "echo", "max_tokens": 4000, "messages": USER,
                                      "thinking": {"type": "enabled", "budget_tokens": 100}}, "budget_tokens"),
    ("a thinking budget over max_tokens", {"model": "echo", "max_tokens": 2000, "messages": USER,
                                           "thinking": {"type": "enabled", "budget_tokens": 2000}}, "budget_tokens"),
    ("tool choice without a name", {"model": "echo", "max_tokens": 10, "messages": USER, "tools": [TOOL],
                                    "tool_choice": {"type": "tool"}}, "name"),
    ("tool choice of an unknown tool", {"model": "echo", "max_tokens": 10, "messages": USER, "tools": [TOOL],
                                        "tool_choice": {"type": "tool", "name": "nope"}}, "nope"),
    ("a bad tool name", {"model": "echo", "max_tokens": 10, "messages": USER,
                         "tools": [{**TOOL, "name": "has space"}]}, "tools[0].name"),
    ("an Anthropic-defined tool", {"model": "echo", "max_tokens": 10, "messages": USER,
                                   "tools": [{"type": "bash_20250124", "name": "bash"}]}, "bash_20250124"),
    ("mcp_servers", {"model": "echo", "max_tokens": 10, "messages": USER,
                     "mcp_servers": [{"type": "url", "url": "https://example.com", "name": "x"}]}, "mcp_servers"),
    ("a tool_result with no tool_use", {"model": "echo", "max_tokens": 10, "messages": [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "x"}]}]},
     "toolu_9"),
    ("a tool_use without its tool_result", {"model": "echo", "max_tokens": 10, "tools": [TOOL], "messages": [
        *USER, {"role": "assistant", "content": [USE]}, {"role": "user", "content": "and?"}]}, "toolu_1"),
    ("text before a tool_result", {"model": "echo", "max_tokens": 10, "tools": [TOOL], "messages": [
        *USER, {"role": "assistant", "content": [USE]}, {"role": "user", "content": [
            {"type": "text", "text": "first"}, {"type": "tool_result", "tool_use_id": "toolu_1"}]}]}, "first"),
    ("a tool_result in an assistant turn", {"model": "echo", "max_tokens": 10, "messages": [*USER, {
        "role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "toolu_1"}]}]}, "user messages"),
    ("an image in a system turn", {"model": "echo", "max_tokens": 10, "messages": [*USER, {
        "role": "system", "content": [{"type": "image", "source": {"type": "url", "url": "https://x.y/a.png"}}]}]},
     "text blocks"),
    ("a thinking block in a user turn", {"model": "echo", "max_tokens": 10, "messages": [
        {"role": "user", "content": [{"type": "thinking", "thinking": "x", "signature": "y"}]}]}, "assistant"),
    ("a foreign signature", {"model": "echo", "max_tokens": 10, "messages": [*USER, {"role": "assistant", "content": [
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"}]}, {"role": "user", "content": "hi"}]},
     "messages[1].content[0]"),
    ("an image in an assistant turn", {"model": "echo", "max_tokens": 10, "messages": [*USER, {
        "role": "assistant", "content": [{"type": "image", "source": {"type": "url", "url": "https://x.y/a.png"}}]}]},
     "assistant"),
    ("an unknown model", {"model": "nope", "max_tokens": 10, "messages": USER}, "nope"),
    ("too long for the context", {"model": "echo", "max_tokens": 4096, "messages": USER}, "max_output_tokens"),
    ("max_tokens of the wrong type", {"model": "echo", "max_tokens": "many", "messages": USER}, "max_tokens"),
]


@pytest.mark.parametrize(("body", "mentions"), [pytest.param(b, m, id=name) for name, b, m in BAD_BODIES])
async def test_bad_input_is_an_invalid_request_error(env: Env, body: Any, mentions: str) -> None:
    resp = await env.post(body)
    assert resp.status_code == 400, resp.text
    error = check_error(resp.json(), 400)
    assert mentions in error["message"], error
    assert resp.headers["request-id"] == resp.json()["request_id"]


async def test_bad_count_tokens_input_too(env: Env) -> None:
    resp = await env.post({"model": "echo", "messages": [{"role": "user", "content": [{"type": "x"}]}]},
                          "/v1/messages/count_tokens")
    assert resp.status_code == 400
    check_error(resp.json(), 400)


async def test_the_sdk_raises_its_typed_errors(env: Env) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:
        await env.client.messages.create(model="nope", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert bad.value.status_code == 400 and bad.value.request_id
    wrong = anthropic_client(env.http._transport.app, "sk-wrong")  # type: ignore[attr-defined]
    with pytest.raises(anthropic.AuthenticationError):
        await wrong.messages.create(model="echo", max_tokens=10, messages=[{"role": "user", "content": "x"}])


async def test_too_large_and_unknown_paths(env: Env) -> None:
    big = await env.post({"model": "echo", "max_tokens": 10, "messages": [{"role": "user", "content": "x" * 300_000}]})
    assert big.status_code == 413
    check_error(big.json(), 413)
    unknown = await env.post({}, "/v1/messages/batches")
    assert unknown.status_code == 404
    check_error(unknown.json(), 404)
    method = await env.http.get("/v1/messages")
    assert method.status_code == 405 and method.json()["type"] == "error"


async def test_rate_limits_are_rate_limit_errors(env: Env) -> None:
    _, key = await env.store.create_key("small", "small", KeySpec("small"))
    body = {"model": "echo", "max_tokens": 10, "messages": USER}
    first = await env.post(body, key=key)
    assert first.status_code == 200 and first.headers["x-ratelimit-limit-requests"] == "1"
    refused = await env.post(body, key=key)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    check_error(refused.json(), 429)


@pytest.mark.parametrize(("model", "status"), [("error-500", 500), ("error-429", 429), ("error-401", 500),
                                               ("error-400", 400)])
async def test_upstream_errors_before_the_first_byte(env: Env, model: str, status: int) -> None:
    for stream in (False, True):
        resp = await env.post({"model": model, "max_tokens": 10, "messages": USER, "stream": stream})
        assert resp.status_code == status, resp.text
        check_error(resp.json(), status)


async def test_a_mid_stream_failure_is_an_error_event(env: Env) -> None:
    resp = await env.post({"model": "drop", "max_tokens": 100, "stream": True,
                           "messages": [{"role": "user", "content": "one two three four five"}]})
    assert resp.status_code == 200
    events = sse_events(resp.content)
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "error"
    assert "message_stop" not in [e["type"] for e in events]
    for event in events[2:-1]:
        check_event(event)
    check_error({**events[-1], "request_id": "x"}, 500)
    with pytest.raises(anthropic.APIStatusError):
        async with env.client.messages.stream(model="drop", max_tokens=100, messages=USER) as stream:  # type: ignore[arg-type]
            await stream.get_final_message()


@pytest.mark.parametrize(("err", "status", "kind"), [
    (InvalidRequest("x"), 400, "invalid_request_error"),
    (PayloadTooLarge("x"), 413, "request_too_large"),
    (UpstreamError.bad_gateway("x"), 500, "api_error"),
    (UpstreamError.timeout("x"), 504, "timeout_error"),
    (ModelUnavailable("x", "5"), 529, "overloaded_error"),
    (ParleyError("x", status=409, type="invalid_request_error"), 409, "invalid_request_error"),
])
def test_the_status_mapping(err: ParleyError, status: int, kind: str) -> None:
    from parley.api.messages_errors import error_body, status_of

    assert status_of(err) == status and error_body(err, "req_1")["error"] == {"type": kind, "message": "x"}
