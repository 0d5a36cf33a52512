"""The `mcp` tool through the official SDK (in-process app, a fake agent model upstream, and a real MCP server
built with the `mcp` SDK on loopback over streamable HTTP, SSE and stdio): its items and events, streaming and
not; tool lists reused along chains, conversations and resent history; failures as failed items; approvals in
both continuation styles; operator-declared servers; request validation and the SSRF guard."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter
from tests.waiting import LIMIT_S

from parley.config import EmbeddedConfig, FetchConfig, McpConfig, McpServerConfig, ModelConfig, Settings
from parley.testing.in_process import in_process
from parley.testing.mcp_agent import McpAgentUpstream
from parley.testing.mcp_server import TOKEN, McpTestServer, serving

EVENTS = TypeAdapter(ResponseStreamEvent)
MODEL = "mcp-agent"
STDIO = [sys.executable, "-m", "parley.testing.mcp_server", "--stdio"]
TOKEN_ENV = "PARLEY_TEST_MCP_TOKEN"


@dataclass
class Env:
    sdk: AsyncOpenAI
    strict: AsyncOpenAI  # default SSRF guard: loopback refused
    closed: AsyncOpenAI  # [mcp] client_servers = false
    upstream: McpAgentUpstream
    server: McpTestServer

    def tool(self, path: str = "/mcp", **fields: Any) -> dict[str, Any]:
        return {"type": "mcp", "server_label": "srv", "server_url": self.server.url(path), **fields}

    def offered(self, request: int = -1) -> dict[str, dict[str, Any]]:
        """The functions the model was offered in an upstream request."""
        return {t["function"]["name"]: t["function"] for t in self.upstream.requests[request].get("tools") or ()}

    def tool_results(self, request: int = -1) -> list[str]:
        return [m["content"] for m in self.upstream.requests[request]["messages"] if m["role"] == "tool"]


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    upstream = McpAgentUpstream()
    await upstream.start()
    os.environ[TOKEN_ENV] = f"Bearer {TOKEN}"
    models = [ModelConfig(id=MODEL, base_url=upstream.base_url)]
    async with serving() as server:
        # The stdio server's process starts in ~0.5 s: its own time limit, not the 1 s of [mcp] here.
        declared = [McpServerConfig(label="local", command=STDIO, description="a local test server", timeout_s=20),
                    McpServerConfig(label="vault", url=server.url("/private/mcp"),
                                    headers_env={"Authorization": TOKEN_ENV})]

        def settings(name: str, **fields: Any) -> Settings:
            return Settings(data_dir=tmp_path_factory.mktemp(name), models=models,
                            embedded=EmbeddedConfig(enabled=False), **fields)

        main = settings("mcp", fetch=FetchConfig(allow=["127.0.0.1/32"]), mcp=McpConfig(timeout_s=1.0),
                        mcp_servers=declared)
        async with in_process(main) as app, in_process(settings("mcp-strict")) as strict, \
                in_process(settings("mcp-closed", mcp=McpConfig(client_servers=False))) as closed:
            yield Env(app.sdk(), strict.sdk(), closed.sdk(), upstream, server)
    os.environ.pop(TOKEN_ENV, None)
    await upstream.stop()


def steps(*turns: list[tuple[str, dict[str, Any]]]) -> str:
    """The mcp-agent's prompt: one list of (function, arguments) per model turn."""
    return json.dumps([[{"call": name, "arguments": arguments} for name, arguments in turn] for turn in turns])


