"""Fold a run's logged stream events back into its output items: what each item's deltas built, and which
items the log leaves open (a background run whose worker died mid-item), for the stream builder to close."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

Event = dict[str, Any]
Item = dict[str, Any]


@dataclass(slots=True)
class LoggedItem:
    """One output item as the log shows it: the item of its last `output_item.*` event, and, while it is open,
    what its deltas built (the message's output_text, a reasoning item's text and summary parts, a call's
    arguments, a custom call's input) or, for a built-in tool's item, its own events (the stream builder tells its
    open streams from them)."""

    item: Item
    done: bool = False
    content_open: bool = False  # a content part (output_text, reasoning_text) was added
    text: list[str] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    summary: list[list[str]] = field(default_factory=list)
    events: list[tuple[str, Event]] = field(default_factory=list)


@dataclass(slots=True)
class LoggedRun:
    items: list[LoggedItem]
    next_seq: int  # the sequence number the next event gets


# Delta events -> the field of their text; all carry `output_index`.
_TEXT_DELTAS = {"response.output_text.delta", "response.reasoning_text.delta",
                "response.function_call_arguments.delta", "response.custom_tool_call_input.delta"}


# The other events of messages, reasoning items and calls (what their item or `.done` events repeat).
_TEXT_EVENTS = frozenset({"response.output_text.done", "response.content_part.done", "response.reasoning_text.done",
                          "response.reasoning_summary_text.done", "response.reasoning_summary_part.done",
                          "response.function_call_arguments.done", "response.custom_tool_call_input.done"})


def fold_log(frames: Iterable[bytes]) -> LoggedRun:
    """The items of logged SSE frames (as `sse_frame` wrote them), in output order."""
    items: list[LoggedItem] = []
    last = -1
    for frame in frames:
        event = _event(frame)
        if event is None:
            continue
        last = int(event["sequence_number"])
        kind = event["type"]
        if kind == "response.output_item.added":
            items.append(LoggedItem(dict(event["item"])))
        elif kind == "response.output_item.done":
            items[event["output_index"]] = LoggedItem(dict(event["item"]), done=True)
        elif "output_index" in event and event["output_index"] < len(items):
            _fold_delta(items[event["output_index"]], kind, event)
    return LoggedRun(items, last + 1)


def _fold_delta(entry: LoggedItem, kind: str, event: Event) -> None:
    if kind == "response.content_part.added":
        entry.content_open = True
    elif kind in _TEXT_DELTAS:
        entry.text.append(event["delta"])
        entry.logprobs.extend(event.get("logprobs") or ())
    elif kind == "response.output_text.annotation.added":
        entry.annotations.append(event["annotation"])
    elif kind == "response.reasoning_summary_part.added":
        entry.summary.append([])
    elif kind == "response.reasoning_summary_text.delta" and entry.summary:
        entry.summary[-1].append(event["delta"])
    elif kind not in _TEXT_EVENTS:
        entry.events.append((kind, event))


def _event(frame: bytes) -> Event | None:
    start = frame.find(b"\ndata: ")
    if start < 0:
        return None  # not a frame `sse_frame` wrote: nothing to take up from it
    event: Event = orjson.loads(frame[start + 7:])
    return event
