"""A real MCP server for tests, built with the official `mcp` SDK (2.x, `MCPServer`), served on loopback over
streamable HTTP (`/mcp`) and SSE (`/sse`), also behind a bearer token (`/private/mcp`, `/private/sse`), or over
stdio (`python -m parley.testing.mcp_server --stdio`).

Its tools:
  add(a, b)            the sum (annotated readOnlyHint)
  echo(text)           the text (readOnlyHint)
  distance(p, q)       distance of two points: an input schema with `$defs` and `$ref`
  write_note(text)     "saved: <text>" (not read-only: destructive)
  fail(reason)         a tool error (`isError`, the reason as its content)
  protocol_error()     a JSON-RPC error (-32602, "bad parameters")
  hang(seconds)        sleeps (default an hour): for time limits
  whoami()             the Authorization and X-Test headers of the HTTP request that called it

`McpTestServer` serves it in the running event loop; `ThreadedMcpServer` in a thread of its own (for servers
in other processes). `stats` counts `tools/list` requests and records calls and cancelled calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp.types import Tool, ToolAnnotations
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

TOKEN = "secret-token"


@dataclass
class Stats:
    list_calls: int = 0
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)


class Point(BaseModel):
    x: float
    y: float


class _CountingServer(MCPServer):
    def __init__(self, stats: Stats) -> None:
        super().__init__("parley-test", log_level="WARNING")
        self.stats = stats

    async def list_tools(self) -> list[Tool]:
        self.stats.list_calls += 1
        return await super().list_tools()


def build_server(stats: Stats | None = None) -> MCPServer:
    stats = stats or Stats()
    server = _CountingServer(stats)
    read_only = ToolAnnotations(readOnlyHint=True)

    @server.tool(annotations=read_only)
    def add(a: int, b: int) -> int:
        """Add two integers."""
        stats.calls.append(("add", {"a": a, "b": b}))
        return a + b

    @server.tool(annotations=read_only)
    def echo(text: str) -> str:
        """Repeat the text."""
        stats.calls.append(("echo", {"text": text}))
        return text

    @server.tool(annotations=read_only)
    def distance(p: Point, q: Point) -> float:
        """The distance between two points."""
        stats.calls.append(("distance", {"p": p.model_dump(), "q": q.model_dump()}))
        return float(((p.x - q.x) ** 2 + (p.y - q.y) ** 2) ** 0.5)

    @server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True))
    def write_note(text: str) -> str:
        """Save a note."""
        stats.calls.append(("write_note", {"text": text}))
        return f"saved: {text}"

    @server.tool()
    def fail(reason: str) -> str:
        """Always fails."""
        stats.calls.append(("fail", {"reason": reason}))
        raise ToolError(f"it failed because {reason}")

    @server.tool()
    def protocol_error() -> str:
        """Answers with a JSON-RPC error."""
        stats.calls.append(("protocol_error", {}))
        raise MCPError(-32602, "bad parameters")

    @server.tool()
    async def hang(seconds: float = 3600.0) -> str:
        """Takes its time."""
        stats.calls.append(("hang", {"seconds": seconds}))
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            stats.cancelled.append("hang")
            raise
        return "woke up"

    @server.tool()
    async def whoami(ctx: Context) -> str:
        """The caller's Authorization and X-Test headers."""
        request = ctx.request_context.request
        headers = getattr(request, "headers", None) or {}
        stats.calls.append(("whoami", {}))
        return f"authorization={headers.get('authorization')} x-test={headers.get('x-test')}"

    return server


class _Private:
    """`/private/...` needs `Authorization: Bearer <TOKEN>` (else 401) and is served as `/...`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith("/private/"):
            headers = dict(scope.get("headers") or ())
            if headers.get(b"authorization") != f"Bearer {TOKEN}".encode():
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": b'{"error": "unauthorized"}'})
                return
            scope = {**scope, "path": path.removeprefix("/private"), "raw_path": path.removeprefix("/private").encode()}
        await self.app(scope, receive, send)


def asgi_app(server: MCPServer) -> ASGIApp:
    """Streamable HTTP at /mcp and SSE at /sse (+ /messages/), each also under /private/ behind the token."""
    http_app = server.streamable_http_app()
    sse_app = server.sse_app()
    app = Starlette(routes=[*http_app.routes, *sse_app.routes], lifespan=http_app.router.lifespan_context)
    return _Private(app)


class McpTestServer:
    """The test server on loopback, in the running event loop."""

    def __init__(self, port: int = 0) -> None:
        self.stats = Stats()
        self._server = uvicorn.Server(uvicorn.Config(asgi_app(build_server(self.stats)), host="127.0.0.1", port=port,
                                                     log_level="warning", timeout_graceful_shutdown=1))
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def url(self, path: str = "/mcp") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[McpTestServer]:
    server = McpTestServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class ThreadedMcpServer:
    """`McpTestServer` on its own event loop in a daemon thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="mcp-test-server")
        self.server: McpTestServer | None = None

    def __enter__(self) -> McpTestServer:
        self._thread.start()

        async def start() -> McpTestServer:
            server = McpTestServer()
            await server.start()
            return server

        self.server = asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)
        return self.server

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stdio", action="store_true", help="serve over stdin/stdout")
    parser.add_argument("--port", type=int, default=9200)
    args = parser.parse_args()
    if args.stdio:
        build_server().run("stdio")
    else:
        uvicorn.run(asgi_app(build_server()), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
