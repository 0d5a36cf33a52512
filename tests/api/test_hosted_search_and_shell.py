"""`tool_search` and container `shell` hosted by a native Responses upstream (issue 18): a model whose config lists
them in `hosted_tools` gets the tool entries as the client sent them (and, for tool_search, every deferred tool
marked `defer_loading`); the upstream's `tool_search_call` / `tool_search_output` and `shell_call` /
`shell_call_output` items and their events pass through unchanged into Parley's stream and storage, and go back to
the upstream verbatim along `previous_response_id` (the fake refuses a hosted item it did not make). Against the
fake Responses upstream over HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from parley.config import EmbeddedConfig, ModelConfig, Settings
from parley.testing.fake_responses_upstream import FakeResponsesUpstream
from parley.testing.in_process import InProcess, in_process, served

EVENTS = TypeAdapter(ResponseStreamEvent)
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.", "defer_loading": True,
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
CLOCK = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}
SHELL = {"type": "shell", "environment": {"type": "container_auto"}}


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeResponsesUpstream]:
    upstream = FakeResponsesUpstream()
    await upstream.start()
    yield upstream
    await upstream.stop()


@pytest.fixture(scope="module")
async def app(fake: FakeResponsesUpstream, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcess]:
    models = [
        ModelConfig(id="searcher", provider="openai_responses", base_url=fake.base_url, upstream_model="tool-search",
                    hosted_tools=["tool_search"]),
        ModelConfig(id="sheller", provider="openai_responses", base_url=fake.base_url,
                    upstream_model="container-shell", hosted_tools=["shell"]),
    ]
    settings = Settings(data_dir=tmp_path_factory.mktemp("hosted"), embedded=EmbeddedConfig(enabled=False),
                        models=models)
    async with in_process(settings) as running:
        yield running


async def _stream(app: InProcess, body: dict[str, Any]) -> list[dict[str, Any]]:
    async with app.http.stream("POST", "/v1/responses", json={**body, "stream": True}) as resp:
        assert resp.status_code == 200, await resp.aread()
        text = (await resp.aread()).decode()
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    for event in events:
        EVENTS.validate_python(event)
    return events


async def test_a_hosted_tool_search_passes_through(app: InProcess, fake: FakeResponsesUpstream) -> None:
    events = await _stream(app, {"model": "searcher", "input": "find get_weather",
                                 "tools": [{"type": "tool_search"}, WEATHER, CLOCK]})
    sent = fake.requests[-1]
    # The entry as sent, and the deferred tool too (the upstream searches it), marked so.
    assert {"type": "tool_search"} in sent["tools"]
    by_name = {t.get("name"): t for t in sent["tools"] if t["type"] == "function"}
    assert by_name["get_weather"]["defer_loading"] is True and "defer_loading" not in by_name["get_time"]
    final = Response.model_validate(events[-1]["response"])
    assert [item.type for item in final.output] == ["tool_search_call", "tool_search_output", "function_call"]
    search, found, call = final.output
    assert search.type == "tool_search_call" and search.arguments == {"query": "find get_weather"}
    assert search.execution == "server" and search.id != "tsc_fake"  # a Parley id, the upstream's kept aside
    assert found.type == "tool_search_output" and [t.name for t in found.tools] == ["get_weather"]  # type: ignore[union-attr]
    assert call.type == "function_call" and call.name == "get_weather"
    added = [e["item"]["type"] for e in events if e["type"] == "response.output_item.added"]
    assert added == ["tool_search_call", "tool_search_output", "function_call"]
    # The next turn: the upstream gets its own items back verbatim (it refuses others) and answers the call.
    second = await app.sdk().responses.create(
        model="searcher", previous_response_id=final.id, tools=[{"type": "tool_search"}, WEATHER, CLOCK],  # type: ignore[list-item]
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert second.output_text == "done: sunny"
    back = [item for item in fake.requests[-1]["input"] if item.get("type", "").startswith("tool_search")]
    assert [(item["type"], item["id"]) for item in back] == [("tool_search_call", "tsc_fake"),
                                                             ("tool_search_output", "tso_fake")]
    stored = (await app.http.get(f"/v1/responses/{final.id}")).json()
    assert [item["type"] for item in stored["output"]] == ["tool_search_call", "tool_search_output", "function_call"]
    assert "upstream" not in json.dumps(stored)


async def test_a_hosted_container_shell_passes_through(app: InProcess, fake: FakeResponsesUpstream) -> None:
    events = await _stream(app, {"model": "sheller", "input": "echo hi", "tools": [SHELL]})
    assert fake.requests[-1]["tools"] == [SHELL]
    kinds = [e["type"] for e in events]
    assert kinds.count("response.shell_call_command.added") == 1
    deltas = [e for e in events if e["type"] == "response.shell_call_output_content.delta"]
    assert [e["delta"] for e in deltas] == [{"stdout": "hi\n"}]
    done = next(e for e in events if e["type"] == "response.shell_call_output_content.done")
    assert done["output"] == [{"stdout": "hi\n", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}]
    final = Response.model_validate(events[-1]["response"])
    assert [item.type for item in final.output] == ["shell_call", "shell_call_output", "message"]
    call, output, _ = final.output
    assert call.type == "shell_call" and call.action.commands == ["echo hi"]
    assert call.environment is not None and call.environment.container_id == "cntr_upstream"  # type: ignore[union-attr]
    assert output.type == "shell_call_output" and output.output[0].stdout == "hi\n"
    assert deltas[0]["item_id"] == output.id and final.output_text == "ran: hi\n"
    # Parley made no container of its own: the upstream ran the command.
    assert [c async for c in app.sdk().containers.list()] == []
    again = await app.sdk().responses.create(model="sheller", previous_response_id=final.id, input="thanks",
                                             tools=[SHELL])  # type: ignore[list-item]
    assert again.output_text == "echo: thanks"
    back = [(item["type"], item["id"]) for item in fake.requests[-1]["input"]
            if item.get("type", "").startswith("shell")]
    assert back == [("shell_call", "sh_fake"), ("shell_call_output", "sho_fake")]
    listed = (await app.http.get(f"/v1/responses/{final.id}/input_items")).json()
    assert listed["data"][0]["type"] == "message"


async def test_a_hosted_shell_takes_the_upstreams_container_ids(app: InProcess) -> None:
    """A container_reference names the upstream's container: Parley does not look it up among its own."""
    tool = {"type": "shell", "environment": {"type": "container_reference", "container_id": "cntr_upstream"}}
    response = await app.http.post("/v1/responses", json={"model": "sheller", "input": "echo x", "tools": [tool]})
    assert response.status_code == 200, response.text
    assert [item["type"] for item in response.json()["output"]] == ["shell_call", "shell_call_output", "message"]


