"""The server-side tool loop with a scripted provider (no HTTP, no database): built-in calls run between
model turns, their items and events go through the one stream builder, and the model is asked again."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from parley.engine.budget import ToolCallBudget
from parley.engine.checks import tool_choice_check
from parley.engine.run import ResponseRun
from parley.engine.stream import StreamBuilder
from parley.engine.tool_loop import Toolbox
from parley.engine.turns import Turns
from parley.providers.base import Finish, HostedItem, ModelCall, TextDelta, ToolCallDelta, Usage
from parley.schema.present import presenter
from parley.schema.requests import CreateResponseRequest
from parley.schema.response import new_response
from parley.schema.tools import ToolChoicePlan
from parley.testing.scripted import ScriptedProvider, Step
from parley.tools.file_search import FUNCTION, FileSearchTool

EVENTS = TypeAdapter(ResponseStreamEvent)


@dataclass
class Hit:
    file_id: str
    filename: str
    score: float
    text: str
    attributes: dict[str, Any]


class FakeSearch:
    """Answers from a fixed list; can fail or hang; records the queries."""

    def __init__(self, hits: list[Hit] | None = None, *, fail: bool = False, hang: bool = False) -> None:
        self.hits = hits or [Hit("file-a", "a.txt", 0.9, "Paris is the capital of France.", {"lang": "en"})]
        self.fail = fail
        self.hang = hang
        self.queries: list[list[str]] = []
        self.cancelled = False

    async def search(self, project_id: str, vector_store_ids: list[str], queries: list[str], *,
                     max_num_results: int, filters: dict[str, Any] | None,
                     ranking_options: dict[str, Any] | None) -> Sequence[Hit]:
        self.queries.append(queries)
        if self.hang:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        if self.fail:
            raise RuntimeError("index unavailable")
        return self.hits[:max_num_results]


def _search_call(index: int, queries: list[str], call_id: str | None = None) -> ToolCallDelta:
    return ToolCallDelta(index, orjson.dumps({"queries": queries}).decode(), call_id or f"call_{index}", "file_search")


def _turn(*events: Any, reason: str = "tool_calls") -> list[Step]:
    return [*events, Usage(10, 5), Finish(reason)]  # type: ignore[arg-type]


async def _run(provider: ScriptedProvider, search: FakeSearch, *, emit: bool = True, max_tool_calls: int | None = None,
               include: list[str] | None = None, first_checks: Sequence[Any] = (), max_turns: int = 8,
               timeout_s: float = 5.0) -> tuple[list[dict[str, Any]], StreamBuilder]:
    req = CreateResponseRequest(model="m", input="hi", stream=emit, include=include)  # type: ignore[arg-type]
    response = new_response(req, response_id="resp_t", model="m", status="in_progress", store=True)
    tool = FileSearchTool("proj", ["vs_1"], search)
    toolbox = Toolbox({"file_search": tool}, timeout_s=timeout_s, max_turns=max_turns)
    builder = StreamBuilder(response, emit=emit, obfuscate=False, builtin_names=frozenset({"file_search"}),
                            present=presenter(include))
    call = ModelCall("up", [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
                     tools=[FUNCTION])

    async def fit(c: ModelCall) -> ModelCall:
        return c

    stream = await provider.open(call)
    run = ResponseRun(builder, stream, budget=ToolCallBudget(max_tool_calls), first_turn_checks=first_checks,
                      toolbox=toolbox, turns=Turns(provider, call, frozenset({"file_search"}), fit))
    events = [copy.deepcopy(e) async for e in run.events()]
    for event in events:
        EVENTS.validate_python(event)
    return events, builder


def _types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


async def test_a_search_then_an_answer_with_a_citation() -> None:
    provider = ScriptedProvider(
        _turn(_search_call(0, ["capital of France"])),
        _turn(TextDelta("Paris is the capital ["), TextDelta("1]."), reason="stop"),
    )
    search = FakeSearch()
    events, builder = await _run(provider, search, include=["file_search_call.results"])
    types = _types(events)
    assert types[:7] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.file_search_call.in_progress", "response.file_search_call.searching",
                         "response.file_search_call.completed", "response.output_item.done"]
    assert "response.function_call_arguments.delta" not in types  # a built-in call is not a function call
    assert types[-1] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = Response.model_validate(events[-1]["response"])
    call, message = final.output
    assert call.type == "file_search_call" and call.status == "completed" and call.queries == ["capital of France"]
    assert call.results is not None and call.results[0].file_id == "file-a"
    text = message.content[0]  # type: ignore[union-attr]
    assert text.text == "Paris is the capital."  # type: ignore[union-attr]
    annotation = text.annotations[0]  # type: ignore[union-attr]
    assert annotation.type == "file_citation" and annotation.file_id == "file-a" and annotation.index == 20
    added = [e for e in events if e["type"] == "response.output_text.annotation.added"]
    assert len(added) == 1 and added[0]["annotation"] == annotation.model_dump()
    # Folding the deltas gives the final text; usage sums both turns.
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == "Paris is the capital."
    assert final.usage is not None and final.usage.input_tokens == 20 and final.usage.output_tokens == 10
    # The second turn saw the search as a function call and the passages as its output.
    second = provider.calls[1]
    assert [i["type"] for i in second.items[-2:]] == ["function_call", "function_call_output"]
    assert "[1] file: a.txt" in second.items[-1]["output"] and second.items[-2]["call_id"] == "call_0"
    assert search.queries == [["capital of France"]]
    assert builder.output[0]["results"] is not None  # stored whole


async def test_results_are_shown_only_when_included() -> None:
    provider = ScriptedProvider(_turn(_search_call(0, ["x"])), _turn(TextDelta("ok"), reason="stop"))
    events, builder = await _run(provider, FakeSearch())
    done = [e for e in events if e["type"] == "response.output_item.done" and e["item"]["type"] == "file_search_call"]
    assert done[0]["item"]["results"] is None
    assert events[-1]["response"]["output"][0]["results"] is None
    assert builder.response["output"][0]["results"]  # what is stored keeps them


async def test_parallel_calls_run_concurrently_in_call_order() -> None:
    provider = ScriptedProvider(
        _turn(_search_call(0, ["one"]), _search_call(1, ["two"]), _search_call(2, ["three"])),
        _turn(TextDelta("done"), reason="stop"),
    )
    _events, builder = await _run(provider, FakeSearch())
    calls = [item for item in builder.output if item["type"] == "file_search_call"]
    assert [c["queries"] for c in calls] == [["one"], ["two"], ["three"]]
    assert builder.output[-1]["type"] == "message"
    assert len([i for i in provider.calls[1].items if i["type"] == "function_call_output"]) == 3


class GatedSearch(FakeSearch):
    """Each search waits until `together` searches are running at once, and records the most seen."""

    def __init__(self, together: int) -> None:
        super().__init__()
        self.together = together
        self.running = 0
        self.peak = 0
        self.all_in = asyncio.Event()

    async def search(self, project_id: str, vector_store_ids: list[str], queries: list[str], *,
                     max_num_results: int, filters: dict[str, Any] | None,
                     ranking_options: dict[str, Any] | None) -> Sequence[Hit]:
        self.running += 1
        self.peak = max(self.peak, self.running)
        if self.running >= self.together:
            self.all_in.set()
        await self.all_in.wait()
        await asyncio.sleep(0)  # let every call that could start, start
        self.running -= 1
        return await super().search(project_id, vector_store_ids, queries, max_num_results=max_num_results,
                                    filters=filters, ranking_options=ranking_options)


async def test_calls_really_overlap_and_at_most_max_concurrent_run_at_once() -> None:
    # Run one after another, the first search would wait for the others forever (and time out, failing).
    provider = ScriptedProvider(_turn(*[_search_call(n, [f"q{n}"]) for n in range(6)]),
                                _turn(TextDelta("done"), reason="stop"))
    search = GatedSearch(together=4)  # Toolbox.max_concurrent
    _events, builder = await _run(provider, search, timeout_s=30)
    calls = [item for item in builder.output if item["type"] == "file_search_call"]
    assert [c["status"] for c in calls] == ["completed"] * 6
    assert search.peak == 4


async def test_the_budget_ignores_further_calls_and_the_next_turn_has_no_builtin_tool() -> None:
    provider = ScriptedProvider(
        _turn(_search_call(0, ["one"]), _search_call(1, ["two"])),
        _turn(TextDelta("answer"), reason="stop"),
    )
    _events, builder = await _run(provider, FakeSearch(), max_tool_calls=1)
    assert [i["type"] for i in builder.output] == ["file_search_call", "message"]
    assert provider.calls[1].tools == [] and provider.calls[1].tool_choice is None


async def test_the_turn_limit_makes_the_last_turn_answer() -> None:
    provider = ScriptedProvider(*[_turn(_search_call(0, [f"q{n}"])) for n in range(2)],
                                _turn(TextDelta("final"), reason="stop"))
    _events, builder = await _run(provider, FakeSearch(), max_turns=3)
    assert len(provider.calls) == 3
    assert provider.calls[1].tools and not provider.calls[2].tools
    assert builder.response["status"] == "completed"


async def test_a_failing_tool_is_a_failed_item_and_an_error_for_the_model() -> None:
    provider = ScriptedProvider(_turn(_search_call(0, ["x"])), _turn(TextDelta("sorry"), reason="stop"))
    _events, builder = await _run(provider, FakeSearch(fail=True))
    assert builder.output[0]["status"] == "failed" and builder.output[0]["results"] is None
    assert "failed" in provider.calls[1].items[-1]["output"]
    assert builder.response["status"] == "completed"


async def test_a_hanging_tool_times_out() -> None:
    provider = ScriptedProvider(_turn(_search_call(0, ["x"])), _turn(TextDelta("sorry"), reason="stop"))
    search = FakeSearch(hang=True)
    _events, builder = await _run(provider, search, timeout_s=0.2)
    assert builder.output[0]["status"] == "failed" and search.cancelled
    assert "did not finish within" in provider.calls[1].items[-1]["output"]


async def test_invalid_arguments_fail_the_call_not_the_response() -> None:
    bad = ToolCallDelta(0, "{not json", "call_0", "file_search")
    provider = ScriptedProvider(_turn(bad), _turn(TextDelta("ok"), reason="stop"))
    _events, builder = await _run(provider, FakeSearch())
    assert builder.output[0]["status"] == "failed" and builder.response["status"] == "completed"


async def test_builtin_and_client_calls_in_one_turn_end_with_the_client_call() -> None:
    client_call = ToolCallDelta(1, '{"a": 1}', "call_c", "my_function")
    provider = ScriptedProvider(_turn(_search_call(0, ["x"]), client_call))
    _events, builder = await _run(provider, FakeSearch())
    assert [i["type"] for i in builder.output] == ["function_call", "file_search_call"]
    assert builder.response["status"] == "completed" and len(provider.calls) == 1


async def test_a_hosted_call_item_next_to_a_builtin_call_is_not_the_clients() -> None:
    """A `shell_call` the upstream made and ran itself (hosted_tools) carries its `upstream`: a turn with it and a
    Parley-run call goes on to the next turn, where a client's shell_call would end the response."""
    hosted = HostedItem({"id": "sh_1", "type": "shell_call", "call_id": "call_sh", "status": "completed",
                         "action": {"commands": ["ls"]}},
                        {"kind": "openai_responses", "model": "up", "item": {"id": "sh_up", "type": "shell_call"}},
                        (), "shell")
    provider = ScriptedProvider(_turn(hosted, _search_call(0, ["x"])), _turn(TextDelta("answer"), reason="stop"))
    _events, builder = await _run(provider, FakeSearch())
    assert [i["type"] for i in builder.output] == ["shell_call", "file_search_call", "message"]
    assert builder.response["status"] == "completed" and len(provider.calls) == 2


