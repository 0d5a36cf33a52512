"""The file_search tool end to end through the official SDK: files uploaded and indexed into a vector store
(the local embedding model), then a model (the fake `call-agent` upstream over real HTTP) that calls
`file_search`; the `file_search_call` item with its results under `include`, the streamed events, the
`file_citation` annotations on the answer, replay on the next turn, and the errors for stores it cannot use."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from parley.config import EmbeddedConfig, ModelConfig, Settings, VectorStoresConfig
from parley.testing.fake_agent import AgentUpstream
from parley.testing.in_process import in_process

EVENTS = TypeAdapter(ResponseStreamEvent)
DOCS = {
    "volcano.md": "# Volcanoes\nMount Etna in Sicily is one of the most active volcanoes in Europe; its eruptions "
                  "have been recorded for 2,700 years.",
    "pasta.md": "# Pasta\nCook spaghetti in salted boiling water for nine minutes, then toss it with tomato sauce.",
}


@dataclass
class Env:
    client: AsyncOpenAI
    other_project: AsyncOpenAI
    upstream: AgentUpstream
    store_id: str
    file_ids: dict[str, str]


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    upstream = AgentUpstream()
    await upstream.start()
    settings = Settings(data_dir=tmp_path_factory.mktemp("file-search"), embedded=EmbeddedConfig(enabled=False),
                        models=[ModelConfig(id="call-agent", base_url=upstream.base_url, upstream_model="call-agent")],
                        vector_stores=VectorStoresConfig(poll_s=0.02), auth="keys", auth_cache_ttl_s=0)
    async with in_process(settings) as app:
        keys = app.app.state.runtime.store
        client = app.sdk((await keys.create_key("project-a", "a"))[1])
        other = app.sdk((await keys.create_key("project-b", "b"))[1])
        store = await client.vector_stores.create(name="knowledge")
        file_ids = {}
        for name, text in DOCS.items():
            done = await client.vector_stores.files.upload_and_poll(
                vector_store_id=store.id, file=(name, text.encode()), poll_interval_ms=20)
            assert done.status == "completed", done.last_error
            file_ids[name] = done.id
        yield Env(client, other, upstream, store.id, file_ids)
    await upstream.stop()


def ask(*queries: str) -> str:
    return json.dumps({"call": "file_search", "arguments": {"queries": list(queries)}})


def tool(env: Env, **extra: Any) -> dict[str, Any]:
    return {"type": "file_search", "vector_store_ids": [env.store_id], **extra}


async def test_a_search_its_results_and_a_cited_answer(env: Env) -> None:
    response = await env.client.responses.create(model="call-agent", input=ask("active volcano in Sicily"),
                                                 tools=[tool(env)], include=["file_search_call.results"])
    assert response.status == "completed"
    call, message = response.output
    assert call.type == "file_search_call" and call.status == "completed"
    assert call.queries == ["active volcano in Sicily"]
    assert call.results and call.results[0].file_id == env.file_ids["volcano.md"]
    assert call.results[0].filename == "volcano.md" and "Etna" in (call.results[0].text or "")
    assert 0 < (call.results[0].score or 0) <= 1
    # The model saw numbered passages, cited one; the marker became an annotation at its position.
    assert message.type == "message"
    part = message.content[0]
    assert part.type == "output_text" and part.text.startswith("done:")
    citations = [a for a in part.annotations if a.type == "file_citation"]
    assert citations, part.text
    assert citations[0].file_id == env.file_ids["volcano.md"] and citations[0].filename == "volcano.md"
    assert 0 <= citations[0].index <= len(part.text)
    assert "[1]" not in part.text  # the marker itself is gone from the text
    # Without include the results are not shown (but the call is).
    again = await env.client.responses.retrieve(response.id)
    assert again.output[0].type == "file_search_call" and again.output[0].results is None
    # Usage sums both model turns (the call, then the answer).
    turns = [r for r in env.upstream.requests if r.get("model") == "call-agent"][-2:]
    assert response.usage is not None and response.usage.input_tokens > 0
    assert [m["role"] for m in turns[1]["messages"]][-2:] == ["assistant", "tool"]


async def test_streamed_events_validate_and_come_in_order(env: Env) -> None:
    types: list[str] = []
    final: Response | None = None
    stream = await env.client.responses.create(model="call-agent", input=ask("spaghetti"), tools=[tool(env)],
                                               stream=True)
    async for event in stream:
        EVENTS.validate_python(event.model_dump())
        types.append(event.type)
        if event.type == "response.completed":
            final = event.response
    assert final is not None
    searching = [t for t in types if t.startswith("response.file_search_call.")]
    assert searching == ["response.file_search_call.in_progress", "response.file_search_call.searching",
                         "response.file_search_call.completed"]
    assert "response.output_text.annotation.added" in types
    assert types.index("response.file_search_call.completed") < types.index("response.output_text.annotation.added")
    cited = final.output[-1].content[0].annotations  # type: ignore[union-attr]
    assert cited and cited[0].file_id == env.file_ids["pasta.md"]  # type: ignore[union-attr]


async def test_the_next_turn_replays_the_search(env: Env) -> None:
    first = await env.client.responses.create(model="call-agent", input=ask("Etna"), tools=[tool(env)])
    await env.client.responses.create(model="call-agent", input="thanks", previous_response_id=first.id,
                                      tools=[tool(env)])
    messages = env.upstream.requests[-1]["messages"]
    calls = [m for m in messages if m["role"] == "assistant" and m.get("tool_calls")]
    results = [m for m in messages if m["role"] == "tool"]
    assert calls[-1]["tool_calls"][0]["function"]["name"] == "file_search"
    assert "Etna" in results[-1]["content"] and messages[-1] == {"role": "user", "content": "thanks"}


@pytest.mark.parametrize(("ids", "status", "param"), [(["vs_unknown"], 404, "tools[0].vector_store_ids[0]"),
                                                    ([], 400, "tools[0].vector_store_ids")])
async def test_unknown_or_missing_stores_are_refused(env: Env, ids: list[str], status: int, param: str) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        await env.client.responses.create(model="call-agent", input=ask("x"),
                                          tools=[{"type": "file_search", "vector_store_ids": ids}])
    assert info.value.status_code == status
    assert (info.value.body or {}).get("param") == param  # type: ignore[union-attr]


async def test_another_projects_store_is_not_found(env: Env) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        await env.other_project.responses.create(model="call-agent", input=ask("x"), tools=[tool(env)])
    assert info.value.status_code == 404
    assert (info.value.body or {}).get("param") == "tools[0].vector_store_ids[0]"  # type: ignore[union-attr]


async def test_only_the_listed_stores_are_searched(env: Env) -> None:
    other = await env.client.vector_stores.create(name="elsewhere")
    moved = await env.client.vector_stores.files.upload_and_poll(
        vector_store_id=other.id, poll_interval_ms=20,
        file=("comet.md", b"Halley's comet returns to the inner solar system every 76 years."))
    assert moved.status == "completed", moved.last_error
    response = await env.client.responses.create(model="call-agent", input=ask("Halley comet every 76 years"),
                                                 tools=[tool(env)], include=["file_search_call.results"])
    call = response.output[0]
    assert call.type == "file_search_call" and call.status == "completed"
    assert {r.file_id for r in call.results or []} <= set(env.file_ids.values())  # never the other store's file
    both_stores = {"type": "file_search", "vector_store_ids": [env.store_id, other.id]}
    both = await env.client.responses.create(model="call-agent", input=ask("Halley comet every 76 years"),
                                             tools=[both_stores], include=["file_search_call.results"])
    assert both.output[0].type == "file_search_call"
    assert (both.output[0].results or [])[0].file_id == moved.id


async def test_a_background_run_on_a_conversation_replays_its_tool_events(env: Env) -> None:
    """Background runs, conversations and resume-streaming across a multi-turn (tool, then answer) response."""
    conversation = await env.client.conversations.create()
    created = await env.client.responses.create(model="call-agent", input=ask("Etna eruptions"), tools=[tool(env)],
                                                background=True, conversation=conversation.id)
    assert created.status == "queued"
    for _ in range(2400):
        done = await env.client.responses.retrieve(created.id)
        if done.status not in ("queued", "in_progress"):
            break
        await asyncio.sleep(0.025)
    assert done.status == "completed", done.error
    assert [item.type for item in done.output] == ["file_search_call", "message"]
    cited = done.output[1].content[0].annotations  # type: ignore[union-attr]
    assert cited and cited[0].file_id == env.file_ids["volcano.md"]  # type: ignore[union-attr]
    assert done.usage is not None and done.usage.input_tokens > 0
    # The event log replays from after the third event: the tool's events, then the cited answer.
    replay = await env.client.responses.retrieve(created.id, stream=True, starting_after=2)
    events = [event async for event in replay]
    assert events[0].sequence_number == 3
    types = [event.type for event in events]
    assert [t for t in types if t.startswith("response.file_search_call.")] == [
        "response.file_search_call.in_progress", "response.file_search_call.searching",
        "response.file_search_call.completed"]
    assert "response.output_text.annotation.added" in types and types[-1] == "response.completed"
    # The conversation holds the call and the answer, and the next turn sees them.
    items = [item async for item in env.client.conversations.items.list(conversation.id, order="asc")]
    assert [item.type for item in items] == ["message", "file_search_call", "message"]
    await env.client.responses.create(model="call-agent", input="thanks", conversation=conversation.id,
                                      tools=[tool(env)])
    messages = env.upstream.requests[-1]["messages"]
    assert any(m["role"] == "tool" and "Etna" in m["content"] for m in messages)


FUNCTION = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}


async def test_tool_choice_none_allowed_tools_and_forced_apply_to_file_search(env: Env) -> None:
    # none: the search is not offered, so the model cannot call it.
    none = await env.client.responses.create(model="call-agent", input=ask("Etna"), tools=[tool(env)],
                                             tool_choice="none")
    assert [item.type for item in none.output] == ["message"] and not env.upstream.requests[-1].get("tools")
    # allowed_tools without file_search: only the function is offered.
    only_function = await env.client.responses.create(
        model="call-agent", input=ask("Etna"), tools=[tool(env), FUNCTION],  # type: ignore[list-item]
        tool_choice={"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "lookup"}]})
    offered = [t["function"]["name"] for t in env.upstream.requests[-1]["tools"]]
    assert offered == ["lookup"] and [item.type for item in only_function.output] == ["message"]
    # allowed_tools naming it: offered, and it runs.
    allowed = await env.client.responses.create(
        model="call-agent", input=ask("Etna"), tools=[tool(env), FUNCTION],  # type: ignore[list-item]
        tool_choice={"type": "allowed_tools", "mode": "auto", "tools": [{"type": "file_search"}]})
    assert [item.type for item in allowed.output] == ["file_search_call", "message"]
    # Forced ({"type": "file_search"}): the first turn only; the answer's turn is free again.
    forced = await env.client.responses.create(model="call-agent", input=ask("Etna"), tools=[tool(env)],
                                               tool_choice={"type": "file_search"})
    assert [item.type for item in forced.output] == ["file_search_call", "message"]
    first, second = env.upstream.requests[-2:]
    assert first["tool_choice"] == {"type": "function", "function": {"name": "file_search"}}
    assert second.get("tool_choice") in (None, "auto")
    assert forced.tool_choice.type == "file_search"  # type: ignore[union-attr]
    # Naming a built-in tool that is not in `tools` is a 400 naming the parameter.
    with pytest.raises(openai.BadRequestError) as missing:
        await env.client.responses.create(model="call-agent", input="x", tools=[FUNCTION],  # type: ignore[list-item]
                                          tool_choice={"type": "file_search"})
    assert missing.value.param == "tool_choice.type"
