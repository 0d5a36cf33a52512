"""Replayed frames padded as their reader asks (engine/obfuscation.py): every delta event that carries padding, and
nothing else touched."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from parley.engine.obfuscation import OBFUSCATED_EVENTS, as_asked
from parley.engine.stream import sse_frame

OTHER = [{"type": "response.output_text.done", "sequence_number": 9, "text": 'has "obfuscation": inside'},
         {"type": "response.custom_tool_call_input.delta", "sequence_number": 10, "delta": "x"}]


def _frames(padded: bool) -> list[bytes]:
    events: list[dict[str, Any]] = []
    for seq, kind in enumerate(OBFUSCATED_EVENTS):
        delta = "x" * (seq * 7 + 1)
        event: dict[str, Any] = {"type": kind, "sequence_number": seq, "output_index": 0, "delta": delta}
        if padded:
            event["obfuscation"] = "p" * (16 - len(delta) % 16)
        events.append(event)
    return [sse_frame(event) for event in events + OTHER]


async def _read(frames: list[bytes], on: bool) -> list[bytes]:
    async def source() -> AsyncIterator[bytes]:
        for frame in frames:
            yield frame

    return [frame async for frame in as_asked(source(), on)]


def _event(frame: bytes) -> dict[str, Any]:
    kind, data = frame.split(b"\n")[:2]
    event: dict[str, Any] = orjson.loads(data.removeprefix(b"data: "))
    assert kind == b"event: " + event["type"].encode()
    return event


async def test_deltas_are_padded_or_not_as_asked() -> None:
    for logged in (True, False):
        frames = _frames(logged)
        on, off = await _read(frames, True), await _read(frames, False)
        n = len(OBFUSCATED_EVENTS)
        for frame in on[:n]:
            event = _event(frame)
            assert (len(event["delta"]) + len(event["obfuscation"])) % 16 == 0
        assert all("obfuscation" not in _event(frame) for frame in off)
        assert on[n:] == off[n:] == frames[n:]  # not delta events that carry padding: as they came
        assert (on if logged else off) == frames  # already as asked: untouched
        assert [{k: v for k, v in _event(f).items() if k != "obfuscation"} for f in on] == [_event(f) for f in off]
