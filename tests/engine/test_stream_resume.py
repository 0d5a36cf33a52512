"""A run taken up from its event log (a background run whose worker died): the stream builder folds the log,
then fails the response as a live run fails, so the log plus its closing events is a well-formed stream."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from parley.engine.stream import StreamBuilder, sse_frame
from parley.engine.stream_log import fold_log
from parley.providers.base import ModelEvent, ReasoningDelta, TextDelta, ToolCallDelta
from parley.schema.requests import CreateResponseRequest
from parley.schema.response import new_response

EVENTS = TypeAdapter(ResponseStreamEvent)
Event = dict[str, Any]

text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8)
model_event = st.one_of(
    st.builds(TextDelta, text),
    st.builds(ReasoningDelta, text),
    st.builds(ReasoningDelta, text, summary_index=st.integers(0, 1)),
    st.builds(ToolCallDelta, index=st.integers(0, 2), arguments=text, call_id=st.just(None), name=st.just("f")),
)


def _response() -> dict[str, Any]:
    req = CreateResponseRequest(model="m", input="hi", stream=True, background=True)
    return new_response(req, response_id="resp_resume", model="m", status="in_progress", store=True)


def _live(steps: list[ModelEvent], crash_after: int) -> list[list[Event]]:
    """The batches a live run logged before its worker died, one per model event (a flush never splits one)."""
    builder = StreamBuilder(_response(), emit=True, obfuscate=True)
    batches = [builder.start() + builder.in_progress()]
    batches += [builder.feed(step) for step in steps[:crash_after]]
    return [copy.deepcopy(batch) for batch in batches]


def _stored(logged: list[Event]) -> list[dict[str, Any]]:
    """The output items a background run had stored: the finished ones, in order, up to the first open one."""
    output: dict[int, dict[str, Any]] = {}
    for event in logged:
        if event["type"] == "response.output_item.done":
            output[event["output_index"]] = event["item"]
    stored: list[dict[str, Any]] = []
    while len(stored) in output:
        stored.append(output[len(stored)])
    return stored


def _resume_and_fail(logged: list[Event]) -> tuple[list[Event], dict[str, Any]]:
    builder = StreamBuilder({**_response(), "output": []}, emit=True, obfuscate=False)
    builder.resume(fold_log(sse_frame(event) for event in logged), _stored(logged))
    return builder.fail("server_error", "interrupted"), builder.response


def _fold(events: list[Event]) -> list[dict[str, Any]]:
    """What a client rebuilds from the events alone; every `.done` must say what the deltas built."""
    output: list[dict[str, Any]] = []
    summary: dict[int, list[str]] = {}
    for ev in events:
        kind = ev["type"]
        if kind == "response.output_item.added":
            assert ev["output_index"] == len(output)
            output.append(copy.deepcopy(ev["item"]))
        elif kind == "response.content_part.added":
            output[ev["output_index"]].setdefault("content", []).append(copy.deepcopy(ev["part"]))
        elif kind in ("response.output_text.delta", "response.reasoning_text.delta"):
            output[ev["output_index"]]["content"][ev["content_index"]]["text"] += ev["delta"]
        elif kind in ("response.output_text.done", "response.reasoning_text.done"):
            assert output[ev["output_index"]]["content"][ev["content_index"]]["text"] == ev["text"]
        elif kind == "response.reasoning_summary_part.added":
            summary.setdefault(ev["output_index"], []).append("")
        elif kind == "response.reasoning_summary_text.delta":
            summary[ev["output_index"]][ev["summary_index"]] += ev["delta"]
        elif kind == "response.reasoning_summary_text.done":
            assert summary[ev["output_index"]][ev["summary_index"]] == ev["text"]
        elif kind == "response.function_call_arguments.delta":
            output[ev["output_index"]]["arguments"] += ev["delta"]
        elif kind == "response.function_call_arguments.done":
            assert output[ev["output_index"]]["arguments"] == ev["arguments"]
        elif kind == "response.output_item.done":
            folded, item = output[ev["output_index"]], ev["item"]
            assert folded.get("content", []) == item.get("content", [])
            assert folded.get("arguments") == item.get("arguments")
            assert [part["text"] for part in item.get("summary", [])] == summary.get(ev["output_index"], [])
            output[ev["output_index"]] = copy.deepcopy(item)
    return output


def _balanced(events: list[Event], opened: str, closed: str, key: str) -> None:
    added = sorted((e["output_index"], e.get(key, 0)) for e in events if e["type"] == opened)
    done = sorted((e["output_index"], e.get(key, 0)) for e in events if e["type"] == closed)
    assert added == done, (opened, added, done)


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(model_event, max_size=20), cut=st.floats(0, 1))
def test_a_log_cut_anywhere_is_closed_into_a_well_formed_failed_stream(steps: list[ModelEvent], cut: float) -> None:
    batches = _live(steps, round(cut * len(steps)))
    logged = [event for batch in batches for event in batch]
    closing, final = _resume_and_fail(logged)
    events = logged + closing

    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        EVENTS.validate_python(event)
    terminal = events[-1]
    assert terminal["type"] == "response.failed" and [e["type"] for e in closing].count("response.failed") == 1
    Response.model_validate(terminal["response"])
    _balanced(events, "response.output_item.added", "response.output_item.done", "output_index")
    _balanced(events, "response.content_part.added", "response.content_part.done", "content_index")
    _balanced(events, "response.reasoning_summary_part.added", "response.reasoning_summary_part.done",
              "summary_index")
    assert _fold(events) == terminal["response"]["output"] == final["output"]  # nothing lost, nothing invented
    done_in_log = {e["output_index"] for e in logged if e["type"] == "response.output_item.done"}
    for index, item in enumerate(final["output"]):
        if index not in done_in_log:  # open when the worker died: cut off
            assert item["status"] == "incomplete", item


def test_an_open_message_keeps_its_streamed_text_and_annotations() -> None:
    builder = StreamBuilder(_response(), emit=True, obfuscate=False)
    logged = builder.start() + builder.in_progress() + builder.feed(TextDelta("Hello, wor"))
    annotation = {"type": "file_citation", "file_id": "file_1", "filename": "a.txt", "index": 5}
    logged.append({"type": "response.output_text.annotation.added", "item_id": logged[-3]["item"]["id"],
                   "output_index": 0, "content_index": 0, "annotation_index": 0, "annotation": annotation,
                   "sequence_number": logged[-1]["sequence_number"] + 1})
    closing, final = _resume_and_fail(logged)
    assert [e["type"] for e in closing] == ["response.output_text.done", "response.content_part.done",
                                            "response.output_item.done", "response.failed"]
    assert closing[0]["sequence_number"] == logged[-1]["sequence_number"] + 1
    part = {"type": "output_text", "text": "Hello, wor", "annotations": [annotation], "logprobs": []}
    assert closing[1]["part"] == part and closing[2]["item"]["content"] == [part]
    assert final["output"] == [closing[2]["item"]] and final["output"][0]["status"] == "incomplete"
    assert final["status"] == "failed" and final["error"]["message"] == "interrupted"


def test_an_open_tool_item_is_closed_cut_off() -> None:
    builder = StreamBuilder(_response(), emit=True, obfuscate=False)
    logged = builder.start() + builder.in_progress() + builder.feed(TextDelta("Let me run it."))
    logged += builder.close_turn("stop")
    item = {"id": "ci_1", "type": "code_interpreter_call", "status": "in_progress", "code": "print(1)",
            "container_id": "cntr_1", "outputs": None}
    index, started = builder.add_tool_item(item)
    logged += started + builder.tool_event(index, "response.code_interpreter_call.in_progress")
    closing, final = _resume_and_fail(logged)
    assert [e["type"] for e in closing] == ["response.output_item.done", "response.failed"]
    assert closing[0]["output_index"] == 1 and closing[0]["item"] == {**item, "status": "incomplete"}
    assert final["output"][0]["status"] == "completed" and final["output"][1] == {**item, "status": "incomplete"}


def _tool_streams(builder: StreamBuilder) -> list[Event]:
    """A turn whose built-in tool items are open with streams inside them: a cell's code, an MCP call's arguments,
    a shell call's second command, a shell output's second command (its first one finished)."""
    events = builder.start() + builder.in_progress()
    cell, started = builder.add_tool_item({"id": "ci_1", "type": "code_interpreter_call", "status": "in_progress",
                                           "code": "", "container_id": "cntr_1", "outputs": None})
    events += started + builder.tool_event(cell, "response.code_interpreter_call_code.delta", {"delta": "print("})
    events += builder.tool_event(cell, "response.code_interpreter_call_code.delta", {"delta": "1"})
    mcp, started = builder.add_tool_item({"id": "mcp_1", "type": "mcp_call", "status": "calling", "name": "add",
                                          "server_label": "calc", "arguments": ""})
    events += started + builder.tool_event(mcp, "response.mcp_call_arguments.delta", {"delta": '{"a": '})
    shell, started = builder.add_tool_item({"id": "sh_1", "type": "shell_call", "call_id": "call_1",
                                            "status": "in_progress", "action": {"commands": []}})
    events += started
    for index, text in ((0, "ls"), (1, "cat a")):
        events += builder.tool_event(shell, "response.shell_call_command.added", {"command_index": index,
                                                                                  "command": ""})
        events += builder.tool_event(shell, "response.shell_call_command.delta", {"command_index": index,
                                                                                  "delta": text})
    events += builder.tool_event(shell, "response.shell_call_command.done", {"command_index": 0, "command": "ls"})
    output, started = builder.add_tool_item({"id": "sho_1", "type": "shell_call_output", "call_id": "call_1",
                                             "status": "in_progress", "output": [], "max_output_length": 100})
    events += started + builder.tool_event(output, "response.shell_call_output_content.delta",
                                           {"command_index": 0, "delta": {"stdout": "a\n"}})
    first = {"stdout": "a\n", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}
    events += builder.tool_event(output, "response.shell_call_output_content.done",
                                 {"command_index": 0, "output": [first]})
    builder.update_tool_item(output, {**builder.output[output], "output": [first]})  # as the live tool does
    events += builder.tool_event(output, "response.shell_call_output_content.delta",
                                 {"command_index": 1, "delta": {"stdout": "b"}})
    events += builder.tool_event(output, "response.shell_call_output_content.delta",
                                 {"command_index": 1, "delta": {"stderr": "c"}})
    return copy.deepcopy(events)


def test_open_tool_streams_are_closed_alike_live_and_taken_up_from_the_log() -> None:
    """The tool items' open streams get their `.done` events (what their deltas built), then the items theirs, cut
    off; a live run failing there and the same run taken up from its log end with the same events and output."""
    live = StreamBuilder(_response(), emit=True, obfuscate=False)
    logged = _tool_streams(live)
    closing_live = live.fail("server_error", "interrupted")
    closing, final = _resume_and_fail(logged)
    assert closing == closing_live and final["output"] == live.response["output"]
    events = logged + closing
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        EVENTS.validate_python(event)
    Response.model_validate(final)
    _balanced(events, "response.output_item.added", "response.output_item.done", "output_index")
    _balanced(events, "response.shell_call_command.added", "response.shell_call_command.done", "command_index")
    assert [(e["type"], e.get("output_index")) for e in closing] == [
        ("response.code_interpreter_call_code.done", 0), ("response.output_item.done", 0),
        ("response.mcp_call_arguments.done", 1), ("response.output_item.done", 1),
        ("response.shell_call_command.done", 2), ("response.output_item.done", 2),
        ("response.shell_call_output_content.done", 3), ("response.output_item.done", 3), ("response.failed", None)]
    assert closing[0]["code"] == "print(1" and closing[2]["arguments"] == '{"a": '
    assert closing[4]["command_index"] == 1 and closing[4]["command"] == "cat a"
    cut = {"stdout": "b", "stderr": "c", "outcome": {"type": "timeout"}}
    assert closing[6]["command_index"] == 1 and closing[6]["output"] == [cut]
    cell, mcp, shell, output = final["output"]
    assert (cell["status"], cell["code"]) == ("incomplete", "print(1")
    assert (mcp["status"], mcp["arguments"]) == ("incomplete", '{"a": ')
    assert (shell["status"], shell["action"]["commands"]) == ("incomplete", ["ls", "cat a"])
    first = {"stdout": "a\n", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}
    assert (output["status"], output["output"]) == ("incomplete", [first, cut])
    assert [closing[i]["item"] for i in (1, 3, 5, 7)] == final["output"]
