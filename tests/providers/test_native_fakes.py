"""The fake upstreams speak their providers' real wire formats: every event, body and error they send is checked
against the providers' own SDK types (anthropic, google-genai, openai)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
import wire_oracles as oracle
from anthropic.types import ErrorResponse

from parley.testing.fake_anthropic import FakeAnthropic
from parley.testing.fake_gemini import FakeGemini
from parley.testing.fake_responses_upstream import FakeResponsesUpstream

TOOLS_ANTHROPIC = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}]
TOOLS_RESPONSES = [{"type": "function", "name": "get_weather", "strict": None,
                    "parameters": {"type": "object", "properties": {}}}, {"type": "web_search"}]
TOOLS_GEMINI = [{"functionDeclarations": [{"name": "get_weather", "parametersJsonSchema": {"type": "object"}}]}]


def _sse(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for line in raw.replace(b"\r\n", b"\n").split(b"\n"):
        if line.startswith(b"data:"):
            out.append(orjson.loads(line[5:]))
    return out


async def _post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(url, json=body, headers=headers or {})


@pytest.mark.parametrize("model", ["echo", "reasoning", "tools", "length", "json-valid"])
@pytest.mark.parametrize("stream", [True, False])
async def test_anthropic_fake_speaks_messages(fake_anthropic: FakeAnthropic, model: str, stream: bool) -> None:
    body = {"model": model, "max_tokens": 4096, "stream": stream, "tools": TOOLS_ANTHROPIC,
            "messages": [{"role": "user", "content": "weather twice?"}],
            "thinking": {"type": "enabled", "budget_tokens": 2048}}
    oracle.anthropic_request(body)
    resp = await _post(fake_anthropic.base_url + "/messages", body)
    assert resp.status_code == 200, resp.text
    if not stream:
        oracle.anthropic_message(resp.json())
        return
    events = _sse(resp.content)
    for event in events:
        oracle.anthropic_event(event)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    if model == "reasoning":
        assert any(e["type"] == "content_block_delta" and e["delta"]["type"] == "signature_delta" for e in events)


@pytest.mark.parametrize(("model", "status"), [("error-429", 429), ("error-529", 529), ("error-500", 500)])
async def test_anthropic_fake_errors(fake_anthropic: FakeAnthropic, model: str, status: int) -> None:
    resp = await _post(fake_anthropic.base_url + "/messages",
                       {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert resp.status_code == status
    ErrorResponse.model_validate(resp.json())
    assert (resp.headers.get("retry-after") == "7") == (status in (429, 529))


async def test_anthropic_fake_refuses_what_the_api_refuses(fake_anthropic: FakeAnthropic) -> None:
    base = {"model": "echo", "max_tokens": 4096, "messages": [{"role": "user", "content": "x"}]}
    forced = {**base, "thinking": {"type": "enabled", "budget_tokens": 2048}, "tools": TOOLS_ANTHROPIC,
              "tool_choice": {"type": "any"}}
    empty = {**base, "messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]}
    forged = {**base, "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "hm", "signature": "Zm9yZ2Vk"}]}, {"role": "user", "content": "y"}]}
    for body in (forced, empty, forged, {"model": "echo", "messages": []}):
        resp = await _post(fake_anthropic.base_url + "/messages", body)
        assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("model", ["echo", "reasoning", "tools", "length", "search"])
@pytest.mark.parametrize("stream", [True, False])
async def test_responses_fake_speaks_responses(fake_responses: FakeResponsesUpstream, model: str, stream: bool) -> None:
    body = {"model": model, "input": [{"role": "user", "content": "weather twice?"}], "stream": stream,
            "store": False, "include": ["reasoning.encrypted_content"], "tools": TOOLS_RESPONSES,
            "reasoning": {"effort": "low", "summary": "auto"}}
    oracle.responses_request(body)
    resp = await _post(fake_responses.base_url + "/responses", body)
    assert resp.status_code == 200, resp.text
    if not stream:
        oracle.responses_body(resp.json())
        return
    events = _sse(resp.content)
    for event in events:
        oracle.responses_event(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] in ("response.completed", "response.incomplete")
    oracle.responses_body(events[-1]["response"])


async def test_responses_fake_refuses_state_it_never_kept(fake_responses: FakeResponsesUpstream) -> None:
    chained = {"model": "echo", "input": "x", "store": False, "previous_response_id": "resp_1"}
    lost = {"model": "echo", "store": False, "input": [{"type": "reasoning", "id": "rs_1", "summary": []}]}
    for body in (chained, lost):
        resp = await _post(fake_responses.base_url + "/responses", body)
        assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("model", ["echo", "reasoning", "tools", "length", "json-valid"])
@pytest.mark.parametrize("stream", [True, False])
async def test_gemini_fake_speaks_generate_content(fake_gemini: FakeGemini, model: str, stream: bool) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "weather twice?"}]}], "tools": TOOLS_GEMINI,
            "generationConfig": {"thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": True}}}
    oracle.gemini_request(body)
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    resp = await _post(f"{fake_gemini.base_url}/models/{model}:{method}", body)
    assert resp.status_code == 200, resp.text
    chunks = _sse(resp.content) if stream else [resp.json()]
    for chunk in chunks:
        oracle.gemini_chunk(chunk)
    assert chunks[-1]["candidates"][0]["finishReason"] in ("STOP", "MAX_TOKENS")
    if model == "reasoning":
        parts = [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]
        assert parts[0]["thought"] is True and any("thoughtSignature" in p for p in parts)


async def test_gemini_fake_errors(fake_gemini: FakeGemini) -> None:
    body = {"contents": [{"role": "user", "parts": [{"text": "x"}]}]}
    limited = await _post(f"{fake_gemini.base_url}/models/error-429:generateContent", body)
    assert limited.status_code == 429 and limited.json()["error"]["details"][0]["retryDelay"] == "7s"
    refused = await _post(f"{fake_gemini.base_url}/models/echo:generateContent", body, {"x-goog-api-key": "bad-key"})
    assert refused.status_code == 400 and "API_KEY_INVALID" in refused.text
