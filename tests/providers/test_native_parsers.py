"""The native parsers, event by event: what each upstream event becomes, and the replies of the wrong shape."""

from __future__ import annotations

from typing import Any

import pytest

from parley.providers.anthropic_events import AnthropicParser
from parley.providers.base import (
    HostedEvent,
    HostedItem,
    HostedStarted,
    HostedTool,
    ModelCall,
    ModelEvent,
    ReasoningDelta,
    ReasoningState,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from parley.providers.chat_chunks import MalformedReply, TooMuchOutput
from parley.providers.gemini_events import GeminiParser
from parley.providers.native import StreamEnded, UpstreamReported
from parley.providers.responses_events import ResponsesParser

CALL = ModelCall("model-x", [])


def _feed(parser: Any, events: list[dict[str, Any]]) -> list[ModelEvent]:
    out: list[ModelEvent] = []
    for event in events:
        try:
            out += parser.event(event)
        except StreamEnded:  # the terminal event: the provider reads no further
            break
    return out + parser.end()


# -- Anthropic -------------------------------------------------------------------------------------------------


def _block(index: int, start: dict[str, Any], *deltas: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"type": "content_block_start", "index": index, "content_block": start},
            *({"type": "content_block_delta", "index": index, "delta": d} for d in deltas),
            {"type": "content_block_stop", "index": index}]


def test_anthropic_thinking_signature_redacted_and_usage() -> None:
    parser = AnthropicParser(CALL, 10_000)
    usage = {"input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5}
    events = [{"type": "message_start", "message": {"usage": usage}}, {"type": "ping"},
              *_block(0, {"type": "thinking", "thinking": ""}, {"type": "thinking_delta", "thinking": "Hm."},
                      {"type": "signature_delta", "signature": "c2ln"}),
              *_block(1, {"type": "redacted_thinking", "data": "QmxvYg=="}),
              *_block(2, {"type": "text", "text": ""}, {"type": "text_delta", "text": "Hi"}),
              *_block(3, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
                      {"type": "input_json_delta", "partial_json": '{"a"'},
                      {"type": "input_json_delta", "partial_json": ": 1}"}),
              *_block(4, {"type": "tool_use", "id": "toolu_2", "name": "g", "input": {}}),
              {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 42}},
              {"type": "message_stop"}]
    out = _feed(parser, events)
    assert out == [
        ReasoningDelta("Hm."),
        ReasoningState({"kind": "anthropic", "model": "model-x", "signature": "c2ln"}),
        ReasoningState({"kind": "anthropic", "model": "model-x", "redacted": "QmxvYg=="}),
        TextDelta("Hi"),
        ToolCallDelta(3, "", "toolu_1", "f"), ToolCallDelta(3, '{"a"'), ToolCallDelta(3, ": 1}"),
        ToolCallDelta(4, "", "toolu_2", "g"), ToolCallDelta(4, "{}"),  # a tool without input gets {}
        Usage(input_tokens=115, output_tokens=42, cached_tokens=100, cache_write_tokens=5),
    ]
    assert parser.finish == "tool_calls"


@pytest.mark.parametrize(("stop", "finish"), [("end_turn", "stop"), ("max_tokens", "length"),
                                               ("refusal", "content_filter"), ("pause_turn", "stop"),
                                               ("model_context_window_exceeded", "length")])
def test_anthropic_stop_reasons(stop: str, finish: str) -> None:
    parser = AnthropicParser(CALL, 100)
    _feed(parser, [{"type": "message_delta", "delta": {"stop_reason": stop}}, {"type": "message_stop"}])
    assert parser.finish == finish


def test_anthropic_structured_answer_tool_is_the_text() -> None:
    call = ModelCall("model-x", [], text_format={"type": "json_object"})
    parser = AnthropicParser(call, 100)
    out = _feed(parser, [*_block(0, {"type": "tool_use", "id": "t", "name": "json_response", "input": {}},
                                 {"type": "input_json_delta", "partial_json": '{"a": 1}'}),
                         {"type": "message_delta", "delta": {"stop_reason": "tool_use"}}, {"type": "message_stop"}])
    assert out[0] == TextDelta('{"a": 1}') and parser.finish == "stop"
    whole = AnthropicParser(call, 100)
    body = {"type": "message", "content": [{"type": "tool_use", "id": "t", "name": "json_response",
                                            "input": {"a": 1}}], "stop_reason": "tool_use", "usage": {}}
    assert whole.body(body)[0] == TextDelta('{"a":1}') and whole.finish == "stop"


