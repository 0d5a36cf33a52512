"""A fault-injecting Chat Completions server over real HTTP: an upstream as broken as a real one can be.

Like `fake_upstream`, its behaviour is chosen by the requested upstream `model` (streamed and non-streamed):

  echo                 a well-formed reply "ok" (to check the server works at all)
  shape-<name>         a reply of the wrong JSON shape: one of `SHAPES` (streamed: after one good chunk)
  huge-<n>mb           a reply of n MB of text (streamed in chunks of `CHUNK_CHARS` characters)
  endless-text         text that never ends (streamed chunks, or one JSON body that never closes)
  endless-pings        streamed: SSE comments forever, never a chunk; non-streamed: whitespace forever
  trickle              headers, then one byte every 50 ms, forever
  slow-headers-<s>     waits <s> seconds before the headers, then answers like `echo`
  reset                a few chunks (non-streamed: half the body), then a TCP reset
  leak-<status>-json   HTTP <status> with an OpenAI-shaped error body quoting the caller's credentials
  leak-<status>-text   the same as plain text
  badkey-<status>      HTTP <status> with code `invalid_api_key` (a rejection of the caller's key)
  leak-midstream       streamed: two chunks, then an error event quoting the credentials; non-streamed:
                       HTTP 200 with an error body

"The caller's credentials" is the bearer token the request carried, echoed the ways real upstreams (and
the proxies in front of them) do: verbatim, as `Bearer <key>`, as a `key=` query value and as an
`"api_key"` JSON field. Every handler that ends because its client went away records its model in
`abandoned`, so a test can check that Parley closed the connection.

Run it standalone: `python -m parley.testing.faulty_upstream --port 9101`.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct
import time
from typing import Any

import orjson
from aiohttp import web

from parley.testing.fake_server import Threaded, serve_app

CHUNK_CHARS = 1000
_TEXT = ("lorem ipsum dolor sit amet " * 40)[:CHUNK_CHARS]

# Wrong shapes. `delta` is renamed `message` for a non-streamed reply; each stands where a chunk (or the
# body) should be.
SHAPES: dict[str, Any] = {
    "choices-string": {"choices": "x"},
    "choice-not-object": {"choices": [1]},
    "choice-list": {"choices": [["a"]]},
    "finish-list": {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": ["stop"]}]},
    "finish-number": {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": 1}]},
    "list": [],
    "string": "x",
    "null": None,
    "number": 5,
    "index-string": {"choices": [{"index": "0", "delta": {"content": "hi"}, "finish_reason": "stop"}]},
    "delta-string": {"choices": [{"index": 0, "delta": "x"}]},
    "delta-list": {"choices": [{"index": 0, "delta": ["x"]}]},
    "content-number": {"choices": [{"index": 0, "delta": {"content": 5}}]},
    "content-list": {"choices": [{"index": 0, "delta": {"content": ["a"]}}]},
    "content-object": {"choices": [{"index": 0, "delta": {"content": {"text": "a"}}}]},
    "reasoning-object": {"choices": [{"index": 0, "delta": {"reasoning_content": {"a": 1}}}]},
    "tool-calls-object": {"choices": [{"index": 0, "delta": {"tool_calls": {"a": 1}}}]},
    "tool-calls-string": {"choices": [{"index": 0, "delta": {"tool_calls": "x"}}]},
    "tool-call-string": {"choices": [{"index": 0, "delta": {"tool_calls": ["x"]}}]},
    "function-string": {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": "x"}]}}]},
    "arguments-object": {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": {"a": 1}}}]}}]},
    "tool-name-number": {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "function": {"name": 7, "arguments": "{}"}}]}}]},
    "tool-call-no-name": {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "function": {"arguments": "{}"}}]}, "finish_reason": "tool_calls"}]},
    "tool-name-empty": {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "function": {"name": "", "arguments": "{}"}}]}, "finish_reason": "tool_calls"}]},
    "tool-index-string": {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": "0", "id": "call_1", "function": {"name": "f", "arguments": "{}"}}]}}]},
    "usage-string": {"choices": [], "usage": "x"},
    "usage-list": {"choices": [], "usage": [1, 2]},
    "usage-tokens-string": {"choices": [], "usage": {"prompt_tokens": "many", "completion_tokens": 1}},
    "usage-tokens-float": {"choices": [], "usage": {"prompt_tokens": 1.5, "completion_tokens": 1}},
    "usage-tokens-huge": {"choices": [], "usage": {"prompt_tokens": 2**64 - 1, "completion_tokens": 1}},
    "usage-details-string": {"choices": [], "usage": {"prompt_tokens": 1, "prompt_tokens_details": "x"}},
    "logprobs-garbage": {"choices": [{"index": 0, "delta": {"content": "hi"},
                                      "logprobs": {"content": [{"token": 5}]}}]},
    "error-string": {"error": "boom"},
    "error-list": {"error": ["boom"]},
}
RAW_SHAPES: dict[str, bytes] = {"not-json": b"{not json", "truncated-json": b'{"choices": [{"index": 0'}


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-faulty", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": "faulty", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def _completion(text: str) -> dict[str, Any]:
    return {"id": "chatcmpl-faulty", "object": "chat.completion", "created": int(time.time()), "model": "faulty",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def _as_message(value: Any) -> Any:
    """A streamed chunk's shape as a non-streamed body: `delta` becomes `message`."""
    if isinstance(value, dict) and isinstance(value.get("choices"), list):
        choices = [{("message" if k == "delta" else k): v for k, v in c.items()} if isinstance(c, dict) else c
                   for c in value["choices"]]
        return {**value, "choices": choices}
    return value


