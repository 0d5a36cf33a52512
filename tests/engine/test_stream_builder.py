"""The stream builder's properties, over arbitrary model event sequences (hypothesis)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from parley.engine.run import ResponseRun
from parley.engine.stream import StreamBuilder
from parley.errors import UpstreamError
from parley.providers.base import Finish, ModelEvent, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from parley.schema.requests import CreateResponseRequest
from parley.schema.response import new_response
from parley.testing.scripted import ScriptedStream

EVENTS = TypeAdapter(ResponseStreamEvent)

text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8)
model_event = st.one_of(
    st.builds(TextDelta, text),
    st.builds(ReasoningDelta, text),
    st.builds(ToolCallDelta, index=st.integers(0, 2), arguments=text, call_id=st.just(None), name=st.just("f")),
)
finish = st.sampled_from(["stop", "length", "tool_calls", "content_filter"])


def _response(stream: bool) -> dict[str, Any]:
    req = CreateResponseRequest(model="m", input="hi", stream=stream)
    return new_response(req, response_id="resp_test", model="m", status="in_progress", store=True)


async def _run(steps: list[ModelEvent | Exception], *, emit: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    builder = StreamBuilder(_response(emit), emit=emit, obfuscate=emit)
    run = ResponseRun(builder, ScriptedStream(steps))  # type: ignore[arg-type]
    events = [copy.deepcopy(e) async for e in run.events()]
    return events, builder.response


def _fold(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What an SDK-style accumulator rebuilds from the events alone."""
    output: list[dict[str, Any]] = []
    for ev in events:
        kind = ev["type"]
        if kind == "response.output_item.added":
            assert ev["output_index"] == len(output)
            output.append(copy.deepcopy(ev["item"]))
        elif kind == "response.content_part.added":
            output[ev["output_index"]].setdefault("content", []).append(copy.deepcopy(ev["part"]))
        elif kind in ("response.output_text.delta", "response.reasoning_text.delta"):
            output[ev["output_index"]]["content"][ev["content_index"]]["text"] += ev["delta"]
        elif kind == "response.function_call_arguments.delta":
            output[ev["output_index"]]["arguments"] += ev["delta"]
        elif kind == "response.output_item.done":
            folded = output[ev["output_index"]]
            if "content" in folded:
                assert folded["content"] == ev["item"]["content"]
            if folded["type"] == "function_call":
                assert folded["arguments"] == ev["item"]["arguments"]
            output[ev["output_index"]] = copy.deepcopy(ev["item"])
    return output


def _strip_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_ids(v) for k, v in value.items() if k not in ("id", "call_id", "completed_at")}
    if isinstance(value, list):
        return [_strip_ids(v) for v in value]
    return value


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(model_event, max_size=25), reason=finish)
async def test_stream_properties(steps: list[ModelEvent], reason: str) -> None:
    script: list[ModelEvent | Exception] = [*steps, Usage(3, len(steps)), Finish(reason)]  # type: ignore[arg-type]
    events, final = await _run(script, emit=True)

    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created" and events[1]["type"] == "response.in_progress"
    terminal = events[-1]
    assert terminal["type"] == ("response.incomplete" if reason in ("length", "content_filter")
                                else "response.completed")
    for event in events:
        EVENTS.validate_python(event)
    Response.model_validate(terminal["response"])

    added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    done = [e["output_index"] for e in events if e["type"] == "response.output_item.done"]
    assert sorted(added) == sorted(done) == list(range(len(final["output"])))
    parts_added = sum(e["type"] == "response.content_part.added" for e in events)
    assert parts_added == sum(e["type"] == "response.content_part.done" for e in events)
    assert _fold(events) == terminal["response"]["output"] == final["output"]
    assert final["usage"]["total_tokens"] == 3 + len(steps)

    _, folded_only = await _run(script, emit=False)
    assert _strip_ids(folded_only["output"]) == _strip_ids(final["output"])


async def test_plain_text_event_order() -> None:
    events, final = await _run([TextDelta("Hel"), TextDelta("lo"), Usage(1, 2), Finish("stop")], emit=True)
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.completed",
    ]
    assert final["output"][0]["content"][0]["text"] == "Hello"
    assert final["status"] == "completed" and final["completed_at"] is not None
    assert all("obfuscation" in e for e in events if e["type"].endswith(".delta"))


async def test_upstream_error_mid_stream_fails_the_response() -> None:
    err = UpstreamError.bad_gateway("dropped")
    events, final = await _run([TextDelta("par"), err], emit=True)
    assert events[-1]["type"] == "response.failed"
    assert final["status"] == "failed" and final["error"] == {"code": "server_error", "message": "dropped"}
    assert final["output"][0]["status"] == "incomplete"
    Response.model_validate(final)


async def test_upstream_error_without_emit_is_raised() -> None:
    with pytest.raises(UpstreamError):
        await _run([TextDelta("par"), UpstreamError.bad_gateway("dropped")], emit=False)


async def test_length_marks_last_item_incomplete() -> None:
    _, final = await _run([TextDelta("abc"), Finish("length")], emit=False)
    assert final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["output"][-1]["status"] == "incomplete"


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(model_event, max_size=20), reason=finish)
async def test_the_snapshot_is_the_events_folded_so_far(steps: list[ModelEvent], reason: str) -> None:
    """What a GET of a running foreground response shows (builder.snapshot()), after every upstream read: the items
    the events sent so far build, those still being generated with their text or arguments so far and `in_progress`;
    a valid in-progress Response. Without events (non-streaming) the same items."""
    builder = StreamBuilder(_response(True), emit=True, obfuscate=False)
    quiet = StreamBuilder(_response(False), emit=False, obfuscate=False)
    events = builder.start() + builder.in_progress()
    quiet.in_progress()
    for step in steps:
        events += copy.deepcopy(builder.feed(step))
        quiet.feed(step)
        snapshot = builder.snapshot()
        assert snapshot["output"] == _fold(events)
        assert _strip_ids(quiet.snapshot()["output"]) == _strip_ids(snapshot["output"])
        assert snapshot["status"] == "in_progress" and snapshot["usage"] is None
        closed = {e["output_index"] for e in events if e["type"] == "response.output_item.done"}
        assert all(item["status"] == "in_progress" for index, item in enumerate(snapshot["output"])
                   if index not in closed)
        Response.model_validate(snapshot)
    events += builder.finish(reason)  # type: ignore[arg-type]
    assert builder.snapshot() == {**builder.response, "output": builder.output} == events[-1]["response"]
    assert builder.snapshot()["output"] == _fold(events)


async def test_the_snapshot_of_an_open_message_holds_its_text_so_far() -> None:
    builder = StreamBuilder(_response(True), emit=True, obfuscate=True)
    builder.start()
    builder.in_progress()
    builder.feed(TextDelta("Hel"))
    first = builder.snapshot()
    builder.feed(TextDelta("lo"))
    second = builder.snapshot()
    assert [first["output"][0]["content"][0]["text"], second["output"][0]["content"][0]["text"]] == ["Hel", "Hello"]
    assert first["output"][0]["status"] == "in_progress" and first["status"] == "in_progress"
    assert builder.output[0]["content"] == []  # the builder's own item is untouched until it closes
    builder.finish("stop")
    assert builder.snapshot()["output"][0]["content"][0]["text"] == "Hello"
    assert first["output"][0]["content"][0]["text"] == "Hel"  # a snapshot taken earlier stays as it was
