"""The MCP client (tools/mcp/client.py) against the real test server built with the `mcp` SDK: streamable HTTP,
SSE and stdio; headers; each failure as the SDK's structured error; time limits; and the SSRF guard."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator

import pytest
from tests.waiting import LIMIT_S, eventually

from parley.retrieval.fetch import Address, FetchPolicy, SystemResolver
from parley.testing.mcp_server import TOKEN, McpTestServer, serving
from parley.tools.mcp.client import McpConnection, McpEndpoint, McpFailure, transport_for
from parley.tools.mcp.guard import GuardedNetwork, refusal

STDIO = (sys.executable, "-m", "parley.testing.mcp_server", "--stdio")


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[McpTestServer]:
    async with serving() as running:
        yield running


def _connection(url: str, *, headers: tuple[tuple[str, str], ...] = (), timeout_s: float = 5.0,
                guard: GuardedNetwork | None = None) -> McpConnection:
    return McpConnection(McpEndpoint("test", url, transport_for(url), headers, timeout_s=timeout_s, guard=guard))


async def _failure(connection: McpConnection, name: str) -> dict[str, object]:
    with pytest.raises(McpFailure) as caught:
        await connection.call_tool(name, {})
    return caught.value.error


@pytest.mark.parametrize("path", ["/mcp", "/sse"])
async def test_list_and_call_over_each_transport(server: McpTestServer, path: str) -> None:
    connection = _connection(server.url(path))
    try:
        tools = {tool.name: tool for tool in await connection.list_tools()}
        assert {"add", "echo", "distance", "fail", "hang"} <= set(tools)
        assert tools["add"].read_only and not tools["write_note"].read_only
        schema = tools["distance"].input_schema  # intact, $defs and $ref included
        assert schema["properties"]["p"] == {"$ref": "#/$defs/Point"} and "Point" in schema["$defs"]
        result = await connection.call_tool("add", {"a": 2, "b": 3})
        assert not result.is_error and result.content[0].text == "5"  # type: ignore[union-attr]
        # Concurrent calls share the session.
        echoed = await asyncio.gather(*(connection.call_tool("echo", {"text": str(n)}) for n in range(5)))
        assert [r.content[0].text for r in echoed] == [str(n) for n in range(5)]  # type: ignore[union-attr]
        tool_error = await connection.call_tool("fail", {"reason": "no disk"})
        assert tool_error.is_error and "no disk" in tool_error.content[0].text  # type: ignore[union-attr]
        assert await _failure(connection, "protocol_error") == {"type": "mcp_protocol_error", "code": -32602,
                                                                "message": "bad parameters"}
    finally:
        await connection.aclose()


@pytest.mark.parametrize("path", ["/private/mcp", "/private/sse"])
async def test_headers_reach_the_server_and_a_refusal_is_an_http_error(server: McpTestServer, path: str) -> None:
    headers = (("Authorization", f"Bearer {TOKEN}"), ("X-Test", "yes"))
    connection = _connection(server.url(path), headers=headers)
    try:
        result = await connection.call_tool("whoami", {})
        assert result.content[0].text == f"authorization=Bearer {TOKEN} x-test=yes"  # type: ignore[union-attr]
    finally:
        await connection.aclose()
    denied = _connection(server.url(path))
    with pytest.raises(McpFailure) as caught:
        await denied.list_tools()
    await denied.aclose()
    assert caught.value.error["type"] == "http_error" and caught.value.error["code"] == 401


async def test_a_hung_call_times_out_and_is_cancelled_on_the_server(server: McpTestServer) -> None:
    connection = _connection(server.url(), timeout_s=0.5)
    try:
        # "hang" sleeps an hour: only the 0.5 s timeout can end the call, and only a cancellation sent to the
        # server can end its sleep. The deadline fails either never happening instead of hanging the suite.
        async with asyncio.timeout(LIMIT_S):
            error = await _failure(connection, "hang")
        assert error["type"] == "mcp_protocol_error" and error["code"] == -32001
        await eventually(lambda: "hang" in server.stats.cancelled, "the server's hang was cancelled")
        assert (await connection.call_tool("add", {"a": 1, "b": 1})).content[0].text == "2"  # type: ignore[union-attr]
    finally:
        await connection.aclose()


async def test_an_unreachable_server_and_a_closed_session() -> None:
    down = _connection("http://127.0.0.1:1/mcp")
    with pytest.raises(McpFailure) as caught:
        await down.list_tools()
    assert caught.value.error["code"] == -32000
    await down.aclose()
    with pytest.raises(McpFailure):
        await down.list_tools()  # closed for good


async def test_a_session_is_opened_again_after_the_server_restarts() -> None:
    first = McpTestServer()
    await first.start()
    connection = _connection(first.url())
    try:
        assert await connection.list_tools()
        port = first.port
        await first.stop()
        with pytest.raises(McpFailure):
            await connection.call_tool("add", {"a": 1, "b": 2})
        second = McpTestServer(port)
        await second.start()
        try:
            result = await connection.call_tool("add", {"a": 1, "b": 2})
            assert result.content[0].text == "3"  # type: ignore[union-attr]
        finally:
            await second.stop()
    finally:
        await connection.aclose()


async def test_stdio_server() -> None:
    connection = McpConnection(McpEndpoint("local", command=STDIO, timeout_s=20))
    try:
        assert "add" in {tool.name for tool in await connection.list_tools()}
        result = await connection.call_tool("add", {"a": 20, "b": 22})
        assert result.content[0].text == "42"  # type: ignore[union-attr]
    finally:
        await connection.aclose()


class StubResolver:
    """A DNS stub: names resolve to the addresses given."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers

    async def resolve(self, host: str, port: int) -> list[Address]:
        if host not in self.answers:
            raise OSError(f"unknown host {host}")
        return [ipaddress.ip_address(self.answers[host])]


