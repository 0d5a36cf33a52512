"""When each step of one response's run happened: kept in memory while it runs and stored with its usage record
in the response's final write (services/usage.py), for the console's timeline and for latency and time to first
token.

A note is a few appends per model turn and per built-in tool call, never per token or event; nothing here does
I/O. Times are `time.monotonic()` offsets from the start, anchored to the wall clock once (`started_at`).
"""

from __future__ import annotations

import time
from typing import Any

# The marks a run notes (the timeline's `event` values; README "Web console").
#   upstream_opened  a model turn's upstream call answered (its HTTP headers; non-streaming: its whole body)
#   first_output     the turn's first output (text, reasoning or a tool call); the response's first is its TTFT
#   turn_done        the turn ended (`finish_reason`)
#   tool_call_started / tool_call_done   a built-in tool call ran (its `name` and `call_id`; then its item's
#                    `type` and `status`)
#   finished         the response ended (`status`), just before its final write
Detail = dict[str, Any]


class Timing:
    __slots__ = ("_marks", "first_token", "started", "started_at")

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.started_at = time.time()
        self.first_token: float | None = None
        self._marks: list[tuple[str, float, Detail]] = []

    def mark(self, event: str, detail: Detail) -> None:
        self._marks.append((event, time.monotonic(), detail))

    def first_output(self, turn: int) -> None:
        now = time.monotonic()
        if self.first_token is None:
            self.first_token = now
        self._marks.append(("first_output", now, {"turn": turn}))

    def timeline(self, status: str, ended: float) -> dict[str, Any]:
        """The stored form: `started_at` (Unix ms) and each mark's `ms` after it (0.1 ms steps), in order."""
        marks = [{"event": "started", "ms": 0.0}]
        marks += [{"event": event, "ms": self._ms(at), **detail} for event, at, detail in self._marks]
        marks.append({"event": "finished", "ms": self._ms(ended), "status": status})
        return {"started_at": round(self.started_at * 1000), "marks": marks}

    def _ms(self, at: float) -> float:
        return round((at - self.started) * 1000, 1)
