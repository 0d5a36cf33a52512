"""Chat Completions reply chunks (or a whole non-streamed reply) -> canonical model events.

Every field is type-checked as it is read (a few isinstance checks per chunk, no model validation): an
upstream sending the wrong shape gets MalformedReply, which the provider turns into a 502, never a crash
further down the engine.
"""

from __future__ import annotations

from typing import Any

from parley.providers.base import FinishReason, ModelEvent, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from parley.providers.profiles import Profile

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}
_MAX_COUNT = 2**53  # a token count beyond this is not one (and sums of them must stay 64-bit)


class MalformedReply(Exception):
    """A reply that is not Chat Completions' shape (the provider maps it to a 502)."""


class TooMuchOutput(Exception):
    """The reply passed its limit of output characters (the provider maps it to a 502)."""


def _count(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if value is None:
        return 0
    if type(value) is not int or not 0 <= value <= _MAX_COUNT:
        raise MalformedReply(f"usage.{key} is not a token count")
    return value


def _details(data: dict[str, Any], key: str) -> dict[str, Any]:
    details = data.get(key)
    if details is None:
        return {}
    if not isinstance(details, dict):
        raise MalformedReply(f"usage.{key} is not an object")
    return details


def _usage(data: object) -> Usage:
    if not isinstance(data, dict):
        raise MalformedReply("'usage' is not an object")
    return Usage(
        input_tokens=_count(data, "prompt_tokens"),
        output_tokens=_count(data, "completion_tokens"),
        cached_tokens=_count(_details(data, "prompt_tokens_details"), "cached_tokens"),
        reasoning_tokens=_count(_details(data, "completion_tokens_details"), "reasoning_tokens"),
    )


def _token_bytes(entry: dict[str, Any], token: str) -> list[int]:
    raw = entry.get("bytes")
    if not raw:
        return list(token.encode())
    if not isinstance(raw, list) or not all(type(b) is int and 0 <= b < 256 for b in raw):
        raise MalformedReply("a logprob's bytes are not a list of bytes")
    return raw


def _logprob(entry: object) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise MalformedReply("a logprob is not an object")
    token, logprob = entry.get("token"), entry.get("logprob")
    if not isinstance(token, str) or type(logprob) not in (int, float):
        raise MalformedReply("a logprob without a string token and a numeric logprob")
    return {"token": token, "bytes": _token_bytes(entry, token), "logprob": logprob}


def _logprobs(choice: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Chat Completions logprobs.content[] -> Responses output_text logprobs (token, bytes, logprob, top).
    Only requested logprobs arrive, so checking every field here costs the hot path nothing."""
    lp = choice.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if not content:
        return None
    return logprob_list(content)


def logprob_list(content: object) -> list[dict[str, Any]]:
    """Logprob entries (Chat Completions' logprobs.content[], a Responses output_text's logprobs: the same
    fields), each checked and in the Responses shape."""
    if not isinstance(content, list):
        raise MalformedReply("logprobs are not a list")
    out = []
    for entry in content:
        converted = _logprob(entry)
        top = entry.get("top_logprobs")
        if top is None:
            top = []
        if not isinstance(top, list):
            raise MalformedReply("top_logprobs is not a list")
        converted["top_logprobs"] = [_logprob(t) for t in top]
        out.append(converted)
    return out


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise MalformedReply(f"{what} is not a string")
    return value


class ChunkParser:
    """Folds the fields of one choice's delta into canonical events, checking each field's type on the way
    (a few isinstance checks per chunk; whatever the upstream sends, a wrong shape is a 502, never a crash
    further down)."""

    def __init__(self, profile: Profile, max_output_chars: int) -> None:
        self.reasoning_field = profile.reasoning_field
        self.finish: FinishReason | None = None
        self.usage: Usage | None = None
        self.deltas = 0
        self.output_chars = 0
        self._calls: set[int] = set()  # the indexes of the tool calls begun (named)
        self._max_output_chars = max_output_chars

    def events(self, chunk: object) -> list[ModelEvent]:
        if not isinstance(chunk, dict):
            raise MalformedReply("a chunk that is not a JSON object")
        out: list[ModelEvent] = []
        usage = chunk.get("usage")
        if usage:
            self.usage = _usage(usage)
        choices = chunk.get("choices")
        if choices:
            if not isinstance(choices, list):
                raise MalformedReply("'choices' is not a list")
            for choice in choices:
                self._choice(choice, out)
        self.deltas += len(out)
        return out

    def _choice(self, choice: object, out: list[ModelEvent]) -> None:
        if not isinstance(choice, dict):
            raise MalformedReply("a choice that is not an object")
        index = choice.get("index")
        if index:  # absent, null (as some servers send it) or 0: the only choice
            if type(index) is not int:
                raise MalformedReply("a choice index that is not an integer")
            return
        delta = choice.get("delta") or choice.get("message")
        if delta:
            if not isinstance(delta, dict):
                raise MalformedReply("a delta (or message) that is not an object")
            self._delta(delta, choice, out)
        reason = choice.get("finish_reason")
        if reason:
            self.finish = _FINISH.get(_text(reason, "finish_reason"), "stop")

    def _delta(self, delta: dict[str, Any], choice: dict[str, Any], out: list[ModelEvent]) -> None:
        chars = self.output_chars
        if self.reasoning_field:
            reasoning = delta.get(self.reasoning_field)
            if reasoning:
                chars += len(_text(reasoning, self.reasoning_field))
                out.append(ReasoningDelta(reasoning))
        content = delta.get("content")
        if content:
            if type(content) is not str:
                raise MalformedReply("content is not a string")
            chars += len(content)
            out.append(TextDelta(content, _logprobs(choice) if choice.get("logprobs") else None))
        tool_calls = delta.get("tool_calls")
        if tool_calls:
            if not isinstance(tool_calls, list):
                raise MalformedReply("tool_calls is not a list")
            for position, call in enumerate(tool_calls):
                event = _tool_call(call, position)
                if event.index not in self._calls:  # a call's first delta names its function
                    if not event.name:
                        raise MalformedReply("a tool call without a function name")
                    self._calls.add(event.index)
                chars += len(event.arguments)
                out.append(event)
        if chars > self._max_output_chars:
            raise TooMuchOutput
        self.output_chars = chars


def _tool_call(call: object, position: int) -> ToolCallDelta:
    if not isinstance(call, dict):
        raise MalformedReply("a tool call that is not an object")
    function = call.get("function") or {}
    if not isinstance(function, dict):
        raise MalformedReply("a tool call's function is not an object")
    arguments = function.get("arguments") or ""
    name, call_id, index = function.get("name"), call.get("id"), call.get("index")
    if index is None:
        index = position
    if not (isinstance(arguments, str) and type(index) is int and (name is None or isinstance(name, str))
            and (call_id is None or isinstance(call_id, str))):
        raise MalformedReply("a tool call whose index, id, name or arguments has the wrong type")
    return ToolCallDelta(index=index, arguments=arguments, call_id=call_id, name=name)
