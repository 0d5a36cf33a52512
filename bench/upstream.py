"""A fast fake upstream for benchmarks: raw asyncio protocol + httptools on uvloop.

It speaks the real wire format: `POST /v1/chat/completions` answers a JSON `chat.completion`, or with
`"stream": true` an SSE stream (chunked transfer encoding, one HTTP chunk per `chat.completion.chunk`,
a usage chunk when `stream_options.include_usage` is set, then `data: [DONE]`). Every answer is the
same 32-token text, like model "fixed" of `parley.testing.fake_upstream`, but the bytes are built
once per (model, mode) so the upstream costs a few tens of microseconds per request and is never the
bottleneck. It answers the native formats too (bench/native_upstream.py): `POST /v1/responses`,
`POST /v1/messages` and `POST /v1beta/models/{model}:generateContent|:streamGenerateContent`, with the same text.
`GET` of any path answers 200 (readiness). Run: `python -m bench.upstream --port 9100`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any, cast

import httptools
import orjson
import uvloop

from bench.native_upstream import native_route

TOKENS = 32
TEXT_WORDS = ["token" if i == 0 else " token" for i in range(TOKENS)]
CHAT_PATH = b"/v1/chat/completions"


def _usage(prompt_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens, "completion_tokens": TOKENS, "total_tokens": prompt_tokens + TOKENS,
        "completion_tokens_details": {"reasoning_tokens": 0}, "prompt_tokens_details": {"cached_tokens": 0},
    }


def _head(status: str, content_type: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 " + status.encode() + b"\r\ncontent-type: " + content_type + b"\r\n" + extra
        + b"connection: keep-alive\r\n"
    )


def json_answer(body: dict[str, Any], status: str = "200 OK") -> bytes:
    payload = orjson.dumps(body)
    head = _head(status, b"application/json", b"content-length: " + str(len(payload)).encode() + b"\r\n")
    return head + b"\r\n" + payload


def completion_answer(model: str) -> bytes:
    message = {"role": "assistant", "content": "".join(TEXT_WORDS)}
    return json_answer({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": _usage(8),
    })


def _http_chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _sse(obj: dict[str, Any] | None) -> bytes:
    return _http_chunk(b"data: " + (orjson.dumps(obj) if obj is not None else b"[DONE]") + b"\n\n")


def stream_answer(model: str, usage: bool) -> list[bytes]:
    """The head and then one HTTP chunk per SSE event; each is written separately, like a real server."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    head = _head("200 OK", b"text/event-stream", b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n")
    parts = [head + b"\r\n", _sse(chunk({"role": "assistant", "content": ""}))]
    parts += [_sse(chunk({"content": word})) for word in TEXT_WORDS]
    parts.append(_sse(chunk({}, "stop")))
    if usage:
        parts.append(_sse({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": created,
                           "model": model, "choices": [], "usage": _usage(8)}))
    parts += [_sse(None), b"0\r\n\r\n"]
    return parts


class Answers:
    """Pre-built answer bytes, keyed by what the request asked for."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, bool, bool], list[bytes]] = {}
        self._native: dict[tuple[bytes, str, bool], list[bytes]] = {}
        self.ready = json_answer({"object": "list", "data": [{"id": "fixed", "object": "model"}]})
        self.not_found = json_answer(
            {"error": {"message": "unknown path", "type": "invalid_request_error", "code": None}}, "404 Not Found"
        )

    def for_body(self, raw: bytes) -> list[bytes]:
        try:
            body = orjson.loads(raw)
            model = str(body.get("model", "fixed"))
            stream = bool(body.get("stream"))
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
        except (orjson.JSONDecodeError, AttributeError):
            error = {"error": {"message": "invalid JSON body", "type": "invalid_request_error", "code": None}}
            return [json_answer(error, "400 Bad Request")]
        key = (model, stream, usage)
        answer = self._cache.get(key)
        if answer is None:
            answer = stream_answer(model, usage) if stream else [completion_answer(model)]
            self._cache[key] = answer
        return answer


    def for_native(self, path: bytes, raw: bytes) -> list[bytes] | None:
        """The answer of a native-format path (built once per format, model and mode), None for other paths."""
        try:
            route = native_route(path, raw)
        except (orjson.JSONDecodeError, AttributeError):
            return [self.not_found]
        if route is None:
            return None
        build, model, stream = route
        key = (path if not path.startswith(b"/v1beta/") else b"gemini", model, stream)
        answer = self._native.get(key)
        if answer is None:
            answer = self._native[key] = build(model, stream)
        return answer


class UpstreamProtocol(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; requests are answered in order as soon as they are complete."""

    def __init__(self, answers: Answers) -> None:
        self._answers = answers
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport implements asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            if self._transport is not None:
                self._transport.close()

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        method = self._parser.get_method()
        path = self._url.split(b"?", 1)[0]
        raw = b"".join(self._body)
        self._url, self._body = b"", []
        if method == b"GET":
            parts = [self._answers.ready]
        elif method == b"POST" and path == CHAT_PATH:
            parts = self._answers.for_body(raw)
        else:
            native = self._answers.for_native(path, raw) if method == b"POST" else None
            parts = native if native is not None else [self._answers.not_found]
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        for part in parts:
            transport.write(part)
        if not self._parser.should_keep_alive():
            transport.close()


async def serve(host: str, port: int) -> None:
    answers = Answers()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: UpstreamProtocol(answers), host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="A fast fake upstream (Chat Completions, Responses, Anthropic, "
                                     "Gemini) for benchmarks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):  # the benchmark stops it with SIGINT
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
