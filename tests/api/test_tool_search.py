"""tool_search (issue 18): deferred tools are not offered up front; a server-run search loads the ones it finds for
the next turn (tool_search_call / tool_search_output items); a client-run search goes to the client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from parley.config import EmbeddedConfig, ModelConfig, Settings
from parley.schema.tools import ClientTool
from parley.testing.fake_agent import AgentUpstream
from parley.testing.in_process import InProcess, in_process
from parley.tools.tool_search import rank

EVENTS = TypeAdapter(ResponseStreamEvent)
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather for a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
           "defer_loading": True}
CRM = {"type": "namespace", "name": "crm", "description": "Customer records.", "tools": [
    {"type": "function", "name": "find_customer", "description": "Look a customer up by email.",
     "parameters": {"type": "object", "properties": {"email": {"type": "string"}}}, "defer_loading": True},
    {"type": "function", "name": "ping", "description": "Always there.", "parameters": {"type": "object"}},
]}
SEARCH = {"type": "tool_search"}


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[AgentUpstream]:
    upstream = AgentUpstream()
    await upstream.start()
    yield upstream
    await upstream.stop()


@pytest.fixture(scope="module")
async def app(fake: AgentUpstream, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcess]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("tool-search"), embedded=EmbeddedConfig(enabled=False),
                        models=[ModelConfig(id="agent", base_url=fake.base_url, upstream_model="call-agent")])
    async with in_process(settings) as running:
        yield running


@pytest.fixture(scope="module")
def sdk(app: InProcess) -> AsyncOpenAI:
    return app.sdk()


def _plan(*steps: tuple[str, dict[str, Any]]) -> str:
    return json.dumps([{"call": name, "arguments": arguments} for name, arguments in steps])


def _offered(request: dict[str, Any]) -> list[str]:
    return [tool["function"]["name"] for tool in request.get("tools") or ()]


async def test_server_search_loads_a_deferred_tool(sdk: AsyncOpenAI, fake: AgentUpstream) -> None:
    before = len(fake.requests)
    response = await sdk.responses.create(
        model="agent", tools=[WEATHER, CRM, SEARCH],  # type: ignore[list-item]
        input=_plan(("tool_search", {"query": "weather in a city"}), ("get_weather", {"city": "Oslo"})))
    first, second = fake.requests[before], fake.requests[before + 1]
    assert _offered(first) == ["crm__ping", "tool_search"]  # the deferred tools are not sent up front
    catalog = first["tools"][1]["function"]["description"]
    assert "- tools: get_weather" in catalog and "- crm (a group of tools): Customer records." in catalog
    assert "get_weather" in _offered(second)
    kinds = [item.type for item in response.output]
    assert kinds == ["tool_search_call", "tool_search_output", "function_call"]
    search, output, call = response.output
    assert search.type == "tool_search_call" and search.execution == "server" and search.status == "completed"
    assert search.arguments == {"query": "weather in a city"}
    assert output.type == "tool_search_output" and output.call_id == search.call_id
    assert [tool.name for tool in output.tools] == ["get_weather"]  # type: ignore[union-attr]
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.namespace == "get_weather"  # a deferred top-level function names itself, as OpenAI's calls do
    assert json.loads(call.arguments) == {"city": "Oslo"}
    # The client answers the call: the loaded tool is still offered on the next request of the chain.
    after = await sdk.responses.create(model="agent", previous_response_id=response.id, tools=[WEATHER, CRM, SEARCH],  # type: ignore[list-item]
                                       input=[{"type": "function_call_output", "call_id": call.call_id,
                                               "output": "sunny"}])
    assert after.output_text == "done: sunny"
    last = fake.requests[-1]
    assert "get_weather" in _offered(last) and "crm__find_customer" not in _offered(last)
    # The search went upstream as the call it was and what the model was told.
    sent = json.dumps(last["messages"])
    assert "These tools are loaded" in sent


async def test_namespace_members_come_back_grouped(app: InProcess) -> None:
    body = {"model": "agent", "tools": [WEATHER, CRM, SEARCH], "stream": True,
            "input": _plan(("tool_search", {"query": "customer email"}),
                           ("crm__find_customer", {"email": "a@b.c"}))}
    async with app.http.stream("POST", "/v1/responses", json=body) as resp:
        text = (await resp.aread()).decode()
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    for event in events:
        EVENTS.validate_python(event)
    final = Response.model_validate(events[-1]["response"])
    output = final.output[1]
    assert output.type == "tool_search_output"
    group = output.tools[0]
    assert group.type == "namespace" and group.name == "crm"
    assert [tool.name for tool in group.tools] == ["find_customer"]  # type: ignore[union-attr]
    call = final.output[2]
    assert call.type == "function_call" and call.name == "find_customer" and call.namespace == "crm"  # type: ignore[union-attr]


async def test_a_deferred_tool_is_not_callable_before_a_search(sdk: AsyncOpenAI) -> None:
    response = await sdk.responses.create(model="agent", tools=[WEATHER, SEARCH],  # type: ignore[list-item]
                                          input=_plan(("get_weather", {"city": "Oslo"})))
    assert response.output_text == "no such tool: get_weather"


async def test_client_search_round_trip(sdk: AsyncOpenAI, fake: AgentUpstream) -> None:
    search = {"type": "tool_search", "execution": "client", "description": "Find tools in my registry.",
              "parameters": {"type": "object", "properties": {"goal": {"type": "string"}}, "required": ["goal"]}}
    first = await sdk.responses.create(model="agent", tools=[search],  # type: ignore[list-item]
                                       input=_plan(("tool_search", {"goal": "dates"}), ("today", {})))
    offered = fake.requests[-1]["tools"][0]["function"]
    assert offered["description"] == "Find tools in my registry." and offered["parameters"] == search["parameters"]
    call = first.output[-1]
    assert call.type == "tool_search_call" and call.execution == "client" and call.arguments == {"goal": "dates"}
    assert first.status == "completed"
    today = {"type": "function", "name": "today", "description": "Today's date.", "parameters": {"type": "object"}}
    answer = {"type": "tool_search_output", "call_id": call.call_id, "execution": "client", "tools": [today]}
    second = await sdk.responses.create(model="agent", previous_response_id=first.id, tools=[search],  # type: ignore[list-item]
                                        input=[answer])  # type: ignore[list-item]
    assert "today" in _offered(fake.requests[-1])  # the tool the client loaded joined
    made = second.output[-1]
    assert made.type == "function_call" and made.name == "today"


@pytest.mark.parametrize(("tools", "param"), [
    ([WEATHER], "tools[0].defer_loading"),
    ([CRM], "tools[0].tools[0].defer_loading"),
    ([{"type": "tool_search", "execution": "elsewhere"}], "tools[0].execution"),
])
async def test_bad_declarations(app: InProcess, tools: list[dict[str, Any]], param: str) -> None:
    response = await app.http.post("/v1/responses", json={"model": "agent", "input": "x", "tools": tools})
    assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text


async def test_an_answer_without_its_search_is_refused(app: InProcess) -> None:
    answer = {"type": "tool_search_output", "call_id": "call_nope", "execution": "client", "tools": []}
    response = await app.http.post("/v1/responses", json={"model": "agent", "input": [answer]})
    assert response.status_code == 400 and response.json()["error"]["param"] == "input[0].call_id"


def test_ranking_prefers_names_and_exact_matches() -> None:
    tools = [ClientTool("function", "send_email", "send_email", description="Send a message."),
             ClientTool("function", "get_weather", "get_weather", description="Weather and email alerts."),
             ClientTool("function", "lookup", "lookup", description="Find anything.")]
    assert [t.name for t in rank(tools, "email", 5)] == ["send_email", "get_weather"]
    assert rank(tools, "lookup", 5)[0].name == "lookup"
    assert rank(tools, "zebra", 5) == []


@pytest.mark.parametrize(("tool", "param", "code"), [
    ({"type": "programmatic_tool_calling"}, "tools[0].type", "unsupported_tool"),
    ({"type": "mcp", "server_label": "x", "server_url": "https://example.com/mcp", "defer_loading": True},
     "tools[0].defer_loading", "unsupported_value"),
    ({**WEATHER, "defer_loading": False, "allowed_callers": ["programmatic"]}, "tools[0].allowed_callers",
     "unsupported_value"),
    ({**CRM, "tools": [{**CRM["tools"][1], "allowed_callers": ["programmatic"]}]},  # type: ignore[index]
     "tools[0].tools[0].allowed_callers", "unsupported_value"),
])
async def test_what_is_not_supported_says_so(app: InProcess, tool: dict[str, Any], param: str, code: str) -> None:
    response = await app.http.post("/v1/responses", json={"model": "agent", "input": "x", "tools": [tool]})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["code"] == code
    if code == "unsupported_tool":
        assert "programmatic_tool_calling" in error["message"]


async def test_loaded_tools_survive_conversations_and_resent_history(sdk: AsyncOpenAI, fake: AgentUpstream) -> None:
    conversation = await sdk.conversations.create()
    await sdk.responses.create(model="agent", conversation=conversation.id, tools=[WEATHER, SEARCH],  # type: ignore[list-item]
                               input=_plan(("tool_search", {"query": "weather"})))
    items = [item async for item in sdk.conversations.items.list(conversation.id, order="asc")]
    assert [item.type for item in items] == ["message", "tool_search_call", "tool_search_output", "message"]
    await sdk.responses.create(model="agent", conversation=conversation.id, tools=[WEATHER, SEARCH],  # type: ignore[list-item]
                               input="next")
    assert "get_weather" in _offered(fake.requests[-1])
    # store: false, the client resends the items: the same.
    first = await sdk.responses.create(model="agent", store=False, tools=[WEATHER, SEARCH],  # type: ignore[list-item]
                                       input=_plan(("tool_search", {"query": "weather"})))
    history = [item.model_dump(exclude_none=True) for item in first.output]
    await sdk.responses.create(model="agent", store=False, tools=[WEATHER, SEARCH],  # type: ignore[list-item]
                               input=[*history, {"role": "user", "content": "again"}])  # type: ignore[list-item]
    assert "get_weather" in _offered(fake.requests[-1])


async def test_a_namespace_member_named_as_its_namespace(sdk: AsyncOpenAI, fake: AgentUpstream) -> None:
    group = {"type": "namespace", "name": "notes", "description": "Notes.", "tools": [
        {"type": "function", "name": "notes", "description": "Read the notes.", "parameters": {"type": "object"}}]}
    first = await sdk.responses.create(model="agent", tools=[group],  # type: ignore[list-item]
                                       input=_plan(("notes", {})))
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "notes" and call.namespace == "notes"
    second = await sdk.responses.create(model="agent", previous_response_id=first.id, tools=[group],  # type: ignore[list-item]
                                        input=[{"type": "function_call_output", "call_id": call.call_id,
                                                "output": "none yet"}])
    assert second.output_text == "done: none yet"
    assert fake.requests[-1]["messages"][-2]["tool_calls"][0]["function"]["name"] == "notes"
