"""The stream builder with the events of native upstreams: reasoning summaries, the upstream's own state for a
reasoning item (ReasoningState) and items of tools the upstream hosts (HostedItem). The builder's properties
hold over arbitrary sequences of them; the state is stored and sealed with its item and never shown."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from parley.engine.run import ResponseRun
from parley.engine.sealing import ReasoningSealer, new_key
from parley.engine.stream import StreamBuilder
from parley.providers.base import (
    Finish,
    HostedItem,
    ModelEvent,
    ReasoningDelta,
    ReasoningState,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from parley.schema.present import presenter
from parley.schema.requests import CreateResponseRequest
from parley.schema.response import new_response
from parley.testing.scripted import ScriptedStream
from parley.tools.replay import replay_items

EVENTS = TypeAdapter(ResponseStreamEvent)
STATE = {"kind": "anthropic", "model": "m", "signature": "c2ln"}
SEARCH = {"id": "ws_1", "type": "web_search_call", "status": "completed", "action": {"type": "search", "query": "q"}}
PROGRESS = ("response.web_search_call.in_progress", "response.web_search_call.searching",
            "response.web_search_call.completed")

text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=6)
model_event = st.one_of(
    st.builds(TextDelta, text),
    st.builds(ReasoningDelta, text),
    st.builds(ReasoningDelta, text, summary_index=st.integers(0, 2)),
    st.just(ReasoningState(STATE)),
    st.builds(lambda: HostedItem(dict(SEARCH), {"kind": "openai_responses", "model": "m", "item": SEARCH},
                                 PROGRESS, "web_search")),
    st.builds(ToolCallDelta, index=st.integers(0, 1), arguments=text, call_id=st.just(None), name=st.just("f")),
)


def _response() -> dict[str, Any]:
    req = CreateResponseRequest(model="m", input="hi", stream=True)
    return new_response(req, response_id="resp_test", model="m", status="in_progress", store=True)


async def _run(steps: list[ModelEvent], *, emit: bool = True, seal: Any = None) -> tuple[list[dict[str, Any]],
                                                                                         dict[str, Any]]:
    builder = StreamBuilder(_response(), emit=emit, obfuscate=emit, seal=seal)
    run = ResponseRun(builder, ScriptedStream(steps))
    events = [copy.deepcopy(e) async for e in run.events()]
    return events, builder.response


def _fold(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What an SDK-style accumulator rebuilds from the events alone, summaries included."""
    output: list[dict[str, Any]] = []
    for ev in events:
        kind = ev["type"]
        if kind == "response.output_item.added":
            output.append(copy.deepcopy(ev["item"]))
        elif kind == "response.content_part.added":
            output[ev["output_index"]].setdefault("content", []).append(copy.deepcopy(ev["part"]))
        elif kind in ("response.output_text.delta", "response.reasoning_text.delta"):
            output[ev["output_index"]]["content"][ev["content_index"]]["text"] += ev["delta"]
        elif kind == "response.reasoning_summary_part.added":
            assert ev["summary_index"] == len(output[ev["output_index"]]["summary"])
            output[ev["output_index"]]["summary"].append(copy.deepcopy(ev["part"]))
        elif kind == "response.reasoning_summary_text.delta":
            output[ev["output_index"]]["summary"][ev["summary_index"]]["text"] += ev["delta"]
        elif kind == "response.function_call_arguments.delta":
            output[ev["output_index"]]["arguments"] += ev["delta"]
        elif kind == "response.output_item.done":
            folded = output[ev["output_index"]]
            for key in ("content", "summary"):
                if key in folded:
                    assert folded[key] == ev["item"][key]
            output[ev["output_index"]] = copy.deepcopy(ev["item"])
    return output


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(model_event, max_size=20), reason=st.sampled_from(["stop", "length", "tool_calls"]))
async def test_properties_hold_with_native_events(steps: list[ModelEvent], reason: str) -> None:
    script: list[ModelEvent] = [*steps, Usage(3, 4), Finish(reason)]  # type: ignore[arg-type]
    events, final = await _run(script)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in events:
        EVENTS.validate_python(event)
    terminal = events[-1]
    Response.model_validate(terminal["response"])
    added = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    done = [e["output_index"] for e in events if e["type"] == "response.output_item.done"]
    assert sorted(added) == sorted(done) == list(range(len(final["output"])))
    assert '"upstream"' not in json.dumps(events)  # the upstream's state is stored, never shown
    shown = [{k: v for k, v in item.items() if k != "upstream"} for item in final["output"]]
    assert _fold(events) == terminal["response"]["output"] == shown
    _, folded_only = await _run(script, emit=False)
    assert [i["type"] for i in folded_only["output"]] == [i["type"] for i in final["output"]]


async def test_summary_parts_then_state() -> None:
    events, final = await _run([ReasoningDelta("A", summary_index=0), ReasoningDelta("B", summary_index=0),
                                ReasoningDelta("C", summary_index=1), ReasoningState(STATE), TextDelta("hi"),
                                Finish("stop")])
    assert [e["type"] for e in events[2:9]] == [
        "response.output_item.added", "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta", "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done", "response.reasoning_summary_part.done",
        "response.reasoning_summary_part.added"]
    reasoning = final["output"][0]
    assert reasoning["summary"] == [{"type": "summary_text", "text": "AB"}, {"type": "summary_text", "text": "C"}]
    assert "content" not in reasoning and reasoning["upstream"] == STATE


async def test_state_alone_is_a_reasoning_item_without_text() -> None:
    """Redacted thinking, a Gemini signature after the text: an item that only carries the state."""
    key = new_key()
    sealer = ReasoningSealer([key])
    events, final = await _run([TextDelta("hi"), ReasoningState(STATE), Finish("stop")],
                               seal=lambda item: sealer.seal(item, "proj"))
    assert [i["type"] for i in final["output"]] == ["message", "reasoning"]
    reasoning = final["output"][1]
    assert reasoning["summary"] == [] and "content" not in reasoning
    opened = sealer.open(reasoning["encrypted_content"], "proj", "input[0].encrypted_content")
    assert opened["upstream"] == STATE  # stateless clients carry it back inside encrypted_content
    done = [e for e in events if e["type"] == "response.output_item.done"][-1]["item"]
    assert "upstream" not in done and done["encrypted_content"] == reasoning["encrypted_content"]


async def test_hosted_item_with_its_own_events() -> None:
    hosted = HostedItem(dict(SEARCH), {"kind": "openai_responses", "model": "m", "item": SEARCH}, PROGRESS,
                        "web_search")
    builder = StreamBuilder(_response(), emit=True, obfuscate=False)
    run = ResponseRun(builder, ScriptedStream([hosted, TextDelta("found"), Finish("stop")]))
    events = [e async for e in run.events()]
    kinds = [e["type"] for e in events]
    assert kinds[2:7] == ["response.output_item.added", *PROGRESS, "response.output_item.done"]
    assert builder.called == ["web_search"]  # tool_choice checks count it
    stored = builder.response["output"][0]
    assert stored["upstream"]["item"] == SEARCH
    assert "upstream" not in presenter(["web_search_call.action.sources"])(stored)
    assert replay_items([stored]) == [stored]  # it goes back to its upstream as it is, not as a function call
