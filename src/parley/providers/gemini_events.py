"""Gemini `streamGenerateContent?alt=sse` chunks (or one `generateContent` reply) -> canonical model events.

Each SSE `data:` is a GenerateContentResponse (https://ai.google.dev/api/generate-content#v1beta.GenerateContentResponse):
the parts of `candidates[0].content` — text, thought text (`thought: true`), whole `functionCall`s — then a
`finishReason`, `usageMetadata` along the way. A part's `thoughtSignature` becomes a ReasoningState saying which
part carried it (gemini_request.py puts it back there). Usage: Gemini counts thoughts apart from candidates;
Parley's output_tokens include them (as OpenAI's include reasoning), reported as reasoning_tokens.
"""

from __future__ import annotations

from typing import Any

import orjson

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
from parley.providers.gemini_request import KIND
from parley.providers.native import UpstreamReported
from parley.providers.native_items import new_call_id, state
from parley.providers.upstream_http import UpstreamReport, error_report

_MAX_COUNT = 2**53
# https://ai.google.dev/api/generate-content#FinishReason
_FILTERED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
                       "LANGUAGE"})
_BROKEN = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"})


def _dict(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedReply(f"{what} is not an object")
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise MalformedReply(f"{what} is not a string")
    return value


def _count(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if value is None:
        return 0
    if type(value) is not int or not 0 <= value <= _MAX_COUNT:
        raise MalformedReply(f"usageMetadata.{key} is not a token count")
    return value


def _usage(data: object) -> Usage:
    usage = _dict(data, "usageMetadata")
    thoughts = _count(usage, "thoughtsTokenCount")
    return Usage(
        input_tokens=_count(usage, "promptTokenCount") + _count(usage, "toolUsePromptTokenCount"),
        output_tokens=_count(usage, "candidatesTokenCount") + thoughts,
        cached_tokens=_count(usage, "cachedContentTokenCount"),
        reasoning_tokens=thoughts,
    )


class GeminiParser:
    def __init__(self, call: ModelCall, max_output_chars: int) -> None:
        self.finish: FinishReason | None = None
        self._model = call.upstream_model
        self._usage: Usage | None = None
        self._calls = 0
        self._chars = 0
        self._max_chars = max_output_chars

    def _grow(self, text: str) -> None:
        self._chars += len(text)
        if self._chars > self._max_chars:
            raise TooMuchOutput

    def _signature(self, sig: object, on: str, call_id: str | None = None) -> ReasoningState:
        data: dict[str, Any] = {"signature": _text(sig, "thoughtSignature"), "on": on}
        if call_id is not None:
            data["call_id"] = call_id
        return ReasoningState(state(KIND, self._model, **data))

    def event(self, data: Any) -> list[ModelEvent]:
        chunk = _dict(data, "a chunk")
        if chunk.get("error") is not None:
            raise UpstreamReported(error_report(chunk) or UpstreamReport("an error chunk"))
        if chunk.get("usageMetadata") is not None:
            self._usage = _usage(chunk["usageMetadata"])
        candidates = chunk.get("candidates")
        if not candidates:
            feedback = chunk.get("promptFeedback")
            if isinstance(feedback, dict) and feedback.get("blockReason"):
                self.finish = "content_filter"  # the prompt itself was blocked: no candidate at all
            return []
        if not isinstance(candidates, list):
            raise MalformedReply("candidates is not a list")
        candidate = _dict(candidates[0], "a candidate")
        events: list[ModelEvent] = []
        content = candidate.get("content")
        if content is not None:
            parts = _dict(content, "content").get("parts") or []
            if not isinstance(parts, list):
                raise MalformedReply("parts is not a list")
            for part in parts:
                events += self._part(_dict(part, "a part"))
        reason = candidate.get("finishReason")
        if reason is not None:
            self._finish(_text(reason, "finishReason"))
        return events

    def _part(self, part: dict[str, Any]) -> list[ModelEvent]:
        sig = part.get("thoughtSignature")
        call = part.get("functionCall")
        if call is not None:
            call = _dict(call, "functionCall")
            call_id = call.get("id") or new_call_id()
            arguments = orjson.dumps(_dict(call.get("args") or {}, "functionCall.args")).decode()
            self._grow(arguments)
            index, self._calls = self._calls, self._calls + 1
            delta = ToolCallDelta(index=index, arguments=arguments, call_id=_text(call_id, "functionCall.id"),
                                  name=_text(call.get("name"), "functionCall.name"))
            return [self._signature(sig, "call", call_id), delta] if sig else [delta]
        text = part.get("text")
        events: list[ModelEvent] = []
        if text:
            self._grow(_text(text, "text"))
            events.append(ReasoningDelta(text) if part.get("thought") else TextDelta(text))
        if sig:
            events.append(self._signature(sig, "text" if text and not part.get("thought") else "part"))
        return events

    def _finish(self, reason: str) -> None:
        if reason in _BROKEN:
            raise UpstreamReported(UpstreamReport(f"the model's function call was unusable ({reason})",
                                                  code=reason.lower()))
        if reason == "MAX_TOKENS":
            self.finish = "length"
        elif reason in _FILTERED:
            self.finish = "content_filter"
        else:
            self.finish = "tool_calls" if self._calls else "stop"

    def body(self, data: Any) -> list[ModelEvent]:
        return self.event(data)

    def end(self) -> list[ModelEvent]:
        return [self._usage or Usage(0, self._chars // 4)]
