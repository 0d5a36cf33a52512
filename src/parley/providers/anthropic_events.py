"""Anthropic Messages stream events (or a whole Message) -> canonical model events, one event at a time.

https://docs.anthropic.com/en/docs/build-with-claude/streaming: `message_start` (usage so far),
`content_block_start` / `content_block_delta` (`text_delta`, `thinking_delta`, `signature_delta`,
`input_json_delta`) / `content_block_stop`, `message_delta` (stop_reason, usage), `message_stop`, `ping`,
`error`. A thinking block ends as a ReasoningState holding its signature; a redacted one is only that state.
The structured-answer tool's input (anthropic_request.py) is the message text. Usage: Anthropic's
`input_tokens` leaves out what was read from or written to the cache; Parley's input_tokens includes both
(as OpenAI's does), with `cached_tokens` and `cache_write_tokens` saying how many.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from parley.providers.anthropic_request import KIND, json_tool_name
from parley.providers.base import (
    FinishReason,
    ModelCall,
    ModelEvent,
    ReasoningDelta,
    ReasoningState,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from parley.providers.chat_chunks import MalformedReply, TooMuchOutput
from parley.providers.native import StreamEnded, UpstreamReported
from parley.providers.native_items import state
from parley.providers.upstream_http import UpstreamReport, error_report

_MAX_COUNT = 2**53
# https://docs.anthropic.com/en/api/handling-stop-reasons
_STOP: dict[str, FinishReason] = {
    "end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "tool_use": "tool_calls",
    "max_tokens": "length", "model_context_window_exceeded": "length", "refusal": "content_filter",
}
_USAGE_KEYS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


def _dict(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedReply(f"{what} is not an object")
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise MalformedReply(f"{what} is not a string")
    return value


def _index(event: dict[str, Any]) -> int:
    index = event.get("index")
    if type(index) is not int:
        raise MalformedReply("a content block event without an integer index")
    return index


class _Block:
    __slots__ = ("json", "kind", "signature", "streamed")

    def __init__(self, kind: str, json: bool = False) -> None:
        self.kind = kind
        self.json = json  # the structured-answer tool: its input is the message text
        self.signature: list[str] = []
        self.streamed = False  # whether any input JSON arrived (a tool without input sends none)


class AnthropicParser:
    def __init__(self, call: ModelCall, max_output_chars: int) -> None:
        self.finish: FinishReason | None = None
        self._model = call.upstream_model
        self._json_tool = json_tool_name(call)
        self._blocks: dict[int, _Block] = {}
        self._usage: dict[str, int] = dict.fromkeys(_USAGE_KEYS, 0)
        self._calls = 0
        self._chars = 0
        self._max_chars = max_output_chars
        self._stop: str | None = None

    def _grow(self, text: str) -> None:
        self._chars += len(text)
        if self._chars > self._max_chars:
            raise TooMuchOutput

    def _add_usage(self, data: object) -> None:
        usage = _dict(data, "usage")
        for key in _USAGE_KEYS:
            value = usage.get(key)
            if value is None:
                continue
            if type(value) is not int or not 0 <= value <= _MAX_COUNT:
                raise MalformedReply(f"usage.{key} is not a token count")
            self._usage[key] = value  # message_delta's counts are cumulative: the last one holds

    # -- the stream ------------------------------------------------------------------------------

    def event(self, data: Any) -> list[ModelEvent]:
        event = _dict(data, "an event")
        kind = event.get("type")
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        return handler(self, event) if handler is not None else []  # ping, and event types added later

    def _message_start(self, event: dict[str, Any]) -> list[ModelEvent]:
        message = _dict(event.get("message"), "message")
        if message.get("usage") is not None:
            self._add_usage(message["usage"])
        return []

    def _start(self, event: dict[str, Any]) -> list[ModelEvent]:
        index = _index(event)
        block = _dict(event.get("content_block"), "content_block")
        kind = _text(block.get("type"), "content_block.type")
        if kind == "tool_use":
            name = _text(block.get("name"), "tool name")
            is_json = name == self._json_tool
            self._blocks[index] = _Block(kind, json=is_json)
            if is_json:
                return []
            self._calls += 1
            return [ToolCallDelta(index=index, arguments="", call_id=_text(block.get("id"), "tool id"), name=name)]
        self._blocks[index] = _Block(kind)
        if kind == "redacted_thinking":
            return [ReasoningState(state(KIND, self._model, redacted=_text(block.get("data"), "data")))]
        if kind == "text" and block.get("text"):
            return self._text(_text(block["text"], "text"))
        if kind == "thinking" and block.get("thinking"):
            return self._thought(_text(block["thinking"], "thinking"))
        return []

    def _text(self, text: str) -> list[ModelEvent]:
        self._grow(text)
        return [TextDelta(text)]

    def _thought(self, text: str) -> list[ModelEvent]:
        self._grow(text)
        return [ReasoningDelta(text)]

    def _delta(self, event: dict[str, Any]) -> list[ModelEvent]:
        index = _index(event)
        block = self._blocks.get(index)
        if block is None:
            raise MalformedReply("a delta for a content block that never started")
        delta = _dict(event.get("delta"), "delta")
        kind = delta.get("type")
        if kind == "text_delta":
            return self._text(_text(delta.get("text"), "text"))
        if kind == "thinking_delta":
            return self._thought(_text(delta.get("thinking"), "thinking"))
        if kind == "signature_delta":
            block.signature.append(_text(delta.get("signature"), "signature"))
            return []
        if kind == "input_json_delta":
            partial = _text(delta.get("partial_json"), "partial_json")
            if not partial:
                return []
            block.streamed = True
            self._grow(partial)
            return [TextDelta(partial)] if block.json else [ToolCallDelta(index=index, arguments=partial)]
        return []  # citations_delta and later kinds: nothing Parley shows

    def _stop_block(self, event: dict[str, Any]) -> list[ModelEvent]:
        index = _index(event)
        block = self._blocks.get(index)
        if block is None:
            return []
        if block.kind == "thinking":
            return [ReasoningState(state(KIND, self._model, signature="".join(block.signature)))]
        if block.kind == "tool_use" and not block.streamed:
            return [TextDelta("{}")] if block.json else [ToolCallDelta(index=index, arguments="{}")]
        return []

    def _message_delta(self, event: dict[str, Any]) -> list[ModelEvent]:
        delta = _dict(event.get("delta") or {}, "delta")
        if delta.get("stop_reason") is not None:
            self._stop = _text(delta["stop_reason"], "stop_reason")
        if event.get("usage") is not None:
            self._add_usage(event["usage"])
        return []

    def _message_stop(self, event: dict[str, Any]) -> list[ModelEvent]:
        self.finish = self._finish()
        raise StreamEnded

    def _finish(self) -> FinishReason:
        reason = _STOP.get(self._stop or "end_turn", "stop")
        if reason == "tool_calls" and not self._calls:
            return "stop"  # only the structured answer's tool was called: that is the answer
        return reason

    def _error(self, event: dict[str, Any]) -> list[ModelEvent]:
        raise UpstreamReported(error_report(event) or UpstreamReport("an error event"))

    # -- a whole reply ---------------------------------------------------------------------------

    def body(self, data: Any) -> list[ModelEvent]:
        message = _dict(data, "the reply")
        if message.get("type") == "error":
            raise UpstreamReported(error_report(message) or UpstreamReport("an error body"))
        content = message.get("content")
        if not isinstance(content, list):
            raise MalformedReply("content is not a list")
        events: list[ModelEvent] = []
        for index, raw in enumerate(content):
            block = _dict(raw, "a content block")
            kind = block.get("type")
            if kind == "tool_use":
                events += self._start({"index": index, "content_block": block})
                value = block.get("input")
                arguments = _dict(value if value is not None else {}, "tool input")
                if arguments or self._blocks[index].json:
                    self._blocks[index].streamed = True
                    text = orjson.dumps(arguments).decode()
                    self._grow(text)
                    events.append(TextDelta(text) if self._blocks[index].json
                                  else ToolCallDelta(index=index, arguments=text))
            else:
                events += self._start({"index": index, "content_block": block})
                if kind == "thinking":
                    self._blocks[index].signature.append(_text(block.get("signature", ""), "signature"))
            events += self._stop_block({"index": index})
        if message.get("usage") is not None:
            self._add_usage(message["usage"])
        stop = message.get("stop_reason")
        self._stop = _text(stop, "stop_reason") if stop is not None else None
        self.finish = self._finish()
        return events

    def end(self) -> list[ModelEvent]:
        u = self._usage
        read, written = u["cache_read_input_tokens"], u["cache_creation_input_tokens"]
        return [Usage(input_tokens=u["input_tokens"] + read + written, output_tokens=u["output_tokens"],
                      cached_tokens=read, cache_write_tokens=written)]


# The stream's event types and their handlers: one table for every parser, not a dict of bound methods each.
_HANDLERS: dict[str, Callable[[AnthropicParser, dict[str, Any]], list[ModelEvent]]] = {
    "content_block_delta": AnthropicParser._delta,
    "content_block_start": AnthropicParser._start,
    "content_block_stop": AnthropicParser._stop_block,
    "message_start": AnthropicParser._message_start,
    "message_delta": AnthropicParser._message_delta,
    "message_stop": AnthropicParser._message_stop,
    "error": AnthropicParser._error,
}