async def test_a_forced_builtin_applies_to_the_first_turn_only() -> None:
    check = tool_choice_check(ToolChoicePlan(mode="required", forced="file_search"))
    provider = ScriptedProvider(_turn(_search_call(0, ["x"])), _turn(TextDelta("answer"), reason="stop"))
    _, builder = await _run(provider, FakeSearch(), first_checks=[check])
    assert builder.response["status"] == "completed"
    assert provider.calls[1].tool_choice == "auto"
    # A first turn that does not call it fails the response.
    provider = ScriptedProvider(_turn(TextDelta("no search"), reason="stop"))
    _events, builder = await _run(provider, FakeSearch(), first_checks=[check])
    assert builder.response["status"] == "failed"


async def test_non_streaming_gives_the_same_response() -> None:
    steps = (_turn(_search_call(0, ["capital"])), _turn(TextDelta("Paris [1]."), reason="stop"))
    _streamed_events, streamed = await _run(ScriptedProvider(*steps), FakeSearch())
    folded_events, folded = await _run(ScriptedProvider(*steps), FakeSearch(), emit=False)
    assert folded_events == []

    def strip(output: list[dict[str, Any]]) -> list[Any]:
        return [{k: v for k, v in item.items() if k != "id"} for item in output]

    assert strip(folded.output) == strip(streamed.output)


