"""The engine paths the `mcp` tool needs, with a scripted provider (no HTTP, no database): leading items with
their own events, an outcome that ends the response (a call waiting for approval), calls the client approved
that run before the first model turn (which is opened after them), the engine's time limit ending a call with
its `failed` event, and the tools' resources closed with the run."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from mcp.types import CallToolResult, TextContent
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from parley.engine.budget import ToolCallBudget
from parley.engine.run import ResponseRun
from parley.engine.stream import StreamBuilder
from parley.engine.tool_loop import Toolbox
from parley.engine.turns import Turns
from parley.errors import UpstreamError
from parley.providers.base import Finish, ModelCall, TextDelta, ToolCallDelta, Usage
from parley.schema.requests import CreateResponseRequest
from parley.schema.response import new_response
from parley.testing.scripted import ScriptedProvider, Step
from parley.tools.base import BuiltinCall, LeadingItem
from parley.tools.mcp.client import McpEndpoint, McpFailure
from parley.tools.mcp.items import LIST_COMPLETED, LIST_FAILED, list_item
from parley.tools.mcp.policy import ListedTool
from parley.tools.mcp.tool import McpTool

EVENTS = TypeAdapter(ResponseStreamEvent)
ADD = ListedTool("add", {"type": "object", "properties": {"a": {"type": "integer"}}})


class FakeConnection:
    """What McpTool needs of a session: answers, fails, or hangs; records the calls."""

    def __init__(self, *, hang: bool = False, failure: dict[str, Any] | None = None) -> None:
        self.endpoint = McpEndpoint("srv", "http://srv.example/mcp")
        self.hang = hang
        self.failure = failure
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.cancelled = False

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> CallToolResult:
        self.calls.append((name, arguments))
        if self.hang:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        if self.failure is not None:
            raise McpFailure(self.failure)
        return CallToolResult(content=[TextContent(type="text", text=f"result of {name}")])


def _call(index: int, name: str = "srv__add", arguments: str = '{"a": 1}') -> ToolCallDelta:
    return ToolCallDelta(index, arguments, f"call_{index}", name)


def _turn(*events: Any, reason: str = "tool_calls") -> list[Step]:
    return [*events, Usage(10, 5), Finish(reason)]  # type: ignore[arg-type]


class Harness:
    def __init__(self, provider: ScriptedProvider, tools: dict[str, McpTool], *, emit: bool = True,
                 timeout_s: float = 5.0, tool_choice: Any = None) -> None:
        self.provider = provider
        self.closed: list[str] = []

        async def close() -> None:
            self.closed.append("closed")

        self.toolbox = Toolbox(dict(tools), timeout_s=timeout_s, closers=[close])
        req = CreateResponseRequest(model="m", input="hi", stream=emit)  # type: ignore[arg-type]
        self.builder = StreamBuilder(new_response(req, response_id="resp_t", model="m", status="in_progress",
                                                  store=True), emit=emit, obfuscate=False,
                                     builtin_names=frozenset(tools))
        user = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
        self.call = ModelCall("up", [user], tools=[tool.function() for tool in tools.values()], tool_choice=tool_choice)

    async def run(self, *, leading: list[LeadingItem] | None = None,
                  first_calls: list[BuiltinCall] | None = None) -> list[dict[str, Any]]:
        async def fit(c: ModelCall) -> ModelCall:
            return c

        stream = None if first_calls else await self.provider.open(self.call)
        turns = Turns(self.provider, self.call, frozenset(self.toolbox.tools), fit)
        run = ResponseRun(self.builder, stream, leading=leading or (), budget=ToolCallBudget(None),
                          toolbox=self.toolbox, turns=turns, first_calls=first_calls or ())
        try:
            events = [copy.deepcopy(e) async for e in run.events()]
        finally:
            await run.aclose()
        for event in events:
            EVENTS.validate_python(event)
        if events:
            assert [e["sequence_number"] for e in events] == list(range(len(events)))
            Response.model_validate(events[-1]["response"])
        return events


def _tool(connection: FakeConnection, *, approval: bool = False, name: str = "srv__add",
          listed: ListedTool = ADD) -> McpTool:
    return McpTool(name, listed, connection, needs_approval=approval)  # type: ignore[arg-type]


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


async def test_leading_tool_lists_have_their_events_between_added_and_done() -> None:
    ok = list_item("srv", [ADD])
    failed = list_item("down", [], "Listing the tools failed: the MCP server answered HTTP 401")
    harness = Harness(ScriptedProvider(_turn(TextDelta("hello"), reason="stop")), {})
    events = await harness.run(leading=[LeadingItem(ok, LIST_COMPLETED), LeadingItem(failed, LIST_FAILED)])
    assert _types(events)[:10] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.mcp_list_tools.in_progress", "response.mcp_list_tools.completed",
        "response.output_item.done",
        "response.output_item.added", "response.mcp_list_tools.in_progress", "response.mcp_list_tools.failed",
        "response.output_item.done"]
    assert [e["output_index"] for e in events[2:10]] == [0, 0, 0, 0, 1, 1, 1, 1]
    final = events[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["mcp_list_tools", "mcp_list_tools", "message"]
    assert final["output"][1]["error"].startswith("Listing the tools failed")
    assert harness.closed == ["closed"]


async def test_a_call_needing_approval_ends_the_response_after_its_turn() -> None:
    connection = FakeConnection()
    echo = ListedTool("echo", {"type": "object"})
    tools = {"srv__add": _tool(connection, approval=True),
             "srv__echo": _tool(connection, name="srv__echo", listed=echo)}
    provider = ScriptedProvider(_turn(TextDelta("Let me check."), _call(0), _call(1, "srv__echo", '{}')))
    harness = Harness(provider, tools)
    events = await harness.run()
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed" and final["status"] == "completed"
    request, call = final["output"][1:]
    assert request["type"] == "mcp_approval_request" and request["id"].startswith("mcpr_")
    assert request["name"] == "add" and request["server_label"] == "srv" and request["arguments"] == '{"a": 1}'
    # The other call of the turn ran; the model was not asked again.
    assert call["type"] == "mcp_call" and call["status"] == "completed" and call["output"] == "result of echo"
    assert connection.calls == [("echo", {})] and len(provider.calls) == 1
    request_events = [e["type"] for e in events if e.get("output_index") == 1]
    assert request_events == ["response.output_item.added", "response.output_item.done"]


async def test_approved_calls_run_before_the_first_turn_which_opens_after_them() -> None:
    connection = FakeConnection()
    provider = ScriptedProvider(_turn(TextDelta("The sum is done."), reason="stop"))
    harness = Harness(provider, {"srv__add": _tool(connection, approval=True)}, tool_choice="required")
    approved = BuiltinCall("mcpr_1", "srv__add", '{"a": 2}', approval_request_id="mcpr_1")
    events = await harness.run(first_calls=[approved])
    assert _types(events)[2:9] == [
        "response.output_item.added", "response.mcp_call.in_progress", "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done", "response.mcp_call.completed", "response.output_item.done",
        "response.output_item.added"]
    delta = next(e for e in events if e["type"] == "response.mcp_call_arguments.delta")
    assert delta["delta"] == '{"a": 2}'
    call = events[-1]["response"]["output"][0]
    assert call["approval_request_id"] == "mcpr_1" and call["status"] == "completed"
    assert connection.calls == [("add", {"a": 2})]
    # The first model turn was opened once the call had run, with its result, and the request's tool_choice.
    first = provider.calls[0]
    assert [i["type"] for i in first.items[-2:]] == ["function_call", "function_call_output"]
    assert first.items[-1]["output"] == "result of add" and first.items[-2]["call_id"] == "mcpr_1"
    assert first.tool_choice == "required"


async def test_a_failing_first_turn_after_approved_calls_fails_the_stream() -> None:
    provider = ScriptedProvider([UpstreamError.bad_gateway("the upstream broke")])
    harness = Harness(provider, {"srv__add": _tool(FakeConnection())})
    events = await harness.run(first_calls=[BuiltinCall("mcpr_1", "srv__add", "{}", approval_request_id="mcpr_1")])
    assert events[-1]["type"] == "response.failed"
    assert [i["type"] for i in events[-1]["response"]["output"]] == ["mcp_call"]


async def test_failures_are_failed_calls_with_their_event() -> None:
    error = {"type": "http_error", "code": 503, "message": "the MCP server answered HTTP 503"}
    provider = ScriptedProvider(_turn(_call(0), _call(1, arguments="{not json")), _turn(TextDelta("ok"), reason="stop"))
    connection = FakeConnection(failure=error)
    events = await Harness(provider, {"srv__add": _tool(connection)}).run()
    first, second = events[-1]["response"]["output"][:2]
    assert first["status"] == "failed" and first["error"] == error and first["output"] is None
    assert second["status"] == "failed" and second["error"]["code"] == -32602  # never sent to the server
    assert len(connection.calls) == 1
    assert _types(events).count("response.mcp_call.failed") == 2
    outputs = [i["output"] for i in provider.calls[1].items if i["type"] == "function_call_output"]
    assert "HTTP 503" in outputs[0] and "-32602" in outputs[1]


async def test_the_engine_time_limit_fails_the_call_with_its_event() -> None:
    connection = FakeConnection(hang=True)
    provider = ScriptedProvider(_turn(_call(0)), _turn(TextDelta("too slow"), reason="stop"))
    events = await Harness(provider, {"srv__add": _tool(connection)}, timeout_s=0.2).run()
    item_events = [e["type"] for e in events if e.get("output_index") == 0]
    assert item_events[-2:] == ["response.mcp_call.failed", "response.output_item.done"]
    call = events[-1]["response"]["output"][0]
    assert call["status"] == "failed" and call["error"]["code"] == -32001 and connection.cancelled


async def test_non_streaming_gives_the_same_output() -> None:
    def script() -> ScriptedProvider:
        return ScriptedProvider(_turn(_call(0)), _turn(TextDelta("done"), reason="stop"))

    streamed = Harness(script(), {"srv__add": _tool(FakeConnection())})
    await streamed.run()
    folded = Harness(script(), {"srv__add": _tool(FakeConnection())}, emit=False)
    assert await folded.run() == []

    def strip(output: list[dict[str, Any]]) -> list[Any]:
        return [{k: v for k, v in item.items() if k != "id"} for item in output]

    assert strip(folded.builder.output) == strip(streamed.builder.output)
