"""The Messages door's translations without HTTP: Messages request -> canonical request, canonical events -> the
same message as the finished response gives, stop sequences streamed as found in the whole text, usage."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley.api.messages_request import translate
from parley.api.messages_stream import MessageEvents, Rendering, StopFilter, first_stop, message_from_response, usage
from parley.engine.stream import StreamBuilder
from parley.errors import InvalidRequest
from parley.providers.base import Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from parley.schema.messages import CreateMessageRequest
from parley.schema.requests import CreateResponseRequest
from parley.schema.response import new_response


def _request(**body: Any) -> CreateMessageRequest:
    return CreateMessageRequest.model_validate({"model": "m", "max_tokens": 64, **body})


def test_messages_become_canonical_items() -> None:
    translated = translate(_request(system="Sys.", stop_sequences=["END"], messages=[
        {"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hm", "signature": "prl1.x"}, {"type": "text", "text": "calling"},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"x": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [
            {"type": "text", "text": "r"}]}, {"type": "text", "text": "next"}]},
    ], tools=[{"name": "f", "input_schema": {"type": "object"}}], thinking={"type": "adaptive"}))
    req = translated.request
    assert req.store is False and req.instructions == "Sys." and req.max_output_tokens == 64
    assert req.include == ["reasoning.encrypted_content"] and translated.stop_sequences == ("END",)
    items = req.input
    assert isinstance(items, list)
    assert [i["type"] for i in items] == ["message", "reasoning", "message", "function_call", "function_call_output",
                                          "message"]
    assert items[0]["content"] == [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]
    assert items[1] == {"type": "reasoning", "summary": [], "encrypted_content": "prl1.x"}
    assert items[2] == {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "calling"}]}
    assert items[3] == {"type": "function_call", "call_id": "toolu_1", "name": "f", "arguments": '{"x":1}'}
    assert items[4]["output"] == [{"type": "input_text", "text": "r"}]
    assert translated.item_paths == ["messages[0].content", "messages[2].content[0]", "messages[2].content[1]",
                                     "messages[2].content[2]", "messages[3].content[0]", "messages[3].content[1]"]
    assert translated.part_paths[0] == ["messages[0].content", "messages[1].content[0]"]
    assert req.tools == [{"type": "function", "name": "f", "parameters": {"type": "object"}}]


def test_service_errors_name_the_anthropic_block() -> None:
    translated = translate(_request(messages=[{"role": "user", "content": "a"},
                                              {"role": "user", "content": [{"type": "text", "text": "b"}]}]))
    err = translated.locate(InvalidRequest("bad part", param="input[0].content[1].text"))
    assert (err.param, err.message) == ("messages[1].content[0]", "messages[1].content[0]: bad part")
    other = translated.locate(InvalidRequest("no", param="model"))
    assert (other.param, other.message) == ("model", "no")


def test_thinking_and_effort_options() -> None:
    assert translate(_request(messages=[{"role": "user", "content": "a"}])).request.include is None
    enabled = translate(_request(max_tokens=40_000, messages=[{"role": "user", "content": "a"}],
                                 thinking={"type": "enabled", "budget_tokens": 20_000}))
    assert enabled.thinking and enabled.thinking_text and enabled.request.reasoning is not None
    assert enabled.request.reasoning.effort == "high"
    omitted = translate(_request(messages=[{"role": "user", "content": "a"}],
                                 thinking={"type": "adaptive", "display": "omitted"}, output_config={"effort": "max"}))
    assert omitted.thinking and not omitted.thinking_text
    assert omitted.request.reasoning is not None and omitted.request.reasoning.effort == "max"
    disabled = translate(_request(messages=[{"role": "user", "content": "a"}], thinking={"type": "disabled"}))
    assert not disabled.thinking and disabled.request.include is None


@pytest.mark.parametrize("messages", [
    [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
     {"role": "user", "content": "no result"}],
    [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]}],
])
def test_tool_pairing_rules(messages: list[dict[str, Any]]) -> None:
    with pytest.raises(InvalidRequest):
        translate(_request(messages=messages))


def test_a_system_turn_between_a_tool_use_and_its_result_is_allowed() -> None:
    translated = translate(_request(messages=[
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
        {"role": "system", "content": "Reminder."},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]}]))
    assert isinstance(translated.request.input, list)
    assert [i.get("role", i["type"]) for i in translated.request.input] == [
        "user", "function_call", "system", "function_call_output"]


def test_a_final_assistant_message_may_be_empty() -> None:
    items = translate(_request(messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": []}]))
    assert isinstance(items.request.input, list) and len(items.request.input) == 1


def test_usage_excludes_cached_input() -> None:
    canonical = {"input_tokens": 100, "output_tokens": 7,
                 "input_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 30}}
    assert usage(canonical) == {"input_tokens": 10, "output_tokens": 7, "cache_creation_input_tokens": 30,
                                "cache_read_input_tokens": 60}
    assert usage(None, 4)["output_tokens"] == 4


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="ab c", max_size=40), cuts=st.lists(st.integers(0, 40), max_size=8),
       sequences=st.lists(st.text(alphabet="ab c", min_size=1, max_size=4), max_size=3))
def test_streamed_stop_sequences_cut_where_the_whole_text_does(text: str, cuts: list[int],
                                                              sequences: list[str]) -> None:
    points = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    stop = StopFilter(tuple(sequences))
    shown = ""
    for start, end in itertools.pairwise(points):
        shown += stop.feed(text[start:end])
        if stop.matched is not None:
            break
    if stop.matched is None:
        shown += stop.flush()
    expected = first_stop(text, tuple(sequences))
    if expected is None:
        assert (shown, stop.matched) == (text, None)
    else:
        assert (shown, stop.matched) == (text[:expected[0]], expected[1])


def _run(feed: list[Any], rendering: Rendering) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Model events through the real stream builder: the Anthropic events, and the finished response."""
    req = CreateResponseRequest(model="m", input="x", store=False)
    builder = StreamBuilder(new_response(req, response_id="resp_1", model="m", status="in_progress", store=False),
                            emit=True, obfuscate=False, seal=lambda item: "sealed")
    events = MessageEvents(rendering)
    out = []
    canonical = builder.start() + builder.in_progress()
    for model_event in feed:
        finish = isinstance(model_event, Finish)
        canonical += builder.finish(model_event.reason) if finish else builder.feed(model_event)
    for event in canonical:
        out += events.feed(event)
    return out, builder.response