def _sse(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def leaked_message(token: str) -> str:
    """An error text quoting a credential every way upstreams and proxies do."""
    return (f"Incorrect API key provided: {token}. Header was 'Authorization: Bearer {token}'; "
            f"request https://upstream.example/v1/chat?key={token}&x=1 failed; config {{\"api_key\": \"{token}\"}}")


class FaultyUpstream:
    def __init__(self) -> None:
        self.abandoned: list[str] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self._chat)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, port: int = 0) -> None:
        self._runner, self.port = await serve_app(self.app, port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json(loads=orjson.loads)
        model = str(body.get("model", "echo"))
        stream = bool(body.get("stream"))
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip() or "sk-faulty-no-key"
        try:
            return await self._answer(request, model, stream, token)
        except (ConnectionResetError, ConnectionError):
            self.abandoned.append(model)
            return web.Response()

    async def _answer(self, request: web.Request, model: str, stream: bool, token: str) -> web.StreamResponse:
        kind, _, arg = model.partition("-")
        if model.startswith("slow-headers-"):
            await asyncio.sleep(float(model.removeprefix("slow-headers-")))
            return await self._text(request, "ok", stream)
        if kind == "shape":
            return await self._shape(request, arg, stream)
        if kind == "huge":
            size = int(float(arg.removesuffix("mb")) * 1_000_000)
            return await self._huge(request, size, stream)
        if model in ("endless-text", "endless-pings", "trickle"):
            return await self._endless(request, model, stream)
        if model == "reset":
            return await self._reset(request, stream)
        if kind in ("leak", "badkey") and arg != "midstream":
            return self._error(arg, token, badkey=kind == "badkey")
        if model == "leak-midstream":
            error = {"error": {"message": leaked_message(token), "type": "server_error", "code": "internal"}}
            if not stream:
                return web.json_response(error)
            return await self._stream(request, [_sse(_chunk({"content": "partial "})),
                                                _sse(_chunk({"content": "answer"})), _sse(error)])
        return await self._text(request, "ok", stream)

    async def _stream(self, request: web.Request, frames: list[bytes], done: bool = True) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for frame in frames:
            await resp.write(frame)
        if done:
            await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _text(self, request: web.Request, text: str, stream: bool) -> web.StreamResponse:
        if not stream:
            return web.json_response(_completion(text))
        return await self._stream(request, [_sse(_chunk({"role": "assistant", "content": text})),
                                            _sse(_chunk({}, "stop"))])

    async def _shape(self, request: web.Request, name: str, stream: bool) -> web.StreamResponse:
        if name in RAW_SHAPES:
            raw = RAW_SHAPES[name]
        elif name in SHAPES:
            raw = orjson.dumps(SHAPES[name] if stream else _as_message(SHAPES[name]))
        else:
            raise web.HTTPNotFound(text=f"unknown shape {name!r}")
        if not stream:
            return web.Response(body=raw, content_type="application/json")
        good = _sse(_chunk({"role": "assistant", "content": "fine "}))
        return await self._stream(request, [good, b"data: " + raw + b"\n\n", _sse(_chunk({}, "stop"))])

    async def _huge(self, request: web.Request, size: int, stream: bool) -> web.StreamResponse:
        if not stream:
            return web.json_response(_completion((_TEXT * (size // CHUNK_CHARS + 1))[:size]))
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        frame = _sse(_chunk({"content": _TEXT}))
        await resp.write(_sse(_chunk({"role": "assistant", "content": ""})))
        for _ in range(size // CHUNK_CHARS):
            await resp.write(frame)
        await resp.write(_sse(_chunk({}, "stop")) + b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _endless(self, request: web.Request, model: str, stream: bool) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream" if stream else "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        if model == "trickle":
            while True:
                await resp.write(b" ")
                await asyncio.sleep(0.05)
        if model == "endless-pings":
            piece = b": keep-alive\n\n" * 64 if stream else b" " * 1024
        elif stream:
            piece = _sse(_chunk({"content": _TEXT}))
        else:
            await resp.write(b'{"choices": [{"index": 0, "message": {"content": "')
            piece = _TEXT.encode()
        while True:
            await resp.write(piece)

    async def _reset(self, request: web.Request, stream: bool) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"} if stream else
                                  {"content-type": "application/json", "content-length": "4096"})
        await resp.prepare(request)
        if stream:
            await resp.write(_sse(_chunk({"role": "assistant", "content": "one "})) + _sse(_chunk({"content": "two"})))
        else:
            await resp.write(b'{"choices": [{"index": 0, "message": {"content": "ha')
        await asyncio.sleep(0.05)
        transport = request.transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        if sock is not None:  # linger 0: close() sends a TCP RST instead of a FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        return resp

    def _error(self, arg: str, token: str, *, badkey: bool) -> web.Response:
        status_text, _, form = arg.partition("-")
        status = int(status_text)
        headers = {"retry-after": "3"} if status == 429 else {}
        if badkey:
            error = {"message": f"Incorrect API key provided: {token}.", "type": "invalid_request_error",
                     "code": "invalid_api_key", "param": None}
            return web.json_response({"error": error}, status=status, headers=headers)
        message = leaked_message(token)
        if form == "text":
            return web.Response(text=message, status=status, headers=headers)
        error = {"message": message, "type": f"upstream_type_{status}", "code": f"upstream_code_{status}",
                 "param": None, "api_key": token}
        return web.json_response({"error": error}, status=status, headers=headers)


class ThreadedFaultyUpstream(Threaded[FaultyUpstream]):
    """The faulty upstream on its own event loop in a daemon thread (for sync tests and other processes)."""

    def __init__(self) -> None:
        super().__init__(FaultyUpstream, "faulty-upstream")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9101)
    args = parser.parse_args()
    web.run_app(FaultyUpstream().app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
