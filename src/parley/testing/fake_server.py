"""What the native fake upstreams share: an aiohttp server on a free loopback port, SSE writing, recorded
requests and abandoned streams, dropped connections, and a threaded runner for sync tests and other processes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import orjson
from aiohttp import web


async def serve_app(app: web.Application, port: int = 0, shutdown_timeout: float = 1.0) -> tuple[web.AppRunner, int]:
    """Serve an aiohttp app on 127.0.0.1 (`port` 0: a free one); its runner (for cleanup) and port. A short
    shutdown timeout: a handler that hangs must not hold up stopping for aiohttp's default 60 s."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    server = site._server
    assert server is not None and server.sockets  # type: ignore[attr-defined]
    return runner, server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]


class FakeServer:
    """A fake upstream: subclasses add routes to `app` and record each request body in `requests`."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []  # each request's headers (lower-case names)
        self.paths: list[str] = []  # each request's path and query string
        self.disconnects: list[str] = []
        self.app = web.Application()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, port: int = 0) -> None:
        self._runner, self.port = await serve_app(self.app, port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def record(self, request: web.Request) -> dict[str, Any]:
        body: dict[str, Any] = await request.json(loads=orjson.loads)
        self.requests.append(body)
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        self.paths.append(request.path_qs)
        return body

    async def wait_unless_closed(self, request: web.Request, model: str, seconds: float) -> bool:
        """Sleep `seconds`; False (and the model recorded in `disconnects`) if the client goes away first."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if request.transport is None or request.transport.is_closing():
                self.disconnects.append(model)
                return False
            await asyncio.sleep(min(0.05, max(deadline - time.monotonic(), 0.0)))
        return True

    async def drop_body(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """Promise the whole body (content-length), send half of it, then close the connection."""
        resp = web.StreamResponse(headers={"content-type": "application/json", "content-length": str(len(body))})
        await resp.prepare(request)
        await resp.write(body[: len(body) // 2])
        assert request.transport is not None
        request.transport.close()
        return resp

    async def hang(self, request: web.Request, model: str, stream: bool) -> web.StreamResponse:
        if stream:
            resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await resp.prepare(request)
            await self.wait_unless_closed(request, model, 3600.0)
            return resp
        await self.wait_unless_closed(request, model, 3600.0)
        return web.Response()

    async def sse(self, request: web.Request, model: str, frames: list[bytes], *, delay: float = 0.0,
                  drop_after: int | None = None) -> web.StreamResponse:
        """Write SSE frames (each already `event:`/`data:` lines ending in a blank line), one write each."""
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await resp.prepare(request)
        try:
            for index, frame in enumerate(frames):
                if drop_after is not None and index == drop_after:
                    assert request.transport is not None
                    request.transport.close()
                    return resp
                if delay and not await self.wait_unless_closed(request, model, delay):
                    return resp
                await resp.write(frame)
            await resp.write_eof()
        except ConnectionResetError:
            self.disconnects.append(model)
        return resp


def data_frame(payload: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"


class Startable(Protocol):
    """A test server that starts and stops in an event loop."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


Fake = TypeVar("Fake", bound=Startable)


class Threaded(Generic[Fake]):
    """A fake on its own event loop in a daemon thread (for sync tests and other processes)."""

    def __init__(self, make: Callable[[], Fake], name: str = "fake-upstream") -> None:
        self.fake = make()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name=name)

    def __enter__(self) -> Fake:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.fake.start(), self._loop).result(10)
        return self.fake

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