def test_anthropic_errors_and_shapes() -> None:
    with pytest.raises(UpstreamReported) as info:
        AnthropicParser(CALL, 100).event({"type": "error", "error": {"type": "overloaded_error",
                                                                      "message": "Overloaded"}})
    assert info.value.report.type == "overloaded_error"
    for bad in ([], {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}},
                {"type": "content_block_start", "index": "0", "content_block": {"type": "text"}},
                {"type": "message_delta", "delta": {}, "usage": {"output_tokens": "many"}}):
        with pytest.raises(MalformedReply):
            AnthropicParser(CALL, 100).event(bad)
    with pytest.raises(TooMuchOutput):
        _feed(AnthropicParser(CALL, 3), _block(0, {"type": "text", "text": ""}, {"type": "text_delta", "text": "abcd"}))


# -- Gemini ------------------------------------------------------------------------------------------------------


def _chunk(*parts: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], **extra}


def test_gemini_thoughts_signatures_calls_and_usage() -> None:
    parser = GeminiParser(CALL, 10_000)
    usage = {"promptTokenCount": 10, "candidatesTokenCount": 4, "thoughtsTokenCount": 6, "cachedContentTokenCount": 8,
             "toolUsePromptTokenCount": 2}
    out = _feed(parser, [
        _chunk({"text": "Thinking.", "thought": True}),
        _chunk({"functionCall": {"name": "f", "args": {"a": 1}, "id": "fc1"}, "thoughtSignature": "c2ln"},
               {"functionCall": {"name": "g", "args": {}}}),
        _chunk({"text": "", "thoughtSignature": "bGFzdA=="}, finish="STOP", usageMetadata=usage),
    ])
    gemini = {"kind": "gemini", "model": "model-x"}
    assert out[:3] == [ReasoningDelta("Thinking."), ReasoningState({**gemini, "signature": "c2ln", "on": "call",
                                                                    "call_id": "fc1"}),
                       ToolCallDelta(0, '{"a":1}', "fc1", "f")]
    made = out[3]
    assert isinstance(made, ToolCallDelta) and made.index == 1 and made.call_id and made.call_id.startswith("call_")
    assert out[4] == ReasoningState({**gemini, "signature": "bGFzdA==", "on": "part"})
    assert out[5] == Usage(input_tokens=12, output_tokens=10, cached_tokens=8, reasoning_tokens=6)
    assert parser.finish == "tool_calls"


def test_gemini_text_signature_and_finish_reasons() -> None:
    parser = GeminiParser(CALL, 100)
    out = parser.event(_chunk({"text": "Hi", "thoughtSignature": "c2ln"}, finish="MAX_TOKENS"))
    assert out == [TextDelta("Hi"), ReasoningState({"kind": "gemini", "model": "model-x", "signature": "c2ln",
                                                    "on": "text"})]
    assert parser.finish == "length"
    blocked = GeminiParser(CALL, 100)
    blocked.event({"promptFeedback": {"blockReason": "SAFETY"}})
    assert blocked.finish == "content_filter"
    filtered = GeminiParser(CALL, 100)
    filtered.event(_chunk(finish="SAFETY"))
    assert filtered.finish == "content_filter"
    with pytest.raises(UpstreamReported):
        GeminiParser(CALL, 100).event(_chunk(finish="MALFORMED_FUNCTION_CALL"))
    with pytest.raises(UpstreamReported):
        GeminiParser(CALL, 100).event({"error": {"code": 500, "message": "boom", "status": "INTERNAL"}})
    for bad in ({"candidates": "x"}, _chunk({"functionCall": {"name": 5}}), _chunk({"text": 5}),
                {"candidates": [{"content": {"parts": [{"text": "x"}]}}], "usageMetadata": {"promptTokenCount": -1}}):
        with pytest.raises(MalformedReply):
            GeminiParser(CALL, 100).event(bad)


# -- Responses ---------------------------------------------------------------------------------------------------


