"""Rate limits and budgets over HTTP (in-process app): OpenAI's 429 body and `retry-after`, the
x-ratelimit-* headers on JSON, streamed and background answers, per project (configuration) and per key."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from parley.config import EmbeddedConfig, LimitsConfig, ModelConfig, ModelPrice, RateLimits, Settings
from parley.store.base import KeySpec
from parley.store.sql import SqlStore
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import in_process, served

TRIO = ("limit", "remaining", "reset")


@dataclass
class Env:
    http: httpx.AsyncClient
    store: SqlStore

    async def key(self, project: str, limits: RateLimits | None = None) -> dict[str, str]:
        _, secret = await self.store.create_key(project, project, KeySpec(project, limits=limits))
        return {"authorization": f"Bearer {secret}"}


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    fake = FakeUpstream()
    await fake.start()
    # $1 per 1M input and output tokens: a few-word answer costs a few µ$.
    models = [ModelConfig(id="echo", base_url=fake.base_url, upstream_model="echo",
                          price=ModelPrice(input=1.0, output=1.0))]
    limits = LimitsConfig(projects={"small": RateLimits(requests_per_minute=3, tokens_per_minute=10_000)})
    settings = Settings(data_dir=tmp_path_factory.mktemp("limits"), models=models, auth="keys", limits=limits,
                        embedded=EmbeddedConfig(enabled=False))
    async with in_process(settings) as parley:
        yield Env(parley.http, parley.app.state.runtime.store)
    await fake.stop()


async def test_requests_per_minute_then_openai_429(env: Env) -> None:
    auth = await env.key("small")
    body = {"model": "echo", "input": "hi"}
    json_answer = await env.http.post("/v1/responses", headers=auth, json=body)
    assert json_answer.headers["x-ratelimit-limit-requests"] == "3"
    assert json_answer.headers["x-ratelimit-remaining-requests"] == "2"
    assert json_answer.headers["x-ratelimit-limit-tokens"] == "10000"
    assert all(f"x-ratelimit-{part}-{kind}" in json_answer.headers for part in TRIO for kind in ("requests", "tokens"))
    async with env.http.stream("POST", "/v1/responses", headers=auth, json={**body, "stream": True}) as streamed:
        assert streamed.headers["x-ratelimit-remaining-requests"] == "1"
        assert [line async for line in streamed.aiter_lines()][-2] == "data: [DONE]"
    background = await env.http.post("/v1/responses", headers=auth, json={**body, "background": True})
    assert background.status_code == 200 and background.headers["x-ratelimit-remaining-requests"] == "0"

    refused = await env.http.post("/v1/responses", headers=auth, json=body)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("requests", "rate_limit_exceeded", None)
    assert error["message"].startswith("Rate limit reached for project small on requests per min (RPM): Limit 3")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0" and refused.headers["x-request-id"]
    # Another project is not limited by it, and carries no x-ratelimit headers (nothing limits it).
    free = await env.http.post("/v1/responses", headers=await env.key("big"), json=body)
    assert free.status_code == 200 and "x-ratelimit-limit-requests" not in free.headers


async def test_a_key_budget_is_insufficient_quota_once_spent(env: Env) -> None:
    auth = await env.key("big", RateLimits(spend_per_day_usd=0.000001))  # $1e-6: one response spends it
    first = await env.http.post("/v1/responses", headers=auth, json={"model": "echo", "input": "one two three"})
    assert first.status_code == 200 and "x-ratelimit-limit-requests" not in first.headers  # no per-minute limit
    refused = await env.http.post("/v1/responses", headers=auth, json={"model": "echo", "input": "again"})
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    assert "spend limit of $1e-06 per day of key" in error["message"]
    assert 0 < int(refused.headers["retry-after"]) <= 86400
    # The project's other keys are not held by this key's budget.
    assert (await env.http.post("/v1/responses", headers=await env.key("big"),
                                json={"model": "echo", "input": "x"})).status_code == 200


async def test_tokens_per_minute_counts_the_tokens_responses_used(env: Env) -> None:
    auth = await env.key("big", RateLimits(tokens_per_minute=12))
    words = " ".join(["word"] * 10)  # the fake counts a token per word: well over 12 with its answer
    first = await env.http.post("/v1/responses", headers=auth, json={"model": "echo", "input": words})
    assert first.headers["x-ratelimit-remaining-tokens"] == "12"  # counted when it ends, not before
    refused = await env.http.post("/v1/responses", headers=auth, json={"model": "echo", "input": "x"})
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "tokens"
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"


async def test_compaction_is_rate_limited_too(env: Env) -> None:
    auth = await env.key("big", RateLimits(requests_per_minute=1))
    body = {"model": "echo", "input": [{"role": "user", "content": "compact me"}]}
    assert (await env.http.post("/v1/responses/compact", headers=auth, json=body)).status_code == 200
    refused = await env.http.post("/v1/responses/compact", headers=auth, json=body)
    assert refused.status_code == 429 and json.loads(refused.text)["error"]["code"] == "rate_limit_exceeded"


async def test_a_stream_the_client_leaves_is_charged_by_estimate(tmp_path: Path) -> None:
    # A hostile client streams and leaves after the first delta: no usage ever arrives from the upstream, which
    # still read the whole input. Counted as nothing, such responses were free of cost and outside the token
    # limits for ever; the cut turn is now counted by estimate (~4 characters a token).
    fake = FakeUpstream()
    await fake.start()
    models = [ModelConfig(id="slow", base_url=fake.base_url, upstream_model="slow",
                          price=ModelPrice(input=1.0, output=1.0))]
    limits = LimitsConfig(projects={"cut": RateLimits(tokens_per_minute=200)})
    settings = Settings(data_dir=tmp_path, models=models, auth="keys", limits=limits,
                        embedded=EmbeddedConfig(enabled=False))
    long = " ".join(["word"] * 200)  # ~1,000 characters: ~250 tokens by the estimate, past the 200
    try:
        async with served(settings) as app, httpx.AsyncClient(base_url=app.base_url, timeout=60) as client:
            store: SqlStore = app.app.state.runtime.store
            _, secret = await store.create_key("cut", "cut", KeySpec("cut"))
            auth = {"authorization": f"Bearer {secret}"}
            async with client.stream("POST", "/responses", headers=auth,
                                     json={"model": "slow", "input": long, "stream": True}) as cut:
                async for line in cut.aiter_lines():
                    if line.startswith("data: ") and '"response.created"' in line:
                        response_id = json.loads(line[6:])["response"]["id"]
                    if "response.output_text.delta" in line:
                        break  # the client leaves before the usage chunk
            stored = None
            for _ in range(2400):  # until the server has seen the disconnect and stored the response (bounded)
                got = await client.get(f"/responses/{response_id}", headers=auth)
                if got.status_code == 200 and got.json()["status"] == "cancelled":
                    stored = got.json()
                    break
                await asyncio.sleep(0.025)
            assert stored is not None
            assert stored["usage"]["input_tokens"] >= 200 and stored["usage"]["output_tokens"] >= 1
            cost = (await client.get(f"/responses/{response_id}/usage", headers=auth)).json()
            assert cost["input_tokens"] == stored["usage"]["input_tokens"] and cost["cost"]["value"] > 0
            refused = await client.post("/responses", headers=auth, json={"model": "slow", "input": "hi"})
            assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
            assert "token" in refused.json()["error"]["message"]
    finally:
        await fake.stop()