async def test_the_guard_refuses_loopback_and_private_names_unless_allowed(server: McpTestServer) -> None:
    resolver = StubResolver({"internal.example": "10.0.0.7", "loop.example": "127.0.0.1"})
    strict = FetchPolicy()
    assert "loopback" in str(await refusal(server.url(), strict, SystemResolver()))
    assert "private" in str(await refusal("http://internal.example/mcp", strict, resolver))
    assert await refusal("http://unknown.example/mcp", strict, resolver) is None  # fails later, as unreachable
    # Connection time: a name that resolves to loopback is refused by the transport itself.
    guarded = _connection(f"http://loop.example:{server.port}/mcp", guard=GuardedNetwork(strict, resolver))
    with pytest.raises(McpFailure) as caught:
        await guarded.list_tools()
    await guarded.aclose()
    assert caught.value.error["code"] == -32000 and "loopback" in str(caught.value.error["message"])
    # Allowed by the configured allowlist: the guard connects to the address it checked.
    allowed = FetchPolicy.from_entries(["127.0.0.1/32"])
    assert await refusal(server.url(), allowed, SystemResolver()) is None
    connection = _connection(server.url(), guard=GuardedNetwork(allowed, SystemResolver()))
    try:
        assert await connection.list_tools()
    finally:
        await connection.aclose()


async def test_server_urls_and_headers_stay_out_of_debug_logs(server: McpTestServer,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    from parley.log_setup import configure_logging

    loggers = [logging.getLogger(name) for name in ("mcp", "httpx2", "httpcore2")]
    saved = [logger.level for logger in loggers]
    try:
        configure_logging("debug")  # what `parley serve --log-level debug` does
        with caplog.at_level(logging.DEBUG):
            connection = _connection(server.url("/mcp?key=url-secret"), headers=(("X-Key", "header-secret"),))
            try:
                assert await connection.list_tools()
                await connection.call_tool("echo", {"text": "hi"})
            finally:
                await connection.aclose()
    finally:
        for logger, level in zip(loggers, saved, strict=True):
            logger.setLevel(level)
    assert "url-secret" not in caplog.text and "header-secret" not in caplog.text


def _processes_with(marker: str) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as environ:
                    if marker.encode() in environ.read():
                        found.append(entry)
            except OSError:
                continue
    return found


async def test_a_stdio_server_that_is_too_slow_to_start_leaves_no_process() -> None:
    marker = f"PARLEY_TEST_MARK=stdio-{uuid.uuid4().hex}"
    name, value = marker.split("=", 1)
    connection = McpConnection(McpEndpoint("slow", command=STDIO, env=((name, value),), timeout_s=0.3))
    with pytest.raises(McpFailure) as caught:
        await connection.list_tools()  # the server needs ~0.5 s to start
    assert caught.value.error["code"] == -32001
    await connection.aclose()  # waits for the abandoned start, which stops the process
    assert _processes_with(marker) == []
