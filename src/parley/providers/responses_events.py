"""A native Responses upstream's stream events (or whole Response) -> canonical model events.

The upstream's events are translated, not relayed: Parley's own stream builder numbers and ids everything.
Text, reasoning (its text and its summary parts) and function-call arguments stream as deltas; a finished
reasoning item becomes the upstream state its next turn needs (ReasoningState, the item verbatim with its
`encrypted_content`); a finished item of a hosted tool (`web_search_call`, ...) is passed through whole
(HostedItem). Event reference: https://platform.openai.com/docs/api-reference/responses-streaming
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from parley.ids import new_id
from parley.providers.base import (
    FinishReason,
    HostedEvent,
    HostedItem,
    HostedStarted,
    ModelCall,
    ModelEvent,
    ReasoningDelta,
    ReasoningState,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from parley.providers.chat_chunks import MalformedReply, TooMuchOutput, logprob_list
from parley.providers.hosted_input import NOT_CALLS, hosted_types
from parley.providers.native import StreamEnded, UpstreamReported
from parley.providers.native_items import state, upstream_call_name, upstream_state
from parley.providers.responses_request import KIND
from parley.providers.upstream_http import UpstreamReport, error_report

_MAX_COUNT = 2**53
_EVENT_KEYS = frozenset({"type", "item_id", "output_index", "sequence_number"})


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise MalformedReply(f"{what} is not a string")
    return value


def _dict(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedReply(f"{what} is not an object")
    return value


def _list(value: object, what: str) -> list[Any]:
    """A list field of an item (absent or null: empty)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedReply(f"{what} is not a list")
    return value


