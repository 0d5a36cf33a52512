"""GET /v1/responses/{id}/usage (in-process app, fake upstreams over real HTTP): one response's tokens and cost
summed over its model turns, and the server-side timeline of its run — foreground (streamed or not) and background
— written in the response's one final write transaction, read in the key's project only."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from parley.config import EmbeddedConfig, ModelConfig, ModelPrice, Settings, WebSearchConfig
from parley.store.base import KeySpec
from parley.store.sql import SqlStore
from parley.testing.fake_agent import AgentUpstream
from parley.testing.fake_search import FakeSearch
from parley.testing.in_process import in_process

AGENT_PRICE = ModelPrice(input=3.0, output=5.0, tool_calls={"web_search_call": 0.01})


@dataclass
class Env:
    http: httpx.AsyncClient
    store: SqlStore
    key: str  # project "team"
    other: str  # project "elsewhere"
    admin: str
    upstream: AgentUpstream

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"authorization": f"Bearer {key or self.key}"}

    async def usage(self, response_id: str, key: str | None = None) -> httpx.Response:
        return await self.http.get(f"/v1/responses/{response_id}/usage", headers=self.auth(key))


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    upstream, search = AgentUpstream(), FakeSearch()
    await upstream.start()
    await search.start()
    models = [ModelConfig(id="echo", base_url=upstream.base_url, upstream_model="echo", price=AGENT_PRICE),
              ModelConfig(id="slow", base_url=upstream.base_url, upstream_model="slow"),
              ModelConfig(id="web-agent", base_url=upstream.base_url, upstream_model="web-agent", price=AGENT_PRICE)]
    settings = Settings(data_dir=tmp_path_factory.mktemp("response-usage"), models=models, auth="keys",
                        auth_cache_ttl_s=3600, embedded=EmbeddedConfig(enabled=False),
                        web_search=WebSearchConfig(provider="searxng", base_url=search.root + "/searxng"))
    async with in_process(settings) as parley:
        store: SqlStore = parley.app.state.runtime.store
        _, key = await store.create_key("team", "team")
        _, other = await store.create_key("elsewhere", "elsewhere")
        _, admin = await store.create_key("", "ops", KeySpec("ops", "admin"))
        yield Env(parley.http, store, key, other, admin, upstream)
    await search.stop()
    await upstream.stop()


def _marks(body: dict[str, Any]) -> list[dict[str, Any]]:
    [run] = body["runs"]
    return list(run["timeline"]["marks"])


def _events(marks: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """(event, its turn / its tool's name / the response's status)."""
    return [(m["event"], m.get("turn", m.get("name", m.get("status")))) for m in marks]


async def test_a_tool_loop_response_sums_its_turns_cost_and_has_a_timeline(env: Env) -> None:
    before = time.time() * 1000
    steps = json.dumps([[{"query": "paris"}, {"query": "berlin"}]])
    response = (await env.http.post("/v1/responses", headers=env.auth(), json={
        "model": "web-agent", "input": steps, "tools": [{"type": "web_search"}]})).json()
    after = time.time() * 1000
    turns = env.upstream.requests[-2:]  # the searches, then the answer
    resp = await env.usage(response["id"])
    assert resp.status_code == 200, resp.text
    body = resp.json()
    # Both turns' tokens are summed (the fake counts a word a token, +3 per request), and priced.
    prompt = [sum(len(str(m.get("content") or "").split()) for m in turn["messages"]) + 3 for turn in turns]
    assert body["input_tokens"] == sum(prompt) == response["usage"]["input_tokens"]
    assert body["output_tokens"] == response["usage"]["output_tokens"] > 0
    assert body["total_tokens"] == body["input_tokens"] + body["output_tokens"]
    assert body["tool_calls"] == {"web_search_call": 2}
    cost = body["cost"]
    assert cost["input"] == pytest.approx(sum(prompt) * 3.0 / 1e6)
    assert cost["output"] == pytest.approx(body["output_tokens"] * 5.0 / 1e6)
    assert cost["tool_calls"] == pytest.approx(0.02) and cost["cached_input"] == 0
    assert cost["value"] == pytest.approx(cost["input"] + cost["output"] + 0.02) and cost["currency"] == "usd"
    [run] = body["runs"]
    assert (run["status"], run["background"], run["model"]) == ("completed", False, "web-agent")
    assert 0 <= run["ttft_ms"] <= run["latency_ms"]

    # The timeline, in server time: two model turns with the two searches between them, then the end.
    timeline = run["timeline"]
    assert before - 1 <= timeline["started_at"] <= after + 1
    marks = timeline["marks"]
    assert [m["ms"] for m in marks] == sorted(m["ms"] for m in marks)
    events = _events(marks)
    assert events[:4] == [("started", None), ("upstream_opened", 1), ("first_output", 1), ("turn_done", 1)]
    assert marks[3]["finish_reason"] == "tool_calls"
    tools = events[4:8]
    assert sorted(tools) == [("tool_call_done", "web_search")] * 2 + [("tool_call_started", "web_search")] * 2
    calls = [m for m in marks[4:8] if m["event"] == "tool_call_done"]
    assert [(m["type"], m["status"]) for m in calls] == [("web_search_call", "completed")] * 2
    for done in calls:  # each call's start comes before its end
        started = next(i for i, m in enumerate(marks) if m["event"] == "tool_call_started"
                       and m["call_id"] == done["call_id"])
        assert started < marks.index(done)
    assert events[8:] == [("upstream_opened", 2), ("first_output", 2), ("turn_done", 2), ("finished", "completed")]
    assert marks[-1]["ms"] == pytest.approx(run["latency_ms"], abs=1)


@contextmanager
def _reads(store: SqlStore) -> Iterator[list[str]]:
    """The statements on a response's tables run through the store's engine (every read; writes go through the
    group-commit writer). The background runner and the ingestion worker poll their own tables meanwhile."""
    seen: list[str] = []
    tables = re.compile(r"\b(responses|items|usage_records|api_keys)\b")

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if tables.search(statement):
            seen.append(statement)

    event.listen(store.engine.sync_engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", note)


async def test_a_streamed_response_keeps_its_timeline_at_no_extra_round_trip(env: Env) -> None:
    await env.http.post("/v1/responses", headers=env.auth(), json={"model": "echo", "input": "warm"})  # key cached
    before = env.store.writer.transactions
    with _reads(env.store) as reads:
        async with env.http.stream("POST", "/v1/responses", headers=env.auth(),
                                   json={"model": "slow", "input": "a b c", "stream": True}) as resp:
            events = [json.loads(line[6:]) async for line in resp.aiter_lines() if line.startswith("data: {")]
    # The whole request: no read, and one write transaction — the response, its items and its usage record
    # with the timeline in it (the record's row is the only place the timeline is written).
    assert reads == []
    assert env.store.writer.transactions == before + 1
    assert events[-1]["type"] == "response.completed"
    body = (await env.usage(events[0]["response"]["id"])).json()
    marks = _marks(body)
    assert _events(marks) == [("started", None), ("upstream_opened", 1), ("first_output", 1), ("turn_done", 1),
                              ("finished", "completed")]
    # The slow fake sends a word every 0.2 s: the turn ends after its first output (no bound on how long).
    assert marks[2]["ms"] <= marks[3]["ms"] <= marks[4]["ms"]
    # The same instant, rounded twice: to whole ms (ttft_ms) and to 0.1 ms (the mark); 401.46 ms is 401 and 401.5.
    assert abs(body["runs"][0]["ttft_ms"] - marks[2]["ms"]) <= 0.55


async def test_a_background_run_has_its_timeline(env: Env) -> None:
    created = (await env.http.post("/v1/responses", headers=env.auth(),
                                   json={"model": "echo", "input": "later on", "background": True})).json()
    for _ in range(6000):  # until the run ends (a busy machine may take seconds)
        body = (await env.usage(created["id"])).json()
        if body["runs"]:
            break
        assert body["input_tokens"] == 0 and body["cost"]["value"] == 0  # queued or running: nothing recorded yet
        await asyncio.sleep(0.01)
    [run] = body["runs"]
    assert (run["background"], run["status"]) == (True, "completed")
    assert run["timeline"]["started_at"] >= created["created_at"] * 1000  # the run starts once it is claimed
    assert [mark["event"] for mark in run["timeline"]["marks"]] == [
        "started", "upstream_opened", "first_output", "turn_done", "finished"]


async def test_store_false_responses_are_found_by_their_record(env: Env) -> None:
    response = (await env.http.post("/v1/responses", headers=env.auth(),
                                    json={"model": "echo", "input": "one two", "store": False})).json()
    for _ in range(6000):  # its record is committed without anybody waiting for it
        resp = await env.usage(response["id"])
        if resp.status_code == 200:
            break
        await asyncio.sleep(0.01)
    assert resp.status_code == 200 and resp.json()["output_tokens"] == response["usage"]["output_tokens"]


async def test_another_projects_response_is_not_found(env: Env) -> None:
    response = (await env.http.post("/v1/responses", headers=env.auth(),
                                    json={"model": "echo", "input": "mine"})).json()
    assert (await env.usage(response["id"])).status_code == 200
    elsewhere = await env.usage(response["id"], env.other)
    assert elsewhere.status_code == 404 and elsewhere.json()["error"]["param"] == "response_id"
    assert (await env.usage("resp_unknown")).status_code == 404
    admin = await env.usage(response["id"], env.admin)  # admin keys reach /v1/organization/* only
    assert admin.status_code == 403
    extra = await env.http.get(f"/v1/responses/{response['id']}/usage?verbose=1", headers=env.auth())
    assert extra.status_code == 400 and extra.json()["error"]["param"] == "verbose"
