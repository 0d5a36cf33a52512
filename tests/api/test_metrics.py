"""GET /metrics after real requests (in-process app, fake upstreams over HTTP): requests by route and status,
responses by model and status counted once (non-streamed, streamed, background), tokens and cost, built-in tool
calls, upstream errors, write batches, vector store ingestion; who may scrape (metrics = open | keys | off |
auto)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from parley.config import EmbeddedConfig, ModelConfig, ModelPrice, Settings, WebSearchConfig
from parley.store.base import KeySpec
from parley.store.sql import SqlStore
from parley.testing.fake_agent import AgentUpstream
from parley.testing.fake_search import FakeSearch
from parley.testing.in_process import in_process

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Env:
    http: httpx.AsyncClient

    async def scrape(self) -> Samples:
        resp = await self.http.get("/metrics")
        assert resp.status_code == 200, resp.text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(resp.text) for s in family.samples}


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    upstream, search = AgentUpstream(), FakeSearch()
    await upstream.start()
    await search.start()
    models = [
        ModelConfig(id="echo", base_url=upstream.base_url, upstream_model="echo",
                    price=ModelPrice(input=2.0, output=10.0)),
        ModelConfig(id="web-agent", base_url=upstream.base_url, upstream_model="web-agent"),
        ModelConfig(id="broken", base_url=upstream.base_url, upstream_model="error-502"),
    ]
    settings = Settings(data_dir=tmp_path_factory.mktemp("metrics"), models=models,
                        embedded=EmbeddedConfig(enabled=False),
                        web_search=WebSearchConfig(provider="searxng", base_url=search.root + "/searxng"))
    async with in_process(settings) as parley:
        yield Env(parley.http)
    await search.stop()
    await upstream.stop()


async def test_responses_are_counted_once_each_by_model_status_and_mode(env: Env) -> None:
    before = await env.scrape()
    assert (await env.http.post("/v1/responses", json={"model": "echo", "input": "one two"})).status_code == 200
    streamed = await env.http.post("/v1/responses", json={"model": "echo", "input": "three", "stream": True})
    assert streamed.status_code == 200 and "response.completed" in streamed.text
    queued = (await env.http.post("/v1/responses", json={"model": "echo", "input": "later",
                                                           "background": True})).json()
    for _ in range(3000):
        if (await env.http.get(f"/v1/responses/{queued['id']}")).json()["status"] == "completed":
            break
        await asyncio.sleep(0.02)
    after = await env.scrape()
    assert delta(before, after, "parley_http_requests_total", method="POST", route="/v1/responses", status="200") == 3
    assert delta(before, after, "parley_responses_total", model="echo", status="completed", mode="foreground") == 2
    assert delta(before, after, "parley_responses_total", model="echo", status="completed", mode="background") == 1
    assert delta(before, after, "parley_response_duration_seconds_count", model="echo") == 3
    assert delta(before, after, "parley_time_to_first_token_seconds_count", model="echo") == 3
    assert delta(before, after, "parley_tokens_total", model="echo", type="input") > 0
    assert delta(before, after, "parley_tokens_total", model="echo", type="output") > 0
    assert delta(before, after, "parley_cost_usd_total", model="echo") > 0
    # Routes by template, not by id.
    assert delta(before, after, "parley_http_requests_total", method="GET", route="/v1/responses/{response_id}",
                 status="200") >= 1
    assert delta(before, after, "parley_store_write_batch_size_count") >= 2


async def test_a_failed_request_counts_its_status_and_the_upstream_error(env: Env) -> None:
    before = await env.scrape()
    resp = await env.http.post("/v1/responses", json={"model": "broken", "input": "hi"})
    assert resp.status_code == 502
    missing = await env.http.post("/v1/responses", json={"model": "nope", "input": "hi"})
    assert missing.status_code == 400
    after = await env.scrape()
    deployment = next(key for key in after if key[0] == "parley_upstream_errors_total")[1]
    assert dict(deployment)["model"] == "broken" and dict(deployment)["status"] == "502"
    assert dict(deployment)["deployment"].startswith("127.0.0.1:")
    assert delta(before, after, "parley_upstream_errors_total", **dict(deployment)) == 1
    assert delta(before, after, "parley_http_requests_total", method="POST", route="/v1/responses", status="502") == 1
    assert delta(before, after, "parley_http_requests_total", method="POST", route="/v1/responses", status="400") == 1
    assert delta(before, after, "parley_responses_total", model="broken", status="failed", mode="foreground") == 0


async def test_built_in_tool_calls_are_counted_and_timed(env: Env) -> None:
    before = await env.scrape()
    steps = json.dumps([[{"query": "paris"}, {"query": "berlin"}]])
    body = (await env.http.post("/v1/responses", json={"model": "web-agent", "input": steps,
                                                       "tools": [{"type": "web_search"}]})).json()
    assert [item["type"] for item in body["output"]] == ["web_search_call", "web_search_call", "message"]
    after = await env.scrape()
    assert delta(before, after, "parley_builtin_tool_calls_total", tool="web_search_call", status="completed") == 2
    assert delta(before, after, "parley_builtin_tool_duration_seconds_count", tool="web_search_call") == 2
    assert delta(before, after, "parley_responses_total", model="web-agent", status="completed",
                 mode="foreground") == 1


async def test_vector_store_ingestion_is_counted(env: Env) -> None:
    before = await env.scrape()
    uploaded = (await env.http.post("/v1/files", data={"purpose": "assistants"}, files={
        "file": ("notes.txt", b"Parley indexes this sentence. " * 40, "text/plain")})).json()
    created = (await env.http.post("/v1/vector_stores", json={"name": "notes", "file_ids": [uploaded["id"]]})).json()
    for _ in range(3000):
        store = (await env.http.get(f"/v1/vector_stores/{created['id']}")).json()
        if store["file_counts"]["completed"] == 1:
            break
        await asyncio.sleep(0.02)
    after = await env.scrape()
    assert delta(before, after, "parley_vector_store_files_indexed_total", status="completed") == 1
    assert delta(before, after, "parley_vector_store_chunks_indexed_total") >= 1
    assert delta(before, after, "parley_vector_store_ingestion_seconds_total", stage="embed") > 0


async def test_scrape_time_gauges(env: Env) -> None:
    samples = await env.scrape()
    assert samples[("parley_background_queued", ())] == 0
    assert samples[("parley_background_running", ())] == 0


async def _app_metrics(tmp_path: Path, **settings: object) -> tuple[int, ...]:
    """Status of /metrics with no key, a project key and an admin key."""
    config = Settings(data_dir=tmp_path, embedded=EmbeddedConfig(enabled=False), auth="keys", **settings)  # type: ignore[arg-type]
    async with in_process(config) as parley:
        store: SqlStore = parley.app.state.runtime.store
        _, project = await store.create_key("team", "team")
        _, admin = await store.create_key("", "ops", KeySpec("ops", "admin"))
        statuses = []
        for key in (None, project, admin):
            headers = {"authorization": f"Bearer {key}"} if key else {}
            statuses.append((await parley.http.get("/metrics", headers=headers)).status_code)
        return tuple(statuses)


async def test_who_may_scrape(tmp_path: Path) -> None:
    assert await _app_metrics(tmp_path / "open", metrics="open") == (200, 200, 200)
    assert await _app_metrics(tmp_path / "keys", metrics="keys") == (401, 403, 200)
    assert await _app_metrics(tmp_path / "off", metrics="off") == (404, 404, 404)
    # auto: open on a loopback bind, an admin key elsewhere.
    assert await _app_metrics(tmp_path / "auto", host="127.0.0.1") == (200, 200, 200)
    assert await _app_metrics(tmp_path / "remote", host="0.0.0.0") == (401, 403, 200)
