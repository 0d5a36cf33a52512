"""A broken upstream ends every response cleanly (in-process app, real HTTP to parley.testing.faulty_upstream):
a non-streamed request gets a 502 in the OpenAI error shape, a streamed one `response.failed` and then
`data: [DONE]`, the stored response is `failed`; what the upstream said reaches nobody unmasked."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from parley.config import EmbeddedConfig, ModelConfig, Settings
from parley.testing.faulty_upstream import FaultyUpstream
from parley.testing.in_process import in_process

EVENTS = TypeAdapter(ResponseStreamEvent)
UPSTREAM_KEY = "upstream-key-Vb73Ww2"
MODELS = ["echo", "shape-choices-string", "shape-choice-not-object", "shape-finish-list", "shape-list",
          "shape-content-number", "shape-usage-string", "shape-tool-calls-object", "reset", "huge-1mb",
          "leak-400-json", "leak-429-text", "leak-500-json", "leak-500-text", "badkey-400", "leak-midstream"]


@dataclass
class Env:
    http: httpx.AsyncClient


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    faulty = FaultyUpstream()
    await faulty.start()
    models = [ModelConfig(id=name, base_url=faulty.base_url, upstream_model=name, api_key=UPSTREAM_KEY,
                          read_timeout_s=5.0) for name in MODELS]
    data_dir: Path = tmp_path_factory.mktemp("upstream-faults")
    settings = Settings(data_dir=data_dir, models=models, embedded=EmbeddedConfig(enabled=False),
                        max_output_chars=200_000)
    async with in_process(settings) as parley:
        yield Env(parley.http)
    await faulty.stop()


async def _create(env: Env, model: str, **extra: Any) -> httpx.Response:
    return await env.http.post("/v1/responses", json={"model": model, "input": "hi", **extra})


async def _stream(env: Env, model: str) -> tuple[httpx.Response, list[dict[str, Any]]]:
    resp = await _create(env, model, stream=True)
    assert resp.status_code == 200, resp.text
    blocks = resp.content.decode().removesuffix("\n\n").split("\n\n")
    assert blocks[-1] == "data: [DONE]", blocks[-1][:300]
    events = [orjson.loads(block.split("\n", 1)[1].removeprefix("data: ")) for block in blocks[:-1]]
    for event in events:
        EVENTS.validate_python(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return resp, events


def _error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize("model", ["shape-choices-string", "shape-choice-not-object", "shape-finish-list",
                                   "shape-list", "shape-content-number", "reset"])
async def test_non_streamed_garbage_is_502(env: Env, model: str) -> None:
    error = _error(await _create(env, model), 502)
    assert error["type"] == "server_error" and error["code"] == "upstream_error"
    assert "Traceback" not in error["message"]


@pytest.mark.parametrize("model", ["shape-list", "shape-choices-string", "shape-choice-not-object",
                                   "shape-finish-list", "shape-usage-string", "shape-tool-calls-object", "reset"])
async def test_streamed_garbage_fails_the_response(env: Env, model: str) -> None:
    _, events = await _stream(env, model)
    assert events[-1]["type"] == "response.failed"
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert f"'{model}'" in failed["error"]["message"]
    stored = (await env.http.get(f"/v1/responses/{failed['id']}")).json()
    assert stored["status"] == "failed" and stored["error"] == failed["error"]


async def test_streamed_reply_over_the_output_cap_fails(env: Env) -> None:
    resp, events = await _stream(env, "huge-1mb")
    failed = events[-1]["response"]
    assert events[-1]["type"] == "response.failed" and "max_output_chars" in failed["error"]["message"]
    assert len(resp.content) < 2_000_000  # 200,000 characters of output, repeated by the closing events
    assert (await env.http.get(f"/v1/responses/{failed['id']}")).json()["status"] == "failed"
    error = _error(await _create(env, "huge-1mb"), 502)
    assert error["code"] == "upstream_reply_too_large"


def _no_secret(text: str) -> None:
    assert UPSTREAM_KEY not in text, text


@pytest.mark.parametrize(("model", "status", "code"), [
    ("leak-400-json", 400, "upstream_code_400"), ("leak-429-text", 429, "rate_limit_exceeded"),
    ("leak-500-json", 502, "upstream_error"), ("leak-500-text", 502, "upstream_error"),
    ("badkey-400", 502, "upstream_auth_failed"), ("leak-midstream", 502, "upstream_error"),
])
async def test_upstream_error_texts_are_masked(env: Env, model: str, status: int, code: str) -> None:
    resp = await _create(env, model)
    _no_secret(resp.text)
    assert _error(resp, status)["code"] == code


async def test_mid_stream_error_is_masked_in_the_event_and_the_stored_response(env: Env) -> None:
    resp, events = await _stream(env, "leak-midstream")
    _no_secret(resp.text)
    failed = events[-1]["response"]
    assert events[-1]["type"] == "response.failed" and "****" in failed["error"]["message"]
    stored = await env.http.get(f"/v1/responses/{failed['id']}")
    _no_secret(stored.text)
    assert stored.json()["status"] == "failed"


@pytest.mark.parametrize("model", ["leak-500-json", "leak-midstream", "shape-list"])
async def test_failed_background_response_stores_a_masked_error(env: Env, model: str) -> None:
    created = (await _create(env, model, background=True)).json()
    for _ in range(3000):
        stored = await env.http.get(f"/v1/responses/{created['id']}")
        if stored.json()["status"] == "failed":
            break
        await asyncio.sleep(0.02)
    _no_secret(stored.text)
    body = stored.json()
    assert body["status"] == "failed" and body["error"]["code"] == "server_error"
    replay = await env.http.get(f"/v1/responses/{created['id']}", params={"stream": "true"})
    _no_secret(replay.text)
    assert replay.text.endswith("data: [DONE]\n\n") and "event: response.failed" in replay.text


async def test_failure_is_logged_once_with_the_request_id(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        resp = await _create(env, "leak-500-json")
    rid = resp.headers["x-request-id"]
    lines = [r for r in caplog.records if r.name.startswith("parley") and r.levelno >= logging.INFO]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING, [r.getMessage() for r in lines]
    line = lines[0].getMessage()
    assert f"request={rid}" in line and "model=leak-500-json" in line and "upstream_status=500" in line
    assert "latency_ms=" in line and "upstream said:" in line
    _no_secret(line)