def _count(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if value is None:
        return 0
    if type(value) is not int or not 0 <= value <= _MAX_COUNT:
        raise MalformedReply(f"usage.{key} is not a token count")
    return value


def _index(event: dict[str, Any]) -> int:
    index = event.get("output_index")
    if type(index) is not int:
        raise MalformedReply("an event without an integer output_index")
    return index


def _usage(data: object) -> Usage:
    usage = _dict(data, "usage")
    return Usage(
        input_tokens=_count(usage, "input_tokens"), output_tokens=_count(usage, "output_tokens"),
        cached_tokens=_count(_dict(usage.get("input_tokens_details") or {}, "input_tokens_details"), "cached_tokens"),
        reasoning_tokens=_count(_dict(usage.get("output_tokens_details") or {}, "output_tokens_details"),
                                "reasoning_tokens"),
    )


def _request_ids(call: ModelCall) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in call.items:
        if item["type"] == "mcp_approval_request":
            upstream = upstream_state(item, KIND, call.upstream_model)
            if upstream is not None:
                found[str(upstream["item"].get("id"))] = item["id"]
    return found


def _call_name(item: dict[str, Any]) -> str:
    """The function a call names, as Parley offered it: a namespace member's (a call of a `namespace` tool's
    member names the namespace, responses_request.py _tools) is `<namespace>__<name>`."""
    name = _text(item.get("name"), "name")
    namespace = item.get("namespace")
    if namespace is None:
        return name
    return upstream_call_name({"name": name, "namespace": _text(namespace, "namespace")})


def _shown_id(item: dict[str, Any]) -> str:
    """A Parley id for a hosted item, with the upstream id's prefix (ws_, sh_, ...)."""
    upstream_id = str(item.get("id") or "")
    return new_id(upstream_id.split("_", 1)[0] if "_" in upstream_id else "item")


class ResponsesParser:
    def __init__(self, call: ModelCall, max_output_chars: int) -> None:
        self.finish: FinishReason | None = None
        self._model = call.upstream_model
        self._hosted = hosted_types(call.hosted_tools)
        # A hosted MCP server's approval requests the context holds: the upstream's id -> Parley's (what the client
        # was shown, and what its mcp_call's approval_request_id shows too).
        self._request_ids = _request_ids(call) if "mcp_call" in self._hosted else {}
        self._usage: Usage | None = None
        self._types: dict[int, str] = {}  # output_index -> item type
        self._hosted_ids: dict[int, str] = {}  # output_index -> the Parley id of a hosted item started live
        self._streamed: set[int] = set()  # output indexes whose text or arguments came as deltas
        self._calls = 0
        self._chars = 0
        self._max_chars = max_output_chars

    # -- the stream ------------------------------------------------------------------------------

    def event(self, data: Any) -> list[ModelEvent]:
        event = _dict(data, "an event")
        kind = event.get("type")
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is not None:
            return handler(self, event)
        index = event.get("output_index")
        if isinstance(kind, str) and isinstance(index, int) and index in self._hosted_ids:
            # A hosted item's own event (response.web_search_call.searching, a shell's output delta, ...), passed on
            # as it comes, its fields kept (response.image_generation_call.partial_image's image).
            fields = {key: value for key, value in event.items() if key not in _EVENT_KEYS}
            return [HostedEvent(self._hosted_ids[index], kind, fields)]
        return []

    def _grow(self, text: str) -> None:
        self._chars += len(text)
        if self._chars > self._max_chars:
            raise TooMuchOutput

    def _text_delta(self, event: dict[str, Any]) -> list[ModelEvent]:
        delta = _text(event.get("delta"), "delta")
        self._grow(delta)
        self._streamed.add(_index(event))
        logprobs = event.get("logprobs")  # (an empty list when none were asked for)
        return [TextDelta(delta, logprob_list(logprobs) if logprobs else None)]

    def _reasoning_delta(self, event: dict[str, Any]) -> list[ModelEvent]:
        delta = _text(event.get("delta"), "delta")
        self._grow(delta)
        self._streamed.add(_index(event))
        return [ReasoningDelta(delta)]

    def _summary_delta(self, event: dict[str, Any]) -> list[ModelEvent]:
        delta = _text(event.get("delta"), "delta")
        index = event.get("summary_index")
        if type(index) is not int:
            raise MalformedReply("a summary delta without an integer summary_index")
        self._grow(delta)
        self._streamed.add(_index(event))
        return [ReasoningDelta(delta, summary_index=index)]

    def _arguments_delta(self, event: dict[str, Any]) -> list[ModelEvent]:
        delta = _text(event.get("delta"), "delta")
        self._grow(delta)
        index = _index(event)
        self._streamed.add(index)
        return [ToolCallDelta(index=index, arguments=delta)]

    def _item_added(self, event: dict[str, Any]) -> list[ModelEvent]:
        index = _index(event)
        item = _dict(event.get("item"), "item")
        kind = _text(item.get("type"), "item.type")
        self._types[index] = kind
        if kind == "function_call":
            self._calls += 1
            return [ToolCallDelta(index=index, arguments="", call_id=_text(item.get("call_id"), "call_id"),
                                  name=_call_name(item))]
        if kind in self._hosted:
            key = self._hosted_ids[index] = _shown_id(item)
            return [HostedStarted(key, self._shown(item, key))]
        return []

    def _item_done(self, event: dict[str, Any]) -> list[ModelEvent]:
        index = _index(event)
        item = _dict(event.get("item"), "item")
        kind = self._types.get(index) or _text(item.get("type"), "item.type")
        if index in self._streamed:
            return self._state(kind, item, index)
        return self._whole_item(kind, item, index)  # a server that sent no deltas for it

    def _state(self, kind: str, item: dict[str, Any], index: int) -> list[ModelEvent]:
        if kind == "reasoning":
            return [ReasoningState(state(KIND, self._model, item=item))]
        if kind in self._hosted:
            return [self._hosted_item(kind, item, self._hosted_ids.pop(index, None))]
        return []

    def _hosted_item(self, kind: str, item: dict[str, Any], key: str | None) -> HostedItem:
        shown = self._shown(item, key or _shown_id(item))
        tool = None if kind in NOT_CALLS else self._hosted[kind]
        return HostedItem(shown, state(KIND, self._model, item=item), (), tool, key)

    def _shown(self, item: dict[str, Any], key: str) -> dict[str, Any]:
        """A hosted item as the client sees it: Parley's id, and an mcp_call naming its approval request by the id
        the client was shown for it."""
        shown = {**item, "id": key}
        request = item.get("approval_request_id")
        if request in self._request_ids:
            shown["approval_request_id"] = self._request_ids[request]
        return shown

    def _ended(self, event: dict[str, Any]) -> list[ModelEvent]:
        response = _dict(event.get("response"), "response")
        self._end(response)
        raise StreamEnded

    def _end(self, response: dict[str, Any]) -> None:
        if response.get("usage") is not None:
            self._usage = _usage(response["usage"])
        status = response.get("status")
        if status == "incomplete":
            details = response.get("incomplete_details")
            reason = details.get("reason") if isinstance(details, dict) else None
            self.finish = "content_filter" if reason == "content_filter" else "length"
        elif status == "failed":
            raise UpstreamReported(_failure(response))
        elif status in ("completed", None):  # (a server that leaves it out)
            self.finish = "tool_calls" if self._calls else "stop"
        else:  # in_progress, queued, cancelled: not a finished response
            raise MalformedReply("the response's status is not completed, incomplete or failed")

    def _failed(self, event: dict[str, Any]) -> list[ModelEvent]:
        raise UpstreamReported(_failure(_dict(event.get("response"), "response")))

    def _error(self, event: dict[str, Any]) -> list[ModelEvent]:
        raise UpstreamReported(error_report({"error": event}) or UpstreamReport("an error event"))

    # -- a whole reply ---------------------------------------------------------------------------

    def body(self, data: Any) -> list[ModelEvent]:
        response = _dict(data, "the reply")
        if response.get("error") is not None and response.get("status") != "failed":
            raise UpstreamReported(error_report(response) or UpstreamReport("an error body"))
        output = response.get("output")
        if not isinstance(output, list):
            raise MalformedReply("output is not a list")
        events: list[ModelEvent] = []
        for index, raw in enumerate(output):
            item = _dict(raw, "an output item")
            kind = _text(item.get("type"), "item.type")
            if kind == "function_call":
                self._calls += 1
            events += self._whole_item(kind, item, index)
        self._end(response)
        return events

    def _whole_item(self, kind: str, item: dict[str, Any], index: int) -> list[ModelEvent]:
        events: list[ModelEvent] = []
        if kind == "message":
            for part in _list(item.get("content"), "a message's content"):
                part = _dict(part, "a content part")
                text = part.get("text") if part.get("type") == "output_text" else part.get("refusal")
                if text:
                    self._grow(_text(text, "text"))
                    logprobs = part.get("logprobs")
                    events.append(TextDelta(text, logprob_list(logprobs) if logprobs else None))
        elif kind == "reasoning":
            for number, part in enumerate(_list(item.get("summary"), "a reasoning summary")):
                text = _text(_dict(part, "a summary part").get("text", ""), "summary text")
                self._grow(text)
                events.append(ReasoningDelta(text, summary_index=number))
            for part in _list(item.get("content"), "a reasoning item's content"):
                text = _text(_dict(part, "a content part").get("text", ""), "reasoning text")
                self._grow(text)
                events.append(ReasoningDelta(text))
        elif kind == "function_call":
            arguments = _text(item.get("arguments", ""), "arguments")
            self._grow(arguments)
            events.append(ToolCallDelta(index=index, arguments=arguments, call_id=_text(item.get("call_id"), "call_id"),
                                        name=_call_name(item)))
        return events + self._state(kind, item, index)

    def end(self) -> list[ModelEvent]:
        # A server that reports no usage: ~4 characters per token of output, input unknown.
        return [self._usage or Usage(0, self._chars // 4)]


# The stream's event types and their handlers: one table for every parser, not a dict of bound methods each.
_HANDLERS: dict[str, Callable[[ResponsesParser, dict[str, Any]], list[ModelEvent]]] = {
    "response.output_text.delta": ResponsesParser._text_delta,
    "response.refusal.delta": ResponsesParser._text_delta,
    "response.reasoning_text.delta": ResponsesParser._reasoning_delta,
    "response.reasoning_summary_text.delta": ResponsesParser._summary_delta,
    "response.function_call_arguments.delta": ResponsesParser._arguments_delta,
    "response.output_item.added": ResponsesParser._item_added,
    "response.output_item.done": ResponsesParser._item_done,
    "response.completed": ResponsesParser._ended,
    "response.incomplete": ResponsesParser._ended,
    "response.failed": ResponsesParser._failed,
    "error": ResponsesParser._error,
}


def _failure(response: dict[str, Any]) -> UpstreamReport:
    return error_report({"error": response.get("error") or {"message": "the response failed"}}) or UpstreamReport(
        "the response failed")