async def test_cancelling_mid_tool_stops_the_tool() -> None:
    search = FakeSearch(hang=True)
    provider = ScriptedProvider(_turn(_search_call(0, ["x"])))
    task = asyncio.ensure_future(_run(provider, search, timeout_s=60))
    for _ in range(6000):  # until the tool is running
        if search.queries:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    assert search.cancelled


class StoppingTool:
    """Starts a code_interpreter item, streams part of its code, then stops the run consuming its events (before
    that run could read them) and waits: what a time limit or a shutdown does while a tool runs."""

    upstream_name = "python"

    def __init__(self) -> None:
        self.consumer: asyncio.Task[None] | None = None

    def function(self) -> dict[str, Any]:
        return {"name": "python", "description": "run code", "parameters": {"type": "object"}}

    async def run(self, call: Any, emit: Any, citations: Any) -> Any:
        emit.start({"id": "ci_1", "type": "code_interpreter_call", "status": "in_progress", "code": "",
                    "container_id": "cntr_1", "outputs": None})
        emit.progress("response.code_interpreter_call.in_progress")
        emit.progress("response.code_interpreter_call_code.delta", {"delta": "print("})
        assert self.consumer is not None
        self.consumer.cancel()
        await asyncio.Event().wait()

    def failed(self, call: Any, message: str, item: Any) -> Any:
        raise AssertionError("the run was stopped: the tool's outcome is never asked for")


