"""The answers of the benchmark upstream in the native wire formats: Responses, Anthropic Messages, Gemini.

`bench.upstream` serves these next to Chat Completions. Each answer is the same 32-token text as model "fixed",
built once per (format, model, mode) by the test fakes' own writers (`parley.testing.fake_*`, whose output the
tests check against the providers' SDK types), so the benchmark measures the real wire formats at the cost of a
few tens of microseconds per request. Streams are one HTTP chunk per SSE event, as a real server sends them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from parley.testing import fake_anthropic, fake_gemini, fake_responses_upstream
from parley.testing.fake_plan import RequestView, plan

RESPONSES_PATH = b"/v1/responses"
MESSAGES_PATH = b"/v1/messages"
GEMINI_PREFIX = b"/v1beta/models/"


def _head(content_type: bytes, extra: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: " + content_type + b"\r\n" + extra + b"connection: keep-alive\r\n\r\n"


def _json(payload: dict[str, Any]) -> list[bytes]:
    body = orjson.dumps(payload)
    return [_head(b"application/json", b"content-length: " + str(len(body)).encode() + b"\r\n") + body]


def _chunked(frames: list[bytes]) -> list[bytes]:
    head = _head(b"text/event-stream", b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n")
    return [head, *(f"{len(frame):x}\r\n".encode() + frame + b"\r\n" for frame in frames), b"0\r\n\r\n"]


def responses_answer(model: str, stream: bool) -> list[bytes]:
    body = {"model": model, "input": "x", "stream": stream}
    events = fake_responses_upstream.build(model, body, plan(model, RequestView()))
    return _chunked(events.frames) if stream else _json(events.response)


def anthropic_answer(model: str, stream: bool) -> list[bytes]:
    answer = plan(model, RequestView())
    usage = {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens,
             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    if stream:
        return _chunked(fake_anthropic.frames(model, answer, usage))
    return _json(fake_anthropic.message(model, answer, usage))


def gemini_answer(model: str, stream: bool) -> list[bytes]:
    answer = plan(model, RequestView())
    if stream:
        return _chunked([b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in fake_gemini.chunks(model, answer, False)])
    return _json(fake_gemini.whole(model, answer, False))


def native_route(path: bytes, raw: bytes) -> tuple[Callable[[str, bool], list[bytes]], str, bool] | None:
    """(answer builder, model, stream) for a native path, or None for any other path."""
    if path == RESPONSES_PATH or path == MESSAGES_PATH:
        body = orjson.loads(raw)
        build = responses_answer if path == RESPONSES_PATH else anthropic_answer
        return build, str(body.get("model", "fixed")), bool(body.get("stream"))
    if path.startswith(GEMINI_PREFIX):
        model, _, method = path[len(GEMINI_PREFIX):].decode().partition(":")
        return gemini_answer, model, method == "streamGenerateContent"
    return None
