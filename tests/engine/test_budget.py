"""max_tool_calls: the budget counts built-in tool calls only, across the whole response."""

from __future__ import annotations

from parley.engine.budget import ToolCallBudget
from parley.engine.run import ResponseRun
from parley.engine.stream import StreamBuilder
from parley.providers.base import Finish, ToolCallDelta, Usage
from parley.schema.requests import CreateResponseRequest
from parley.schema.response import new_response
from parley.testing.scripted import ScriptedStream


def test_budget_caps_calls() -> None:
    budget = ToolCallBudget(2)
    assert [budget.take() for _ in range(3)] == [True, True, False]
    assert budget.remaining == 0 and budget.used == 2
    unlimited = ToolCallBudget()
    assert all(unlimited.take() for _ in range(100)) and unlimited.remaining is None


async def test_client_tool_calls_do_not_use_the_budget() -> None:
    req = CreateResponseRequest(model="m", input="x", max_tool_calls=1)
    response = new_response(req, response_id="resp_b", model="m", status="in_progress", store=True)
    steps = [ToolCallDelta(0, "{}", "call_1", "f"), ToolCallDelta(1, "{}", "call_2", "f"), Usage(1, 1),
             Finish("tool_calls")]
    run = ResponseRun(StreamBuilder(response, emit=False, obfuscate=False), ScriptedStream(steps),  # type: ignore[arg-type]
                      budget=ToolCallBudget(req.max_tool_calls))
    _ = [e async for e in run.events()]
    assert [i["type"] for i in response["output"]] == ["function_call", "function_call"]
    assert run.budget.remaining == 1 and response["max_tool_calls"] == 1