async def test_a_run_stopped_while_a_tool_runs_closes_its_item_after_its_unread_events() -> None:
    """Events a tool emitted that the stopped run never read are numbered: they go out first when the run fails,
    then the closing of the tool's open code stream and item, so sequence numbers stay contiguous."""
    req = CreateResponseRequest(model="m", input="hi", stream=True)
    response = new_response(req, response_id="resp_stop", model="m", status="in_progress", store=True)
    tool = StoppingTool()
    builder = StreamBuilder(response, emit=True, obfuscate=False, builtin_names=frozenset({"python"}))
    call = ModelCall("up", [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}])
    provider = ScriptedProvider(_turn(ToolCallDelta(0, "{}", "call_0", "python")))

    async def fit(c: ModelCall) -> ModelCall:
        return c

    run = ResponseRun(builder, await provider.open(call), toolbox=Toolbox({"python": tool}),  # type: ignore[dict-item]
                      turns=Turns(provider, call, frozenset({"python"}), fit))
    seen: list[dict[str, Any]] = []

    async def consume() -> None:
        async for batch in run.batches():
            seen.extend(copy.deepcopy(batch))

    tool.consumer = asyncio.ensure_future(consume())
    try:
        await tool.consumer
    except asyncio.CancelledError:
        pass
    closing = builder.fail("server_error", "stopped")
    events = seen + closing
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        EVENTS.validate_python(event)
    assert _types(closing) == ["response.output_item.added", "response.code_interpreter_call.in_progress",
                               "response.code_interpreter_call_code.delta", "response.code_interpreter_call_code.done",
                               "response.output_item.done", "response.failed"]
    assert closing[3]["code"] == "print("
    item = {"id": "ci_1", "type": "code_interpreter_call", "status": "incomplete", "code": "print(",
            "container_id": "cntr_1", "outputs": None}
    assert closing[4]["item"] == item and builder.response["output"] == [item]
    assert closing[-1]["response"]["output"] == [item]