async def test_a_hosted_items_events_pass_through_as_they_come(fake: FakeResponsesUpstream,
                                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    """The upstream holds its shell_call_output open after its first output delta (until the test releases it):
    the client already has the item's `output_item.added` and that delta, not yet its `output_item.done`."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("hosted-live"), embedded=EmbeddedConfig(enabled=False),
                        models=[ModelConfig(id="sheller", provider="openai_responses", base_url=fake.base_url,
                                            upstream_model="container-shell", hosted_tools=["shell"])])
    events: list[dict[str, Any]] = []
    saw_delta = asyncio.Event()

    async def read(base_url: str) -> None:
        body = {"model": "sheller", "input": "echo live", "tools": [SHELL], "stream": True}
        async with httpx.AsyncClient(base_url=base_url, timeout=120) as client, \
                client.stream("POST", "/responses", json=body) as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data: {"):
                    event = json.loads(line[6:])
                    EVENTS.validate_python(event)
                    events.append(event)
                    if event["type"] == "response.shell_call_output_content.delta":
                        saw_delta.set()

    fake.hold, fake.held = asyncio.Event(), asyncio.Event()
    try:
        async with served(settings) as server:
            reader = asyncio.ensure_future(read(server.base_url))
            await fake.held.wait()
            await asyncio.wait_for(saw_delta.wait(), 60)  # a bound on a hang, not a timing assertion
            shown = [(e["type"], e.get("item", {}).get("type")) for e in events]
            assert ("response.output_item.added", "shell_call_output") in shown
            assert ("response.output_item.done", "shell_call_output") not in shown
            fake.hold.set()
            await reader
    finally:
        fake.hold = None
    assert events[-1]["type"] == "response.completed"
    output = Response.model_validate(events[-1]["response"]).output[1]
    assert output.type == "shell_call_output" and output.output[0].stdout == "live\n"


async def test_a_hosted_item_cut_off_by_a_client_that_leaves_is_stored_incomplete(
        fake: FakeResponsesUpstream, tmp_path_factory: pytest.TempPathFactory) -> None:
    settings = Settings(data_dir=tmp_path_factory.mktemp("hosted-cut"), embedded=EmbeddedConfig(enabled=False),
                        models=[ModelConfig(id="sheller", provider="openai_responses", base_url=fake.base_url,
                                            upstream_model="container-shell", hosted_tools=["shell"])])
    fake.hold, fake.held = asyncio.Event(), asyncio.Event()
    response_id = ""
    try:
        async with served(settings) as server, httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
            body = {"model": "sheller", "input": "echo cut", "tools": [SHELL], "stream": True}
            async with client.stream("POST", "/responses", json=body) as resp:
                async for line in resp.aiter_lines():
                    if line.startswith("data: {"):
                        event = json.loads(line[6:])
                        response_id = response_id or event.get("response", {}).get("id", "")
                        if event["type"] == "response.shell_call_output_content.delta":
                            break  # the client leaves while the upstream's output item is open
            stored: dict[str, Any] = {}
            for _ in range(4000):  # a bound on the wait, not a timing assertion
                stored = (await client.get(f"/responses/{response_id}")).json()
                if stored.get("status") == "cancelled":
                    break
                await asyncio.sleep(0.025)
    finally:
        fake.hold.set()
        fake.hold = None
    assert stored["status"] == "cancelled"
    assert [(item["type"], item["status"]) for item in stored["output"]] == [
        ("shell_call", "completed"), ("shell_call_output", "incomplete")]


async def test_a_store_false_client_resends_the_hosted_items_as_they_are(app: InProcess,
                                                                         fake: FakeResponsesUpstream) -> None:
    """Without stored state, the client's copies of the hosted items go back to the hosting upstream as those items
    (without Parley's ids), not as the function call and output they would be for another model."""
    sdk = app.sdk()
    first = await sdk.responses.create(model="sheller", input="echo again", tools=[SHELL], store=False)  # type: ignore[list-item]
    assert [item.type for item in first.output] == ["shell_call", "shell_call_output", "message"]
    history: Any = [item.model_dump(exclude_none=True) for item in first.output]
    second = await sdk.responses.create(model="sheller", tools=[SHELL], store=False,  # type: ignore[list-item]
                                        input=[*history, {"role": "user", "content": "thanks"}])
    assert second.output_text == "echo: thanks"
    sent = fake.requests[-1]["input"]
    call, output = [item for item in sent if item.get("type", "").startswith("shell")]
    assert call["type"] == "shell_call" and "id" not in call and call["action"]["commands"] == ["echo again"]
    assert output["type"] == "shell_call_output" and "id" not in output
    assert output["output"][0]["stdout"] == "again\n" and output["call_id"] == call["call_id"]
    assert not any(item.get("type") == "function_call" for item in sent)


async def test_a_hosted_tool_search_gets_namespaces_as_namespace_tools(app: InProcess,
                                                                      fake: FakeResponsesUpstream) -> None:
    """Namespace members go to an upstream hosting tool_search in their `namespace` tool (the openai types allow
    deferred functions in one), not as flattened `crm__find_customer` functions: its search loads the namespace
    and its model calls the member by name and namespace, and the call goes back so."""
    crm = {"type": "namespace", "name": "crm", "description": "Customer records.", "tools": [
        {"type": "function", "name": "find_customer", "description": "Look a customer up by email.",
         "parameters": {"type": "object", "properties": {"email": {"type": "string"}}}, "defer_loading": True},
        {"type": "function", "name": "ping", "description": "Always there.", "parameters": {"type": "object"}}]}
    tools: Any = [{"type": "tool_search"}, crm, CLOCK]
    first = await app.sdk().responses.create(model="searcher", input="find find_customer", tools=tools)
    sent = fake.requests[-1]["tools"]
    assert sent[0] == {"type": "namespace", "name": "crm", "description": "Customer records.", "tools": [
        {"type": "function", "name": "find_customer", "description": "Look a customer up by email.",
         "parameters": {"type": "object", "properties": {"email": {"type": "string"}}}, "strict": None,
         "defer_loading": True},
        {"type": "function", "name": "ping", "description": "Always there.", "parameters": {"type": "object"},
         "strict": None}]}
    assert [tool["type"] for tool in sent[1:]] == ["function", "tool_search"]
    assert [item.type for item in first.output] == ["tool_search_call", "tool_search_output", "function_call"]
    found, call = first.output[1], first.output[2]
    assert found.type == "tool_search_output" and found.tools[0].type == "namespace"
    assert call.type == "function_call" and (call.namespace, call.name) == ("crm", "find_customer")
    second = await app.sdk().responses.create(
        model="searcher", previous_response_id=first.id, tools=tools,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "ada@example.com"}])
    assert second.output_text == "done: ada@example.com"
    back = next(item for item in fake.requests[-1]["input"] if item.get("type") == "function_call")
    assert (back["name"], back["namespace"]) == ("find_customer", "crm")