def _fold(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What a client accumulates from the events (as the SDK's stream accumulator does)."""
    message: dict[str, Any] = {}
    partial: dict[int, str] = {}
    for event in events:
        kind = event["type"]
        if kind == "message_start":
            message = {**event["message"], "content": []}
        elif kind == "content_block_start":
            message["content"].append(dict(event["content_block"]))
        elif kind == "content_block_delta":
            index, delta = event["index"], event["delta"]
            block = message["content"][index]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            else:
                partial[index] = partial.get(index, "") + delta["partial_json"]
                block["input"] = json.loads(partial[index])
        elif kind == "message_delta":
            message.update(event["delta"], usage=event["usage"])
    return message


@pytest.mark.parametrize("thinking_text", [True, False])
def test_streamed_events_fold_to_the_finished_message(thinking_text: bool) -> None:
    rendering = Rendering("msg_1", thinking=True, thinking_text=thinking_text)
    feed = [ReasoningDelta("think "), ReasoningDelta("hard"), TextDelta("Hello"), TextDelta(" world"),
            ToolCallDelta(0, '{"a": ', "call_1", "f"), ToolCallDelta(0, "1}"),
            ToolCallDelta(1, "", "call_2", "g"), Usage(9, 4), Finish("tool_calls")]
    events, response = _run(feed, rendering)
    assert events[-1] == {"type": "message_stop"}
    assert _fold(events) == message_from_response(response, rendering)
    blocks = message_from_response(response, rendering)["content"]
    assert [b["type"] for b in blocks] == ["thinking", "text", "tool_use", "tool_use"]
    assert blocks[0] == {"type": "thinking", "thinking": "think hard" if thinking_text else "", "signature": "sealed"}
    assert blocks[2]["input"] == {"a": 1} and blocks[3]["input"] == {}


def test_a_cut_call_keeps_what_parses_and_a_bad_complete_call_is_an_error() -> None:
    rendering = Rendering("msg_1")
    _, cut = _run([ToolCallDelta(0, '{"a": 1, "b": "x', "call_1", "f"), Finish("length")], rendering)
    message = message_from_response(cut, rendering)
    # An unfinished string is left out, as the SDK's stream accumulator (jiter's partial mode) leaves it out.
    assert message["stop_reason"] == "max_tokens" and message["content"][0]["input"] == {"a": 1}
    with pytest.raises(Exception, match="not a JSON object"):
        _run([ToolCallDelta(0, "[1, 2]", "call_1", "f"), Finish("tool_calls")], rendering)