async def _stream(sdk: AsyncOpenAI, **request: Any) -> list[dict[str, Any]]:
    events = [e.model_dump(exclude_none=True) async for e in await sdk.responses.create(stream=True, **request)]
    for event in events:
        EVENTS.validate_python(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    Response.model_validate(final)
    # Every item the stream finished is the final response's item at that index.
    for event in events:
        if event["type"] == "response.output_item.done":
            assert final["output"][event["output_index"]] == event["item"]
    return events


def _item_events(events: list[dict[str, Any]], index: int) -> list[str]:
    return [e["type"] for e in events if e.get("output_index") == index and "content_index" not in e]


async def test_a_call_streams_its_items_and_events(env: Env) -> None:
    lists = env.server.stats.list_calls
    events = await _stream(env.sdk, model=MODEL, input=steps([("srv__add", {"a": 2, "b": 40})]),
                           tools=[env.tool(require_approval="never")])
    assert _item_events(events, 0) == ["response.output_item.added", "response.mcp_list_tools.in_progress",
                                       "response.mcp_list_tools.completed", "response.output_item.done"]
    assert _item_events(events, 1) == [
        "response.output_item.added", "response.mcp_call.in_progress", "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done", "response.mcp_call.completed", "response.output_item.done"]
    added = next(e for e in events if e["type"] == "response.output_item.added" and e["output_index"] == 1)
    assert (added["item"]["status"] == "in_progress" and added["item"]["arguments"] == '{"a":40,"b":2}') or \
        json.loads(added["item"]["arguments"]) == {"a": 2, "b": 40}
    args_done = next(e for e in events if e["type"] == "response.mcp_call_arguments.done")
    assert json.loads(args_done["arguments"]) == {"a": 2, "b": 40}
    final = events[-1]["response"]
    listing, call, message = final["output"]
    assert listing["type"] == "mcp_list_tools" and listing["server_label"] == "srv"
    assert listing["id"].startswith("mcpl_")
    assert {t["name"] for t in listing["tools"]} >= {"add", "distance", "hang"}
    assert call["type"] == "mcp_call" and call["id"].startswith("mcp_") and call["server_label"] == "srv"
    assert call["name"] == "add" and call["output"] == "42" and call["status"] == "completed"
    assert message["content"][0]["text"] == "done: 42"
    assert env.server.stats.list_calls >= lists + 1


async def test_non_streaming_retrieve_and_the_offered_functions(env: Env) -> None:
    point = {"p": {"x": 0, "y": 0}, "q": {"x": 3, "y": 4}}
    response = await env.sdk.responses.create(
        model=MODEL, input=steps([("srv__distance", point)]),
        tools=[env.tool(require_approval="never", server_description="geometry", allowed_tools=["distance", "add"])])
    assert [item.type for item in response.output] == ["mcp_list_tools", "mcp_call", "message"]
    assert response.output[1].output == "5.0" and response.output_text == "done: 5.0"  # type: ignore[union-attr]
    offered = env.offered(0 - 2)  # the first model turn of this response
    assert set(offered) == {"srv__distance", "srv__add"}  # allowed_tools
    schema = offered["srv__distance"]["parameters"]
    assert schema["properties"]["p"] == {"$ref": "#/$defs/Point"} and schema["$defs"]["Point"]["type"] == "object"
    assert "geometry" in offered["srv__distance"]["description"]
    fetched = await env.sdk.responses.retrieve(response.id)
    assert fetched.model_dump()["output"] == response.model_dump()["output"]
    # read_only filter: only the tools annotated readOnlyHint.
    await env.sdk.responses.create(model=MODEL, input="hi", tools=[env.tool(allowed_tools={"read_only": True})])
    assert set(env.offered()) == {"srv__add", "srv__echo", "srv__distance"}


async def test_a_tool_list_is_reused_along_chains_conversations_and_resent_history(env: Env) -> None:
    # (The SDK's client lists a server's tools once per session before it checks a call's structured output,
    # so tools/list requests are counted around responses that make no call.)
    tool = env.tool(require_approval="never")
    first = await env.sdk.responses.create(model=MODEL, input=steps([("srv__echo", {"text": "one"})]), tools=[tool])
    lists = env.server.stats.list_calls
    plain = await env.sdk.responses.create(model=MODEL, previous_response_id=first.id, tools=[tool], input="hi")
    assert [item.type for item in plain.output] == ["message"] and env.server.stats.list_calls == lists
    assert "srv__echo" in env.offered()  # offered from the reused list
    chained = await env.sdk.responses.create(model=MODEL, previous_response_id=plain.id, tools=[tool],
                                             input=steps([("srv__echo", {"text": "two"})]))
    assert [item.type for item in chained.output] == ["mcp_call", "message"]
    resent = [item.model_dump(exclude_none=True) for item in first.output]
    history = await env.sdk.responses.create(
        model=MODEL, store=False, tools=[tool],
        input=[{"role": "user", "content": "earlier"}, *resent,
               {"role": "user", "content": steps([("srv__echo", {"text": "three"})])}])
    assert [item.type for item in history.output] == ["mcp_call", "message"]
    conversation = await env.sdk.conversations.create()
    lists = env.server.stats.list_calls
    opening = await env.sdk.responses.create(model=MODEL, conversation=conversation.id, tools=[tool], input="hello")
    assert [item.type for item in opening.output] == ["mcp_list_tools", "message"]  # the conversation's first use
    assert env.server.stats.list_calls == lists + 1
    await env.sdk.responses.create(model=MODEL, conversation=conversation.id, tools=[tool], input="again")
    assert env.server.stats.list_calls == lists + 1
    again = await env.sdk.responses.create(model=MODEL, conversation=conversation.id, tools=[tool],
                                           input=steps([("srv__echo", {"text": "four"})]))
    assert [item.type for item in again.output] == ["mcp_call", "message"]
    # A later turn sees the earlier calls as the function calls they were, with their results.
    messages = env.upstream.requests[-1]["messages"]
    called = [c["function"]["name"] for m in messages for c in m.get("tool_calls") or ()]
    assert called == ["srv__echo"]
    listed = await env.sdk.conversations.items.list(conversation.id)
    assert "mcp_list_tools" in [item.type for item in listed.data]


async def test_a_failed_listing_is_a_failed_item_and_the_response_goes_on(env: Env) -> None:
    events = await _stream(env.sdk, model=MODEL, input="hello", tools=[env.tool("/private/mcp")])
    assert _item_events(events, 0) == ["response.output_item.added", "response.mcp_list_tools.in_progress",
                                       "response.mcp_list_tools.failed", "response.output_item.done"]
    final = events[-1]["response"]
    assert final["status"] == "completed"
    listing = final["output"][0]
    assert listing["tools"] == [] and "HTTP 401" in listing["error"]
    assert env.offered() == {}
    assert final["output"][1]["content"][0]["text"] == "echo: hello"


async def test_failures_are_failed_calls_with_the_sdk_error_shapes(env: Env) -> None:
    tool = env.tool(require_approval="never")
    # srv__hang sleeps an hour: only the call's timeout ([mcp] timeout_s = 1) can end it. The deadline fails a call
    # that never ends instead of hanging the suite; it times nothing.
    async with asyncio.timeout(LIMIT_S):
        events = await _stream(env.sdk, model=MODEL, tools=[tool], input=steps(
            [("srv__fail", {"reason": "disk full"}), ("srv__protocol_error", {}), ("srv__hang", {})]))
    final = events[-1]["response"]
    failed, protocol, hung = final["output"][1:4]
    assert failed["status"] == "failed" and failed["error"]["type"] == "mcp_tool_execution_error"
    assert "disk full" in failed["error"]["content"][0]["text"]
    assert protocol["error"] == {"type": "mcp_protocol_error", "code": -32602, "message": "bad parameters"}
    assert hung["error"]["type"] == "mcp_protocol_error" and hung["error"]["code"] == -32001
    for index in (1, 2, 3):
        assert _item_events(events, index)[-2:] == ["response.mcp_call.failed", "response.output_item.done"]
    assert final["status"] == "completed"
    results = env.tool_results()
    assert "disk full" in results[0] and "-32602" in results[1] and "-32001" in results[2]
    # An HTTP error on a call: a tool list reused from history, a server that refuses this request.
    listing = {"type": "mcp_list_tools", "id": "mcpl_resent", "server_label": "srv",
               "tools": [{"name": "whoami", "input_schema": {"type": "object", "properties": {}}}]}
    refused = await env.sdk.responses.create(
        model=MODEL, tools=[env.tool("/private/mcp", require_approval="never")],
        input=[listing, {"role": "user", "content": steps([("srv__whoami", {})])}])
    call = refused.output[0].model_dump()
    assert call["type"] == "mcp_call" and call["status"] == "failed"
    assert call["error"]["type"] == "http_error" and call["error"]["code"] == 401


@pytest.mark.parametrize("path", ["/private/mcp", "/private/sse"])
async def test_headers_and_authorization_reach_the_server(env: Env, path: str) -> None:
    response = await env.sdk.responses.create(
        model=MODEL, input=steps([("srv__whoami", {})]),
        tools=[env.tool(path, authorization=TOKEN, headers={"X-Test": "from-client"}, require_approval="never")])
    assert response.output[1].output == f"authorization=Bearer {TOKEN} x-test=from-client"  # type: ignore[union-attr]


async def test_approval_with_previous_response_id(env: Env) -> None:
    tool = env.tool()  # require_approval defaults to "always"
    calls = len(env.server.stats.calls)
    first = await _stream(env.sdk, model=MODEL, tools=[tool],
                          input=steps([("srv__write_note", {"text": "hello"})], [("srv__echo", {"text": "x"})]))
    final = first[-1]["response"]
    assert final["status"] == "completed"
    request = final["output"][1]
    assert request["type"] == "mcp_approval_request" and request["name"] == "write_note"
    assert json.loads(request["arguments"]) == {"text": "hello"}
    assert _item_events(first, 1) == ["response.output_item.added", "response.output_item.done"]
    assert len(env.server.stats.calls) == calls  # not made
    approval = {"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": True}
    second = await _stream(env.sdk, model=MODEL, tools=[tool], previous_response_id=final["id"], input=[approval])
    output = second[-1]["response"]["output"]
    assert output[0]["type"] == "mcp_call" and output[0]["approval_request_id"] == request["id"]
    assert output[0]["output"] == "saved: hello"
    assert _item_events(second, 0)[1:5] == ["response.mcp_call.in_progress", "response.mcp_call_arguments.delta",
                                            "response.mcp_call_arguments.done", "response.mcp_call.completed"]
    # The model went on to its next step, which needs approval again.
    assert output[1]["type"] == "mcp_approval_request" and output[1]["name"] == "echo"
    assert env.server.stats.calls[calls:] == [("write_note", {"text": "hello"})]
    # The model saw the approved call once, with its result, before its first turn of this response.
    assert env.tool_results() == ["saved: hello"]
    # The approval is an input item of the second response.
    items = await env.sdk.responses.input_items.list(second[-1]["response"]["id"])
    assert [item.type for item in items.data] == ["mcp_approval_response"]
    # Answering it again does nothing twice.
    again = await env.sdk.responses.create(model=MODEL, tools=[tool], previous_response_id=second[-1]["response"]["id"],
                                           input=[approval])
    assert "mcp_call" not in [item.type for item in again.output]


async def test_denial_with_previous_response_id(env: Env) -> None:
    tool = env.tool(require_approval={"never": {"read_only": True}})
    calls = len(env.server.stats.calls)
    prompt = steps([("srv__write_note", {"text": "x"}), ("srv__add", {"a": 1, "b": 2})])
    first = await env.sdk.responses.create(model=MODEL, tools=[tool], input=prompt)
    # add is read-only: it runs; write_note waits for approval.
    assert [item.type for item in first.output] == ["mcp_list_tools", "mcp_approval_request", "mcp_call"]
    request = first.output[1]
    denied = await env.sdk.responses.create(model=MODEL, tools=[tool], previous_response_id=first.id, input=[
        {"type": "mcp_approval_response", "approval_request_id": request.id, "approve": False, "reason": "no"}])
    assert [item.type for item in denied.output] == ["message"]
    assert env.server.stats.calls[calls:] == [("add", {"a": 1, "b": 2})]  # write_note was never made
    results = env.tool_results()
    assert "denied" in results[0] and "no" in results[0] and results[1] == "3"


async def test_approval_with_the_full_history_resent(env: Env) -> None:
    tool = env.tool()
    prompt = {"role": "user", "content": steps([("srv__add", {"a": 5, "b": 5})])}
    first = await env.sdk.responses.create(model=MODEL, tools=[tool], store=False, input=[prompt])
    lists = env.server.stats.list_calls
    history = [prompt, *(item.model_dump(exclude_none=True) for item in first.output)]
    request = history[-1]
    assert request["type"] == "mcp_approval_request"
    approval = {"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": True}
    second = await env.sdk.responses.create(model=MODEL, tools=[tool], store=False, input=[*history, approval])
    assert [item.type for item in second.output] == ["mcp_call", "message"]
    assert second.output[0].approval_request_id == request["id"]  # type: ignore[union-attr]
    assert second.output_text == "done: 10"
    # The resent list was reused (no item); at most the SDK client's own listing before it checks the output.
    assert env.server.stats.list_calls <= lists + 1
    # The whole history again, with the call: it is not made a second time.
    third = await env.sdk.responses.create(model=MODEL, tools=[tool], store=False, input=[
        *history, approval, *(item.model_dump(exclude_none=True) for item in second.output),
        {"role": "user", "content": "thanks"}])
    assert [item.type for item in third.output] == ["message"]


async def test_max_tool_calls_counts_mcp_calls(env: Env) -> None:
    response = await env.sdk.responses.create(
        model=MODEL, max_tool_calls=1, tools=[env.tool(require_approval="never")],
        input=steps([("srv__echo", {"text": "a"}), ("srv__echo", {"text": "b"})]))
    assert [item.type for item in response.output] == ["mcp_list_tools", "mcp_call", "message"]
    assert env.offered() == {}  # no call left: the next turn is offered no MCP tool


async def test_operator_declared_servers(env: Env) -> None:
    def declared(label: str) -> list[Any]:
        return [{"type": "mcp", "server_label": label, "require_approval": "never"}]

    local = await env.sdk.responses.create(model=MODEL, input=steps([("local__add", {"a": 20, "b": 22})]),
                                           tools=declared("local"))
    assert [item.type for item in local.output] == ["mcp_list_tools", "mcp_call", "message"]
    assert local.output_text == "done: 42"
    assert "a local test server" in env.offered(-2)["local__add"]["description"]
    vault = await env.sdk.responses.create(model=MODEL, input=steps([("vault__whoami", {})]), tools=declared("vault"))
    assert vault.output[1].output == f"authorization=Bearer {TOKEN} x-test=None"  # type: ignore[union-attr]


async def _error(sdk: AsyncOpenAI, **request: Any) -> dict[str, Any]:
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.responses.create(model=MODEL, **request)
    body: dict[str, Any] = caught.value.body  # type: ignore[assignment]
    return body


@pytest.mark.parametrize(("tool", "param", "code"), [
    ({"server_label": "x", "connector_id": "connector_gmail"}, "tools[0].connector_id", "unsupported_value"),
    ({"server_label": "x", "tunnel_id": "tun_1"}, "tools[0].tunnel_id", "unsupported_value"),
    ({"server_label": "unknown"}, "tools[0].server_url", "missing_required_parameter"),
    ({"server_label": "x", "server_url": "file:///etc/passwd"}, "tools[0].server_url", "invalid_value"),
    ({"server_label": "x", "server_url": "http://h/mcp", "headers": {"Bad Name": "v"}}, "tools[0].headers",
     "invalid_value"),
    ({"server_label": "x", "server_url": "http://h/mcp", "require_approval": "maybe"}, "tools[0].require_approval",
     "invalid_value"),
])
async def test_invalid_tool_entries(env: Env, tool: dict[str, Any], param: str, code: str) -> None:
    body = await _error(env.sdk, input="hi", tools=[{"type": "mcp", **tool}])
    assert body["param"] == param and body["code"] == code, body


async def test_request_level_refusals(env: Env) -> None:
    tool = env.tool()
    refused = await _error(env.strict, input="hi", tools=[tool])
    assert refused["code"] == "url_refused" and refused["param"] == "tools[0].server_url"
    assert "loopback" in refused["message"]
    closed = await _error(env.closed, input="hi", tools=[tool])
    assert closed["param"] == "tools[0].server_url" and closed["code"] == "unsupported_value"
    twice = await _error(env.sdk, input="hi", tools=[tool, tool])
    assert twice["param"] == "tools"
    unknown = await _error(env.sdk, input=[{"type": "mcp_approval_response", "approval_request_id": "mcpr_nope",
                                            "approve": True}], tools=[tool])
    assert unknown["param"] == "input[0].approval_request_id"
    bad_item = await _error(env.sdk, input=[{"type": "mcp_approval_response", "approval_request_id": "mcpr_x",
                                             "approve": "yes"}], tools=[tool])
    assert bad_item["param"] == "input[0].approve"


async def test_tool_choice_names_an_mcp_server_or_one_of_its_tools(env: Env) -> None:
    tool = env.tool(require_approval="never")
    fn = {"type": "function", "name": "fn", "parameters": {"type": "object", "properties": {}}}
    # One tool of the server: forced as its function on the first turn (later turns are auto).
    named = await env.sdk.responses.create(model=MODEL, input=steps([("srv__add", {"a": 1, "b": 2})]), tools=[tool],
                                           tool_choice={"type": "mcp", "server_label": "srv", "name": "add"})
    assert [item.type for item in named.output] == ["mcp_list_tools", "mcp_call", "message"]
    assert env.upstream.requests[-2]["tool_choice"] == {"type": "function", "function": {"name": "srv__add"}}
    assert env.upstream.requests[-1]["tool_choice"] == "auto"
    assert named.tool_choice.model_dump(exclude_none=True) == {"type": "mcp", "server_label": "srv", "name": "add"}
    # Any tool of the server: a call is required, and it must be one of the server's.
    listed = named.output[0].model_dump()
    anyone = await env.sdk.responses.create(model=MODEL, input=steps([("srv__echo", {"text": "x"})]),
                                            tools=[tool, fn], tool_choice={"type": "mcp", "server_label": "srv"},
                                            previous_response_id=named.id)
    assert anyone.status == "completed" and anyone.output[0].type == "mcp_call"  # the chain's tool list reused
    assert env.upstream.requests[-2]["tool_choice"] == "required" and listed["tools"]
    with pytest.raises(openai.APIStatusError) as caught:  # an upstream that ignored the choice: not a success
        await env.sdk.responses.create(model=MODEL, input=steps([("fn", {})]), tools=[tool, fn],
                                       tool_choice={"type": "mcp", "server_label": "srv"})
    assert caught.value.status_code == 502 and "MCP server's tools" in caught.value.message
    # allowed_tools naming a server: only its tools are offered.
    await env.sdk.responses.create(model=MODEL, input="hi", tools=[fn, env.tool(allowed_tools=["add", "echo"])],
                                   tool_choice={"type": "allowed_tools", "mode": "auto",
                                                "tools": [{"type": "mcp", "server_label": "srv"}]})
    assert set(env.offered()) == {"srv__add", "srv__echo"}
    # A tool the server does not offer, a server the request lacks, a label that is not a string.
    for choice, param in [({"type": "mcp", "server_label": "srv", "name": "nope"}, "tool_choice.name"),
                          ({"type": "mcp", "server_label": "other"}, "tool_choice.server_label"),
                          ({"type": "mcp", "server_label": 7}, "tool_choice.server_label"),
                          ({"type": "allowed_tools", "mode": "required",
                            "tools": [{"type": "mcp", "server_label": "srv", "name": "hidden"}]},
                           "tool_choice.tools[0].name")]:
        body = await _error(env.sdk, input="hi", tools=[env.tool(allowed_tools=["add"])], tool_choice=choice)
        assert body["param"] == param, (choice, body)


async def test_a_tool_choice_no_tool_can_meet_is_refused_before_the_model_is_asked(env: Env) -> None:
    # The server's listing failed (HTTP 401): the choice cannot be met. It was a model turn, then a 502 blaming the
    # model ("did not call a tool"); now OpenAI's 424 for a listing that failed, naming the choice, streamed too.
    asked = len(env.upstream.requests)
    for stream, choice in [(False, {"type": "mcp", "server_label": "srv"}),
                           (True, {"type": "mcp", "server_label": "srv", "name": "add"}),
                           (False, {"type": "allowed_tools", "mode": "required",
                                    "tools": [{"type": "mcp", "server_label": "srv"}]})]:
        with pytest.raises(openai.APIStatusError) as caught:
            await env.sdk.responses.create(model=MODEL, input="hi", tools=[env.tool("/private/mcp")],
                                           tool_choice=choice, stream=stream)  # type: ignore[call-overload]
        error: dict[str, Any] = caught.value.body  # type: ignore[assignment]
        assert caught.value.status_code == 424, error
        assert error["param"] in ("tool_choice.server_label", "tool_choice.tools[0].server_label")
        assert "MCP server 'srv'" in error["message"] and "HTTP 401" in error["message"]
    # A server that lists tools, none of them within its allowed_tools: the request's own mistake, a 400.
    body = await _error(env.sdk, input="hi", tools=[env.tool(allowed_tools=["missing"])],
                        tool_choice={"type": "mcp", "server_label": "srv"})
    assert body["param"] == "tool_choice.server_label" and "offers no tool" in body["message"]
    assert len(env.upstream.requests) == asked  # the model was never asked
    # allowed_tools in auto mode may still name such a server: the model may answer without a tool.
    auto = await env.sdk.responses.create(model=MODEL, input="hi", tools=[env.tool("/private/mcp")],
                                          tool_choice={"type": "allowed_tools", "mode": "auto",
                                                       "tools": [{"type": "mcp", "server_label": "srv"}]})
    assert auto.status == "completed"


async def test_an_approval_for_a_server_the_request_lacks(env: Env) -> None:
    first = await env.sdk.responses.create(model=MODEL, tools=[env.tool()], input=steps([("srv__echo", {"text": "q"})]))
    request = first.output[-1]
    assert request.type == "mcp_approval_request"
    body = await _error(env.sdk, previous_response_id=first.id, input=[
        {"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}])
    assert body["param"] == "input[0].approval_request_id" and "cannot run" in body["message"]


async def test_unknown_fields_of_the_tool_entry_are_ignored(env: Env) -> None:
    response = await env.sdk.responses.create(
        model=MODEL, input="hi", tools=[env.tool(defer_loading=False, allowed_callers=["direct"], future_field=1)])
    assert response.output[0].type == "mcp_list_tools"
