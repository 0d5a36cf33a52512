"""The agent fake upstream (parley.testing.fake_agent) with one more model, whose reply waits half-way until the test
lets it go on: what a test looks at while a response runs, without timing anything.

  pause   answers "echo: <the last user text>" a word a chunk. Streamed: the first half of its words, then it waits
          until `resume()`, then the rest, the usage chunk and `[DONE]`; non-streamed: waits before answering.
          `paused` is set while a reply waits. A client that goes away ends the wait (recorded in `disconnects`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

import orjson
from aiohttp import web

from parley.testing.chat_reply import ChatReply, message_text, send_chat_reply, word_usage
from parley.testing.fake_agent import AgentUpstream
from parley.testing.fake_server import Threaded


class PausingUpstream(AgentUpstream):
    def __init__(self) -> None:
        super().__init__()
        self.paused = asyncio.Event()  # a reply is waiting for resume()
        self._resume = asyncio.Event()
        self._waiting = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, port: int = 0) -> None:
        self._loop = asyncio.get_running_loop()
        await super().start(port)

    def resume(self) -> None:
        """Let the waiting replies go on (later ones wait again); callable from any thread."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._release)

    def _release(self) -> None:
        gate, self._resume = self._resume, asyncio.Event()
        gate.set()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json(loads=orjson.loads)
        if body.get("model") != "pause":
            return await super()._chat(request)  # aiohttp keeps the body: it can be read again
        self.requests.append(body)
        users = [m for m in body.get("messages") or () if m.get("role") == "user"]
        text = "echo: " + (message_text(users[-1].get("content")) if users else "")
        reply = ChatReply("pause", "pause", len(self.requests), text, [], word_usage(body, text))
        if not body.get("stream"):
            if not await self._wait(request):
                return web.Response()
            return await send_chat_reply(request, body, reply)
        return await self._stream_paused(request, body, reply)

    async def _stream_paused(self, request: web.Request, body: dict[str, Any], reply: ChatReply) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await resp.prepare(request)
        words = re.findall(r"\S+\s*", reply.text)
        half = len(words) // 2
        await resp.write(reply.chunk({"role": "assistant", "content": ""}))
        for word in words[:half]:
            await resp.write(reply.chunk({"content": word}))
        if not await self._wait(request):
            return resp
        for word in words[half:]:
            await resp.write(reply.chunk({"content": word}))
        await resp.write(reply.chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"id": "chatcmpl-pause", "object": "chat.completion.chunk", "created": 0, "model": "pause",
                     "choices": [], "usage": reply.usage}
            await resp.write(b"data: " + orjson.dumps(usage) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _wait(self, request: web.Request) -> bool:
        """Wait for resume(); False (recorded in `disconnects`) if the client goes away first. The client's going
        is only seen by looking at the connection, so it is looked at every 50 ms while waiting."""
        gate = self._resume
        self._waiting += 1
        self.paused.set()
        try:
            while not gate.is_set():
                if request.transport is None or request.transport.is_closing():
                    self.disconnects.append("pause")
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gate.wait(), 0.05)
            return True
        finally:
            self._waiting -= 1
            if not self._waiting:
                self.paused.clear()


class ThreadedPausingUpstream(Threaded[PausingUpstream]):
    """`PausingUpstream` on its own event loop in a daemon thread (for servers in other processes)."""

    def __init__(self) -> None:
        super().__init__(PausingUpstream, "fake-pausing")
