"""One MCP session with one server, through the official `mcp` SDK (2.x): streamable HTTP, SSE or a local
stdio command; opened on first use, shared by concurrent calls, closed by its owner.

The SDK's client is an async context whose task groups must be entered and left by one task, while a response's
tool calls run in tasks of their own (engine/tool_loop.py). So a session lives in a task of its own that enters
the client, publishes it and waits to be closed; calls use the published client from any task (requests are
multiplexed by the SDK). A session that ends (the server went away) is opened again by the next call.

Failures become `McpFailure` carrying the structured `mcp_call.error` (tools/mcp/items.py): the HTTP status
when the server answered one, the JSON-RPC error otherwise, Parley's own codes for timeouts and lost connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import httpx2
from mcp.client.client import Client
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, Implementation

from parley.tools.mcp.guard import GuardedNetwork, GuardedTransport
from parley.tools.mcp.items import CONNECTION_CLOSED, INTERNAL_ERROR, REQUEST_TIMEOUT, http_error, protocol_error
from parley.tools.mcp.policy import ListedTool

log = logging.getLogger("parley.mcp")

Transport = Literal["streamable_http", "sse"]
T = TypeVar("T")
_CLIENT_INFO = Implementation(name="parley", version="0.1.0")
_MAX_PAGES = 20  # tools/list pages read at most
_CLOSE_WAIT_S = 5.0


def transport_for(url: str) -> Transport:
    """The transport a server URL speaks, by OpenAI's convention: a path ending in `/sse` is the SSE transport."""
    return "sse" if urlsplit(url).path.rstrip("/").endswith("/sse") else "streamable_http"


@dataclass(frozen=True, slots=True)
class McpEndpoint:
    """How to reach one server: a URL (with its headers, guarded when a client gave it) or a stdio command."""

    server_label: str
    url: str | None = None
    transport: Transport = "streamable_http"
    headers: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    timeout_s: float = 30.0
    guard: GuardedNetwork | None = None  # None: an operator's server, connected to as configured
    max_output_chars: int = 100_000
    # TLS settings shared by the app's sessions: building one costs ~50 ms (the CA bundle is read and parsed),
    # so each session must not (None: httpx2's default, built per session).
    ssl_context: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        if (self.url is None) == (not self.command):
            raise ValueError("an MCP endpoint has either a url or a command")