def test_responses_stream_summary_state_and_hosted_items() -> None:
    call = ModelCall("model-x", [], hosted_tools=[HostedTool("web_search", {"type": "web_search"})])
    parser = ResponsesParser(call, 10_000)
    reasoning = {"id": "rs_up", "type": "reasoning", "summary": [{"type": "summary_text", "text": "Hm."}],
                 "encrypted_content": "gAAAA"}
    search = {"id": "ws_up", "type": "web_search_call", "status": "completed", "action": {"type": "search"}}
    out = _feed(parser, [
        {"type": "response.created", "response": {}},
        {"type": "response.output_item.added", "output_index": 0, "item": {"type": "reasoning", "id": "rs_up"}},
        {"type": "response.reasoning_summary_text.delta", "output_index": 0, "summary_index": 0, "delta": "Hm."},
        {"type": "response.output_item.done", "output_index": 0, "item": reasoning},
        {"type": "response.output_item.added", "output_index": 1, "item": {**search, "status": "in_progress"}},
        {"type": "response.web_search_call.searching", "item_id": "ws_up", "output_index": 1, "sequence_number": 5},
        {"type": "response.output_item.done", "output_index": 1, "item": search},
        {"type": "response.output_item.added", "output_index": 2,
         "item": {"type": "function_call", "call_id": "c1", "name": "f", "arguments": ""}},
        {"type": "response.function_call_arguments.delta", "output_index": 2, "delta": "{}"},
        {"type": "response.output_item.done", "output_index": 2,
         "item": {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}},
        {"type": "response.completed", "response": {"status": "completed", "usage": {
            "input_tokens": 9, "output_tokens": 3, "input_tokens_details": {"cached_tokens": 4},
            "output_tokens_details": {"reasoning_tokens": 2}}}},
    ])
    up = {"kind": "openai_responses", "model": "model-x"}
    assert out[0] == ReasoningDelta("Hm.", summary_index=0)
    assert out[1] == ReasoningState({**up, "item": reasoning})
    # The hosted item starts live (a Parley id), its events follow as they come, and its end finishes it.
    started, searching, hosted = out[2:5]
    assert isinstance(started, HostedStarted) and started.item == {**search, "status": "in_progress",
                                                                   "id": started.key}
    assert started.key.startswith("ws_") and started.key != "ws_up"
    assert searching == HostedEvent(started.key, "response.web_search_call.searching", {})
    assert isinstance(hosted, HostedItem) and hosted.upstream == {**up, "item": search}
    assert hosted.item == {**search, "id": started.key} and hosted.key == started.key
    assert hosted.events == () and hosted.tool == "web_search"
    assert out[5:] == [ToolCallDelta(2, "", "c1", "f"), ToolCallDelta(2, "{}"),
                       Usage(input_tokens=9, output_tokens=3, cached_tokens=4, reasoning_tokens=2)]
    assert parser.finish == "tool_calls"


def test_responses_whole_reply_incomplete_and_failures() -> None:
    parser = ResponsesParser(CALL, 10_000)
    body = {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}, "output": [
        {"type": "message", "content": [{"type": "output_text", "text": "Hi"}]}]}
    assert parser.body(body) == [TextDelta("Hi")] and parser.finish == "length"
    quiet = ResponsesParser(CALL, 10_000)  # a server that sent an item's text only with its done event
    assert quiet.event({"type": "response.output_item.done", "output_index": 0, "item": {
        "type": "message", "content": [{"type": "output_text", "text": "whole"}]}}) == [TextDelta("whole")]
    with pytest.raises(UpstreamReported) as info:
        ResponsesParser(CALL, 100).event({"type": "response.failed", "response": {
            "status": "failed", "error": {"code": "server_error", "message": "boom"}}})
    assert info.value.report.code == "server_error"
    with pytest.raises(UpstreamReported):
        ResponsesParser(CALL, 100).event({"type": "error", "code": "rate_limit_exceeded", "message": "slow down"})
    for bad in ({"type": "response.output_text.delta", "output_index": 0, "delta": 5},
                {"type": "response.output_text.delta", "delta": "x"},
                {"type": "response.completed", "response": {"status": "completed", "usage": {"input_tokens": 1.5}}}):
        with pytest.raises(MalformedReply):
            ResponsesParser(CALL, 100).event(bad)


def test_responses_hosted_image_generation_keeps_its_partial_images() -> None:
    call = ModelCall("model-x", [], hosted_tools=[HostedTool("image_generation", {"type": "image_generation",
                                                                                   "partial_images": 1})])
    parser = ResponsesParser(call, 10_000)
    image = {"id": "ig_up", "type": "image_generation_call", "status": "completed", "result": "iVBORw0KGgo="}
    out = _feed(parser, [
        {"type": "response.created", "response": {}},
        {"type": "response.output_item.added", "output_index": 0,
         "item": {**image, "status": "in_progress", "result": None}},
        {"type": "response.image_generation_call.generating", "item_id": "ig_up", "output_index": 0,
         "sequence_number": 3},
        {"type": "response.image_generation_call.partial_image", "item_id": "ig_up", "output_index": 0,
         "sequence_number": 4, "partial_image_b64": "AAAA", "partial_image_index": 0, "size": "64x64"},
        {"type": "response.output_item.done", "output_index": 0, "item": image},
        {"type": "response.completed", "response": {"status": "completed", "usage": {
            "input_tokens": 1, "output_tokens": 1}}},
    ])
    started, generating, partial, hosted = out[:4]
    assert isinstance(started, HostedStarted) and started.key.startswith("ig_") and started.key != "ig_up"
    assert generating == HostedEvent(started.key, "response.image_generation_call.generating", {})
    assert partial == HostedEvent(started.key, "response.image_generation_call.partial_image",
                                  {"partial_image_b64": "AAAA", "partial_image_index": 0, "size": "64x64"})
    assert isinstance(hosted, HostedItem) and hosted.item["result"] == image["result"]
    assert hosted.item["id"] == hosted.key == started.key
    assert hosted.tool == "image_generation"
