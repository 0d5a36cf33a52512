"""Stream obfuscation (api-surface.md §6.5): random padding in an `obfuscation` field of delta events, so that an
event's size does not tell the length of its text. On by default; off with `stream_options.include_obfuscation:
false` on create, or `include_obfuscation=false` on a resumed stream (GET /v1/responses/{id}?stream=true), which
is padded as its reader asks, whichever way the run that logged its events was asked."""

from __future__ import annotations

import secrets
from collections.abc import AsyncGenerator, AsyncIterator

import orjson

# The delta events that carry it (engine/stream.py adds it when it builds them).
OBFUSCATED_EVENTS = ("response.output_text.delta", "response.reasoning_text.delta",
                     "response.reasoning_summary_text.delta", "response.function_call_arguments.delta",
                     "response.shell_call_command.delta")
_DELTA_FRAMES = tuple(b"event: " + kind.encode() + b"\n" for kind in OBFUSCATED_EVENTS)
_FIELD = b'"obfuscation":'  # (a key: in a JSON string, the quotes would be escaped)
_DATA = b"\ndata: "


def new_pad() -> str:
    """A response's (or a reader's) random padding: 16 characters."""
    return secrets.token_urlsafe(12)


def obfuscation(pad: str, delta: str) -> str:
    """Pads an event to a multiple of 16 characters of delta text."""
    return pad[: 16 - len(delta) % 16]


async def as_asked(frames: AsyncIterator[bytes], on: bool) -> AsyncGenerator[bytes, None]:
    """Logged SSE frames (engine/stream.py `sse_frame`) with their delta events padded when `on`, unpadded when
    not. A frame already as asked passes untouched (a prefix test, and a search of the delta frames only)."""
    pad = new_pad() if on else ""
    async for frame in frames:
        if frame.startswith(_DELTA_FRAMES) and (_FIELD in frame) is not on:
            frame = _reframed(frame, pad)
        yield frame


def _reframed(frame: bytes, pad: str) -> bytes:
    start = frame.index(_DATA) + len(_DATA)
    event = orjson.loads(frame[start:])
    if pad:
        event["obfuscation"] = obfuscation(pad, event["delta"])
    else:
        del event["obfuscation"]
    return frame[:start] + orjson.dumps(event) + b"\n\n"