class McpFailure(Exception):
    """A listing or call failed; `error` is the structured `mcp_call.error`."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(str(error.get("message") or error.get("type")))
        self.error = error


@dataclass(slots=True)
class _Session:
    client: Client
    task: asyncio.Task[None]
    closing: asyncio.Event = field(default_factory=asyncio.Event)


class McpConnection:
    """The session with one server. `aclose()` it when done (its owner: the response, or the app)."""

    def __init__(self, endpoint: McpEndpoint) -> None:
        self.endpoint = endpoint
        self._session: _Session | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # every session task not finished yet, awaited by aclose()
        self._lock = asyncio.Lock()
        self._statuses: list[int] = []  # HTTP error statuses the server answered, to classify failures
        self._closed = False

    async def list_tools(self) -> list[ListedTool]:
        async def fetch(client: Client) -> list[ListedTool]:
            tools: list[ListedTool] = []
            cursor: str | None = None
            for _ in range(_MAX_PAGES):
                page = await client.list_tools(cursor=cursor)
                for tool in page.tools:
                    annotations = tool.annotations.model_dump(mode="json", by_alias=True, exclude_none=True) \
                        if tool.annotations is not None else None
                    tools.append(ListedTool(tool.name, tool.input_schema, tool.description, annotations))
                cursor = page.next_cursor
                if cursor is None:
                    break
            return tools

        return await self._run("listing the tools", fetch)

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> CallToolResult:
        async def call(client: Client) -> CallToolResult:
            return await client.call_tool(name, arguments)

        return await self._run(f"calling {name}", call)

    async def aclose(self) -> None:
        """Close the session, and wait for every session task to end (a stdio server's process with it)."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            session.closing.set()
        await _stop(list(self._tasks))

    async def _run(self, what: str, operation: Callable[[Client], Awaitable[T]]) -> T:
        """`operation` on the session (opened if need be), within the endpoint's time limit."""
        seconds = self.endpoint.timeout_s
        seen = len(self._statuses)
        try:
            async with asyncio.timeout(seconds):
                return await operation(await self._client())
        except TimeoutError:
            raise McpFailure(protocol_error(
                REQUEST_TIMEOUT, f"the MCP server did not finish {what} within {seconds:g} seconds")) from None
        except McpFailure:
            raise
        except Exception as exc:
            error = classify(exc, self._statuses[seen:])
            log.info("MCP server %s: %s failed: %s", self.endpoint.server_label, what, error.get("message"))
            raise McpFailure(error) from None

    async def _client(self) -> Client:
        async with self._lock:
            if self._closed:
                raise McpFailure(protocol_error(CONNECTION_CLOSED, "the MCP session was closed"))
            session = self._session
            if session is not None and not session.task.done():
                return session.client
            ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
            closing = asyncio.Event()
            task = asyncio.create_task(self._serve(ready, closing), name=f"mcp-{self.endpoint.server_label}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            try:
                client = await asyncio.shield(ready)
            except BaseException:
                # Not awaited here (the caller may be out of time): the task ends by itself, aclose() awaits it.
                closing.set()
                task.cancel()
                raise
            self._session = _Session(client, task, closing)
            return client

    async def _serve(self, ready: asyncio.Future[Client], closing: asyncio.Event) -> None:
        """The session's own task: enter the SDK client, publish it, wait to be closed, leave it."""
        try:
            async with Client(self._transport(), cache=None, client_info=_CLIENT_INFO) as client:
                ready.set_result(client)
                await closing.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else ConnectionError("cancelled"))
            elif not isinstance(exc, asyncio.CancelledError | GeneratorExit):
                log.info("MCP server %s: the session ended: %r", self.endpoint.server_label, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise

    @contextlib.asynccontextmanager
    async def _transport(self) -> AsyncIterator[Any]:
        """The SDK transport (an async context giving the session's streams) for the endpoint."""
        endpoint = self.endpoint
        if endpoint.url is None:
            params = StdioServerParameters(command=endpoint.command[0], args=list(endpoint.command[1:]),
                                           env=dict(endpoint.env) or None, cwd=endpoint.cwd)
            async with stdio_client(params) as streams:
                yield streams
            return
        if endpoint.transport == "sse":
            async with sse_client(endpoint.url, headers=dict(endpoint.headers), timeout=endpoint.timeout_s,
                                  httpx_client_factory=self._http_client) as streams:
                yield streams
            return
        async with self._http_client(dict(endpoint.headers)) as http, \
                streamable_http_client(endpoint.url, http_client=http) as streams:
            yield streams

    def _http_client(self, headers: dict[str, str] | None = None, timeout: httpx2.Timeout | None = None,
                     auth: httpx2.Auth | None = None) -> httpx2.AsyncClient:
        """The SDK's HTTP client for this endpoint (also its `httpx_client_factory`): no proxies from the
        environment, the guard's transport for client-given URLs, HTTP error statuses noted."""
        async def note(response: httpx2.Response) -> None:
            if response.status_code >= 400:
                self._statuses.append(response.status_code)

        endpoint = self.endpoint
        seconds = endpoint.timeout_s
        verify: ssl.SSLContext | bool = endpoint.ssl_context or True
        transport = GuardedTransport(endpoint.guard, endpoint.ssl_context) if endpoint.guard is not None else None
        return httpx2.AsyncClient(
            headers=headers, auth=auth, trust_env=False, event_hooks={"response": [note]}, verify=verify,
            timeout=timeout or httpx2.Timeout(seconds, read=max(seconds, 300.0)), transport=transport,
        )


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    """Wait for session tasks told to close; cancel those still running after `_CLOSE_WAIT_S`."""
    if not tasks:
        return
    _done, pending = await asyncio.wait(tasks, timeout=_CLOSE_WAIT_S)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)  # their failures were reported where they happened


def classify(exc: BaseException, statuses: list[int]) -> dict[str, Any]:
    """The structured `mcp_call.error` for a failure of the SDK client (and the HTTP statuses it met)."""
    leaf = _leaf(exc)
    if isinstance(leaf, httpx2.HTTPStatusError):
        status = leaf.response.status_code
        return http_error(status, f"the MCP server answered HTTP {status} {leaf.response.reason_phrase}".strip())
    if isinstance(leaf, MCPError) and (leaf.code != INTERNAL_ERROR or not statuses):
        # A JSON-RPC error the server sent (streamable HTTP may carry it with a 4xx status).
        return protocol_error(leaf.code, leaf.message)
    if statuses:  # the SDK reports an HTTP error status as a generic -32603; the status says more
        return http_error(statuses[-1], f"the MCP server answered HTTP {statuses[-1]}")
    if isinstance(leaf, TimeoutError | httpx2.TimeoutException):
        return protocol_error(REQUEST_TIMEOUT, "the MCP server did not answer in time")
    if isinstance(leaf, httpx2.TransportError | OSError | ConnectionError):
        return protocol_error(CONNECTION_CLOSED, f"could not reach the MCP server: {leaf or type(leaf).__name__}")
    return protocol_error(INTERNAL_ERROR, f"the MCP client failed: {type(leaf).__name__}: {leaf}")


def _leaf(exc: BaseException) -> BaseException:
    """The first exception that is not a group (the SDK's task groups wrap what actually failed)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
