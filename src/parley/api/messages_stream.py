"""The Anthropic Messages door, outbound: the canonical response and its events as a Messages `Message` and as
Anthropic's stream events.

Streamed: `message_start`, one `ping`, then per output item a content block (`content_block_start`, deltas,
`content_block_stop`): reasoning a `thinking` block (`thinking_delta`s, then the sealed item as its
`signature_delta`), the message a `text` block (`text_delta`s), each function call a `tool_use` block (its whole
input as one `input_json_delta` when the call is complete, so blocks never interleave); then `message_delta`
(stop_reason, stop_sequence, cumulative usage) and `message_stop`. A failed response is an `error` event.
Not streamed: the same blocks, built from the finished response. `stop_sequences` are applied here to the text
(the upstream is not told): the text ends before the first sequence to complete, and a streamed response stops
reading from the upstream at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic_core import from_json

from parley.errors import UpstreamError

Event = dict[str, Any]
Item = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rendering:
    """How a response is shown to the Messages client (from its request)."""

    message_id: str
    thinking: bool = False  # thinking blocks are shown
    thinking_text: bool = False  # with their text (else the signature alone: `display: "omitted"`)
    stop_sequences: tuple[str, ...] = ()


def message_id(response_id: str) -> str:
    """`msg_` + the response's own id digits: one request is one id in both vocabularies (logs, usage records)."""
    return "msg_" + response_id.removeprefix("resp_")


