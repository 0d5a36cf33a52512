"""Parley in-process, for tests: the real app and its lifespan behind httpx's ASGI transport, with the
official SDK on top. No sockets, but the same code path as a served request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from openai import AsyncOpenAI

from parley.app import ParleyApp, create_app
from parley.config import Settings


@dataclass
class InProcess:
    app: ParleyApp
    http: httpx.AsyncClient  # base URL http://parley (paths start with /v1)

    def sdk(self, api_key: str = "local") -> AsyncOpenAI:
        # The SDK is typed against its own httpx fork (httpx2); an httpx client works the same at run time.
        return AsyncOpenAI(base_url="http://parley/v1", api_key=api_key, http_client=self.http,  # type: ignore[arg-type]
                           max_retries=0)


@asynccontextmanager
async def in_process(settings: Settings) -> AsyncIterator[InProcess]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://parley")
        try:
            yield InProcess(app, http)
        finally:
            await http.aclose()


@dataclass
class Served:
    """The app behind a real loopback socket of this process (uvicorn, configured as `parley serve` is)."""

    app: ParleyApp
    port: int
    connections: set[Any] = field(default_factory=set)  # uvicorn's open connections (protocols with a transport)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def sdk(self, api_key: str = "local") -> AsyncOpenAI:
        return AsyncOpenAI(base_url=self.base_url, api_key=api_key, max_retries=0)


@asynccontextmanager
async def served(settings: Settings, port: int = 0) -> AsyncIterator[Served]:
    """Serve the app with uvicorn on a free port (or `port`: a restart where clients reconnect) in this event
    loop: WebSocket mode (`responses.connect()`) needs a socket, which httpx's ASGI transport does not give."""
    import uvicorn

    from parley.api.serving import uvicorn_options

    app = create_app(settings)
    options = {**uvicorn_options(settings), "log_level": "warning"}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options))
    task = asyncio.ensure_future(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # start-up failed: raise why
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        bound: int = server.servers[0].sockets[0].getsockname()[1]
        yield Served(app, bound, server.server_state.connections)
    finally:
        server.should_exit = True
        await task
