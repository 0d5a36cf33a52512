"""The web_search tool through the official SDK (in-process app, a fake agent model upstream and a fake
SearXNG over real HTTP): its item, events, url_citation annotations, include, the page cache that
`external_web_access: false` searches, validation, failures as outcomes, and replay on later turns."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter
from tests.waiting import LIMIT_S

from parley.config import EmbeddedConfig, ModelConfig, Settings, WebSearchConfig
from parley.store.base import WebPageRecord
from parley.store.sql import SqlStore
from parley.testing.fake_agent import AgentUpstream
from parley.testing.fake_search import FakeSearch
from parley.testing.in_process import InProcess, in_process

EVENTS = TypeAdapter(ResponseStreamEvent)
LIVE = {"type": "web_search"}
OFFLINE = {"type": "web_search", "external_web_access": False}


@dataclass
class Env:
    live: AsyncOpenAI
    bare: AsyncOpenAI  # a server with no search provider
    upstream: AgentUpstream
    search: FakeSearch
    live_app: InProcess
    bare_app: InProcess

    def tool_messages(self) -> list[str]:
        """The tool results the model got in the last request."""
        return [m["content"] for m in self.upstream.requests[-1]["messages"] if m["role"] == "tool"]

    async def seed(self, app: InProcess, project: str, *pages: WebPageRecord) -> None:
        store: SqlStore = app.app.state.runtime.store
        for page in pages:
            await store.put_web_page(project, page, keep_s=86400.0)


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    upstream, search = AgentUpstream(), FakeSearch()
    await upstream.start()
    await search.start()
    models = [ModelConfig(id="web-agent", base_url=upstream.base_url, upstream_model="web-agent")]
    # 5 s: the fake answers at once, and a busy machine must not make that a timeout; "slow" is held until released
    web = WebSearchConfig(provider="searxng", base_url=search.root + "/searxng", timeout_s=5.0)
    live_settings = Settings(data_dir=tmp_path_factory.mktemp("web-live"), models=models,
                             embedded=EmbeddedConfig(enabled=False), web_search=web)
    bare_settings = Settings(data_dir=tmp_path_factory.mktemp("web-bare"), models=models,
                             embedded=EmbeddedConfig(enabled=False))
    async with in_process(live_settings) as live, in_process(bare_settings) as bare:
        yield Env(live.sdk(), bare.sdk(), upstream, search, live, bare)
    await search.stop()
    await upstream.stop()


def steps(*calls: list[dict[str, Any]]) -> str:
    return json.dumps(list(calls))


def _check_annotations(message: dict[str, Any]) -> list[dict[str, Any]]:
    part = message["content"][0]
    for note in part["annotations"]:
        assert note["type"] == "url_citation"
        linked = part["text"][note["start_index"]:note["end_index"]]
        assert linked.startswith("([") and linked.endswith(f"]({note['url']}))"), linked
    annotations: list[dict[str, Any]] = part["annotations"]
    return annotations


async def test_a_search_streams_its_item_events_and_a_cited_answer(env: Env) -> None:
    events = [e.model_dump(exclude_none=True) async for e in await env.live.responses.create(
        model="web-agent", input="paris capital", tools=[LIVE], stream=True,
        include=["web_search_call.action.sources"])]
    for event in events:
        EVENTS.validate_python(event)
    kinds = [e["type"] for e in events]
    tool_events = [k for k in kinds if "web_search_call" in k]
    assert tool_events == ["response.web_search_call.in_progress", "response.web_search_call.searching",
                           "response.web_search_call.completed"]
    assert kinds.index("response.output_item.added") < kinds.index("response.web_search_call.in_progress")
    added = next(e for e in events if e["type"] == "response.output_item.added")
    assert added["item"]["type"] == "web_search_call" and added["item"]["status"] == "in_progress"
    done = next(e for e in events if e["type"] == "response.output_item.done")["item"]
    assert done["status"] == "completed"
    assert done["action"]["type"] == "search" and done["action"]["query"] == "paris capital"
    assert {"type": "url", "url": "https://en.example.org/wiki/Paris"} in done["action"]["sources"]
    assert "results" not in done  # what the model read is kept, shown only with web_search_call.results
    notes = [e for e in events if e["type"] == "response.output_text.annotation.added"]
    assert len(notes) == 1 and kinds.index(notes[0]["type"]) < kinds.index("response.output_text.done")
    final = Response.model_validate(events[-1]["response"]).model_dump(exclude_none=True)
    message = final["output"][1]
    annotation = _check_annotations(message)[0]
    assert annotation == {**notes[0]["annotation"], "type": "url_citation"}
    assert annotation["url"] == done["action"]["sources"][0]["url"]
    assert message["content"][0]["text"].startswith("The answer is here ([")
    # The model read numbered results from the provider.
    assert env.tool_messages()[0].startswith("Web search results for 'paris capital':\n\n[1] ")


async def test_non_streaming_the_same_and_sources_only_when_included(env: Env) -> None:
    plain = await env.live.responses.create(model="web-agent", input="paris", tools=[LIVE])
    call = plain.output[0].model_dump(exclude_none=True)
    assert call["type"] == "web_search_call" and call["id"].startswith("ws_") and call["status"] == "completed"
    assert "sources" not in call["action"]
    _check_annotations(plain.output[1].model_dump())
    fetched = await env.live.responses.retrieve(plain.id, include=["web_search_call.action.sources"])
    assert fetched.output[0].model_dump()["action"]["sources"]
    assert "sources" not in (await env.live.responses.retrieve(plain.id)).output[0].model_dump(exclude_none=True)[
        "action"]
    shown = await env.live.responses.retrieve(plain.id, include=["web_search_call.results"])
    assert shown.output[0].model_dump()["results"][0]["url"]


async def test_a_later_turn_gets_the_search_replayed(env: Env) -> None:
    first = await env.live.responses.create(model="web-agent", input="berlin", tools=[LIVE])
    await env.live.responses.create(model="web-agent", input="thanks", previous_response_id=first.id, tools=[LIVE])
    messages = env.upstream.requests[-1]["messages"]
    call = next(m for m in messages if m.get("tool_calls"))
    assert call["tool_calls"][0]["function"]["name"] == "web_search"
    assert json.loads(call["tool_calls"][0]["function"]["arguments"]) == {"action": "search", "query": "berlin"}
    replayed = next(m for m in messages if m["role"] == "tool")
    assert "Berlin is the capital of Germany." in replayed["content"]


async def test_provider_failures_are_failed_items_not_failed_responses(env: Env) -> None:
    env.search.hold = held = asyncio.Event()  # "slow" answers only once released: only the 5 s timeout ends it
    try:
        for query in ("boom", "slow"):
            async with asyncio.timeout(LIMIT_S):  # fails a response that waits for the provider; times nothing
                response = await env.live.responses.create(model="web-agent", input=query, tools=[LIVE])
            assert response.status == "completed"
            assert response.output[0].status == "failed"
            assert env.tool_messages()[0].startswith("The web search failed: the search provider ")
    finally:
        held.set()
        env.search.hold = None
    both = await env.live.responses.create(model="web-agent", input=steps([{"queries": ["paris", "boom"]}]),
                                           tools=[LIVE])
    assert both.output[0].status == "incomplete"
    assert both.output[0].action.queries == ["paris", "boom"]  # type: ignore[union-attr]
    assert "One of the queries failed" in env.tool_messages()[0]


async def test_context_size_and_allowed_domains(env: Env) -> None:
    lengths = {}
    for size in ("low", "high"):
        await env.live.responses.create(model="web-agent", input="capital paris",
                                        tools=[{**LIVE, "search_context_size": size}])
        lengths[size] = len(env.tool_messages()[0])
        assert env.search.requests[-1]["params"]["q"] == "capital paris"
    assert lengths["high"] > lengths["low"]
    filtered = await env.live.responses.create(
        model="web-agent", input="paris", include=["web_search_call.action.sources"],
        tools=[{**LIVE, "filters": {"allowed_domains": ["example.net", "EXAMPLE.com"]}}])
    assert env.search.requests[-1]["params"]["q"] == "paris (site:example.net OR site:example.com)"
    sources = [s.url for s in filtered.output[0].action.sources or ()]  # type: ignore[union-attr]
    assert sources and all(".example.net/" in u or ".example.com/" in u for u in sources)


async def test_offline_search_reads_only_the_page_cache(env: Env) -> None:
    codex_tool = {"type": "web_search", "external_web_access": False, "index_gated_web_access": True}
    asked = len(env.search.requests)
    empty = await env.bare.responses.create(model="web-agent", input="eiffel tower", tools=[codex_tool])
    assert empty.status == "completed" and empty.output[0].status == "completed"
    assert empty.output[0].action.type == "search"
    assert env.tool_messages()[0].startswith("Web search for 'eiffel tower' found nothing.")
    assert "Live web access is off" in env.tool_messages()[0]
    await env.seed(env.bare_app, "default", WebPageRecord("https://en.example.org/wiki/Eiffel_Tower", "Eiffel Tower",
                                                         "The Eiffel Tower was completed in 1889.", int(time.time())))
    cached = await env.bare.responses.create(model="web-agent", input="eiffel tower", tools=[codex_tool],
                                             include=["web_search_call.action.sources"])
    assert [s.url for s in cached.output[0].action.sources or ()] == [  # type: ignore[union-attr]
        "https://en.example.org/wiki/Eiffel_Tower"]
    assert "completed in 1889" in env.tool_messages()[0]
    _check_annotations(cached.output[1].model_dump())
    assert len(env.search.requests) == asked  # nothing went to the search provider


async def test_open_page_and_find_in_page(env: Env) -> None:
    url = "https://en.example.org/wiki/Seine"
    text = "The Seine is a river. " * 10 + "It flows through Paris to the English Channel."
    await env.seed(env.bare_app, "default", WebPageRecord(url, "Seine", text, int(time.time())))
    response = await env.bare.responses.create(
        model="web-agent", tools=[OFFLINE],
        input=steps([{"action": "open_page", "url": url}],
                    [{"action": "find_in_page", "url": url, "pattern": "paris"}]))
    opened, found = response.output[0].model_dump(), response.output[1].model_dump()
    assert opened["action"] == {"type": "open_page", "url": url} and opened["status"] == "completed"
    assert found["action"] == {"type": "find_in_page", "url": url, "pattern": "paris"}
    texts = env.tool_messages()
    assert texts[0].startswith("Text of the page [1] Seine") and texts[1].startswith("Passages containing 'paris'")
    assert "flows through Paris" in texts[1]
    missing = await env.bare.responses.create(model="web-agent", tools=[OFFLINE],
                                              input=steps([{"action": "open_page", "url": "https://x.example/"}]))
    assert missing.output[0].status == "failed"
    assert "not in the local page cache" in env.tool_messages()[0]
    # A server without the SSRF-guarded fetcher wired in reads live pages from its cache only.
    live = await env.live.responses.create(model="web-agent", tools=[LIVE],
                                           input=steps([{"action": "open_page", "url": "https://x.example/"}]))
    assert live.output[0].status == "failed"


async def test_live_access_without_a_provider_is_a_400_naming_the_tool(env: Env) -> None:
    for tool in (LIVE, {"type": "web_search_preview"}, {"type": "web_search", "external_web_access": True}):
        with pytest.raises(openai.BadRequestError) as caught:
            await env.bare.responses.create(model="web-agent", input="x", tools=[{"type": "function", "name": "f",
                                                                                  "parameters": {}}, tool])
        error: dict[str, Any] = caught.value.body  # type: ignore[assignment]
        assert error["param"] == "tools[1]" and error["code"] == "unsupported_tool"
        assert "no search provider" in error["message"] and "external_web_access" in error["message"]


@pytest.mark.parametrize(("tool", "param"), [
    ({**LIVE, "search_context_size": "huge"}, "tools[0].search_context_size"),
    ({**LIVE, "filters": {"allowed_domains": ["https://example.org"]}}, "tools[0].filters.allowed_domains"),
    ({**LIVE, "user_location": {"type": "approximate", "country": "FRA"}}, "tools[0].user_location.country"),
    ({**LIVE, "external_web_access": "no"}, "tools[0].external_web_access"),
    ({"type": "web_search_preview", "user_location": {"city": "Paris"}}, "tools[0].user_location.type"),
])
async def test_invalid_known_fields_are_400s(env: Env, tool: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await env.live.responses.create(model="web-agent", input="x", tools=[tool])
    assert caught.value.body["param"] == param  # type: ignore[index]


async def test_preview_alias_and_a_forced_first_turn(env: Env) -> None:
    response = await env.live.responses.create(
        model="web-agent", input="paris", tools=[{"type": "web_search_preview_2025_03_11",
                                                  "search_content_types": ["text"]}],
        tool_choice={"type": "web_search_preview"})
    assert response.output[0].type == "web_search_call" and response.output[0].status == "completed"
    first_turn = env.upstream.requests[-2]
    assert first_turn["tool_choice"] == {"type": "function", "function": {"name": "web_search"}}
    assert env.upstream.requests[-1].get("tool_choice") in (None, "auto")


async def test_the_agents_sdk_web_search_tool(env: Env) -> None:
    from agents import (
        Agent,
        OpenAIResponsesModel,
        Runner,
        WebSearchTool,
        set_tracing_disabled,
    )
    from agents.items import ToolCallItem

    set_tracing_disabled(True)  # the SDK would otherwise try to export traces to OpenAI
    answers = []
    for tool, client in ((WebSearchTool(search_context_size="low"), env.live),
                         (WebSearchTool(external_web_access=False), env.bare)):
        agent = Agent(name="researcher", instructions="Search, then answer with a citation.", tools=[tool],
                      model=OpenAIResponsesModel(model="web-agent", openai_client=client))
        result = await Runner.run(agent, "paris capital")
        calls = [item.raw_item for item in result.new_items if isinstance(item, ToolCallItem)]
        assert [call.type for call in calls] == ["web_search_call"]  # type: ignore[union-attr]
        assert calls[0].action.query == "paris capital"  # type: ignore[union-attr]
        answers.append(result.final_output)
    assert answers[0] == "The answer is here ([en.example.org](https://en.example.org/wiki/Paris))."