def usage(canonical: dict[str, Any] | None, estimated_output: int = 0) -> dict[str, int]:
    """Responses usage -> Anthropic's: its `input_tokens` excludes what was read from or written to the cache."""
    canonical = canonical or {}
    details = canonical.get("input_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0)
    written = int(details.get("cache_write_tokens") or 0)
    total = int(canonical.get("input_tokens") or 0)
    return {"input_tokens": max(0, total - cached - written),
            "output_tokens": int(canonical.get("output_tokens") or estimated_output),
            "cache_creation_input_tokens": written, "cache_read_input_tokens": cached}


def stop_reason(response: dict[str, Any]) -> str:
    """Why the model stopped, from the final response: a cut (max_output_tokens, content filter), a call, or done."""
    if response.get("status") == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return "refusal" if reason == "content_filter" else "max_tokens"
    if any(item.get("type") == "function_call" for item in response.get("output") or ()):
        return "tool_use"
    return "end_turn"


def reasoning_text(item: Item) -> str:
    """The thinking of a reasoning item: its reasoning text, else its summary (native Responses upstreams)."""
    content = [p.get("text", "") for p in item.get("content") or () if p.get("type") == "reasoning_text"]
    if content:
        return "".join(content)
    return "\n\n".join(p.get("text", "") for p in item.get("summary") or ())


def tool_input(item: Item) -> tuple[str, dict[str, Any]]:
    """A function call's arguments as sent (`partial_json`) and as the block's `input` object. A call cut short by
    max_tokens keeps what parses of its arguments; a complete call whose arguments are not a JSON object is the
    model's error (502, as the engine answers for unusable calls)."""
    raw = str(item.get("arguments") or "")
    if not raw.strip():
        return "", {}
    complete = item.get("status") != "incomplete"
    try:
        parsed = orjson.loads(raw) if complete else from_json(raw, allow_partial=True)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        return raw, parsed
    if not complete:
        return raw, {}
    raise UpstreamError.bad_gateway(
        f"The response was rejected: the model's call of {item.get('name')} has arguments that are not a JSON object.",
        code="model_output_invalid")


class StopFilter:
    """Applies stop sequences to streamed text: holds back what could still become a sequence, and ends the text at
    the first sequence to complete (the one ending earliest; at equal ends, the longest)."""

    def __init__(self, sequences: tuple[str, ...]) -> None:
        self.sequences = sequences
        self._hold = max((len(s) for s in sequences), default=1) - 1
        self._held = ""
        self.matched: str | None = None

    def feed(self, text: str) -> str:
        """The text that may be shown now; after a match, the text before it (and `matched` is set)."""
        if not self.sequences:
            return text
        buffer = self._held + text
        cut = first_stop(buffer, self.sequences)
        if cut is not None:
            self._held = ""
            self.matched = cut[1]
            return buffer[:cut[0]]
        keep = min(self._hold, len(buffer))
        self._held = buffer[len(buffer) - keep:] if keep else ""
        return buffer[:len(buffer) - keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


def first_stop(text: str, sequences: tuple[str, ...]) -> tuple[int, str] | None:
    """(where the text ends, the sequence) for the sequence completing first in `text`, or None."""
    best: tuple[int, int, str] | None = None  # (end, -length, sequence)
    for sequence in sequences:
        at = text.find(sequence)
        if at >= 0:
            candidate = (at + len(sequence), -len(sequence), sequence)
            best = candidate if best is None or candidate < best else best
    return (best[0] + best[1], best[2]) if best is not None else None


# -- a finished response ---------------------------------------------------------------------------------------


def message_skeleton(response: dict[str, Any], rendering: Rendering) -> dict[str, Any]:
    return {"id": rendering.message_id, "type": "message", "role": "assistant", "model": response["model"],
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage(None)}


def message_from_response(response: dict[str, Any], rendering: Rendering) -> dict[str, Any]:
    """The `Message` of a finished (completed or incomplete) response."""
    message = message_skeleton(response, rendering)
    content: list[dict[str, Any]] = message["content"]
    stop_sequence: str | None = None
    for item in response.get("output") or ():
        kind = item.get("type")
        if kind == "reasoning" and rendering.thinking:
            content.append({"type": "thinking", "thinking": reasoning_text(item) if rendering.thinking_text else "",
                            "signature": item.get("encrypted_content") or ""})
        elif kind == "message":
            text = "".join(p.get("text", "") for p in item.get("content") or () if p.get("type") == "output_text")
            cut = first_stop(text, rendering.stop_sequences)
            if cut is not None:
                text, stop_sequence = text[:cut[0]], cut[1]
            if text:
                content.append({"type": "text", "text": text})
            if stop_sequence is not None:
                break  # the model's output ends at the stop sequence: later blocks were never "generated"
        elif kind == "function_call":
            _, parsed = tool_input(item)
            content.append({"type": "tool_use", "id": item["call_id"], "name": item["name"], "input": parsed})
    message["stop_reason"] = "stop_sequence" if stop_sequence is not None else stop_reason(response)
    message["stop_sequence"] = stop_sequence
    message["usage"] = usage(response.get("usage"))
    return message


# -- the stream --------------------------------------------------------------------------------------------------


class MessageEvents:
    """Canonical Responses stream events of one response in, Anthropic stream events out. `done` once the message
    ended (`message_stop`) or failed (`error`): the caller stops reading the canonical stream then."""

    def __init__(self, rendering: Rendering) -> None:
        self._r = rendering
        self._filter = StopFilter(rendering.stop_sequences)
        self._next_index = 0
        self._text: int | None = None  # the open text block's index
        self._thinking: int | None = None  # the open thinking block's index
        self._summary = 0  # the summary part being streamed (parts are joined by a blank line, as reasoning_text)
        self._deltas = 0  # output deltas seen: the usage estimate when a stop sequence ends the stream early
        self.done = False

    def feed(self, event: Event) -> list[Event]:
        if self.done:
            return []
        kind = event["type"]
        handler = _HANDLERS.get(kind)
        return handler(self, event) if handler is not None else []

    def _start(self, event: Event) -> list[Event]:
        start = {"type": "message_start", "message": message_skeleton(event["response"], self._r)}
        return [start, {"type": "ping"}]

    def _block(self, block: dict[str, Any]) -> tuple[int, Event]:
        index = self._next_index
        self._next_index += 1
        return index, {"type": "content_block_start", "index": index, "content_block": block}

    def _added(self, event: Event) -> list[Event]:
        if event["item"].get("type") == "reasoning" and self._r.thinking:
            self._thinking, start = self._block({"type": "thinking", "thinking": "", "signature": ""})
            return [start]
        return []

    def _text_delta(self, event: Event) -> list[Event]:
        self._deltas += 1
        return self._show_text(self._filter.feed(event["delta"]))

    def _show_text(self, text: str) -> list[Event]:
        out: list[Event] = []
        if text:
            if self._text is None:
                self._text, start = self._block({"type": "text", "text": ""})
                out.append(start)
            out.append({"type": "content_block_delta", "index": self._text,
                        "delta": {"type": "text_delta", "text": text}})
        if self._filter.matched is not None:
            out += self._close_text()
            out += self._end({"stop_reason": "stop_sequence", "stop_sequence": self._filter.matched},
                             usage(None, self._deltas))
        return out

    def _thinking_delta(self, event: Event) -> list[Event]:
        self._deltas += 1
        if self._thinking is None or not self._r.thinking_text or not event["delta"]:
            return []
        text = event["delta"]
        part = event.get("summary_index", 0)
        if part != self._summary:
            self._summary = part
            text = "\n\n" + text
        return [{"type": "content_block_delta", "index": self._thinking,
                 "delta": {"type": "thinking_delta", "thinking": text}}]

    def _close_text(self) -> list[Event]:
        if self._text is None:
            return []
        index, self._text = self._text, None
        return [{"type": "content_block_stop", "index": index}]

    def _item_done(self, event: Event) -> list[Event]:
        item = event["item"]
        kind = item.get("type")
        if kind == "message":
            out = self._show_text(self._filter.flush())
            return out if self.done else out + self._close_text()
        if kind == "reasoning" and self._thinking is not None:
            index, self._thinking, self._summary = self._thinking, None, 0
            signature = {"type": "signature_delta", "signature": item.get("encrypted_content") or ""}
            return [{"type": "content_block_delta", "index": index, "delta": signature},
                    {"type": "content_block_stop", "index": index}]
        if kind == "function_call":
            raw, _ = tool_input(item)
            index, start = self._block({"type": "tool_use", "id": item["call_id"], "name": item["name"], "input": {}})
            out = [start]
            if raw:
                out.append({"type": "content_block_delta", "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": raw}})
            return [*out, {"type": "content_block_stop", "index": index}]
        return []

    def _finished(self, event: Event) -> list[Event]:
        response = event["response"]
        return self._end({"stop_reason": stop_reason(response), "stop_sequence": None}, usage(response.get("usage")))

    def _failed(self, event: Event) -> list[Event]:
        error = event["response"].get("error") or {}
        self.done = True
        kind = "rate_limit_error" if error.get("code") == "rate_limit_exceeded" else "api_error"
        return [{"type": "error", "error": {"type": kind, "message": str(error.get("message") or "The response "
                                                                                                  "failed.")}}]

    def _end(self, delta: dict[str, Any], final_usage: dict[str, int]) -> list[Event]:
        self.done = True
        return [{"type": "message_delta", "delta": delta, "usage": final_usage}, {"type": "message_stop"}]


_HANDLERS = {
    "response.created": MessageEvents._start,
    "response.output_item.added": MessageEvents._added,
    "response.output_text.delta": MessageEvents._text_delta,
    "response.reasoning_text.delta": MessageEvents._thinking_delta,
    "response.reasoning_summary_text.delta": MessageEvents._thinking_delta,
    "response.output_item.done": MessageEvents._item_done,
    "response.completed": MessageEvents._finished,
    "response.incomplete": MessageEvents._finished,
    "response.failed": MessageEvents._failed,
}


def error_event(message: str, kind: str = "api_error") -> Event:
    """An `error` event for a failure the canonical stream did not report (Anthropic's mid-stream error)."""
    return {"type": "error", "error": {"type": kind, "message": message}}
