"""The `mcp` tool through a real `parley serve` configured by TOML ([fetch] allow, [mcp], [[mcp_servers]] with a
stdio command): streamed events on the wire, an approval round trip, a client-named server over HTTP, and the
operator's stdio server stopped with Parley."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from compat_support import ParleyServer, check_events, fold_output, model_toml, post_stream
from openai import OpenAI

from parley.testing.mcp_agent import McpAgentUpstream, ThreadedMcpAgentUpstream
from parley.testing.mcp_server import McpTestServer, ThreadedMcpServer


@dataclass
class Env:
    server: ParleyServer
    client: OpenAI
    mcp: McpTestServer
    upstream: McpAgentUpstream
    marker: str  # in the stdio server's environment


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    marker = uuid.uuid4().hex
    with ThreadedMcpAgentUpstream() as upstream, ThreadedMcpServer() as mcp:
        config = model_toml("mcp-agent", upstream.base_url, "mcp-agent")
        config += "[embedded]\nenabled = false\n[fetch]\nallow = [\"127.0.0.1/32\"]\n[mcp]\ntimeout_s = 10\n"
        config += ("[[mcp_servers]]\nlabel = \"local\"\n"
                   f"command = {json.dumps([sys.executable, '-m', 'parley.testing.mcp_server', '--stdio'])}\n"
                   f"env = {{ PARLEY_TEST_MARK = \"{marker}\" }}\ndescription = \"the local test server\"\n")
        server = ParleyServer(tmp_path_factory.mktemp("parley-mcp"), config)
        server.start()
        try:
            with OpenAI(base_url=server.base_url, api_key="sk-local", max_retries=0, timeout=30.0) as client:
                yield Env(server, client, mcp, upstream, marker)
        finally:
            server.stop()


def _steps(*calls: tuple[str, dict[str, object]]) -> str:
    return json.dumps([[{"call": name, "arguments": arguments}] for name, arguments in calls])


def _marked_processes(marker: str) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/environ").read_bytes():
                    found.append(entry)
            except OSError:
                continue
    return found


def test_a_declared_stdio_server_streams_its_items(env: Env) -> None:
    body = {"model": "mcp-agent", "stream": True, "input": _steps(("local__add", {"a": 1, "b": 2})),
            "tools": [{"type": "mcp", "server_label": "local", "require_approval": "never"}]}
    events = post_stream(env.server.base_url, body).events()
    check_events(events)
    output = fold_output(events)
    assert [item["type"] for item in output] == ["mcp_list_tools", "mcp_call", "message"]
    assert output[1]["output"] == "3" and events[-1]["response"]["output"][2]["content"][0]["text"] == "done: 3"
    kinds = [e["type"] for e in events]
    assert kinds.index("response.mcp_list_tools.completed") < kinds.index("response.mcp_call.completed")


def test_an_approval_round_trip_on_a_client_server(env: Env) -> None:
    tool = {"type": "mcp", "server_label": "remote", "server_url": env.mcp.url("/sse")}  # the SSE transport
    first = env.client.responses.create(model="mcp-agent", tools=[tool],  # type: ignore[list-item]
                                        input=_steps(("remote__write_note", {"text": "over SSE"})))
    request = first.output[-1]
    assert request.type == "mcp_approval_request"
    second = env.client.responses.create(model="mcp-agent", tools=[tool], previous_response_id=first.id,  # type: ignore[list-item]
                                         input=[{"type": "mcp_approval_response", "approval_request_id": request.id,
                                                 "approve": True}])
    assert [item.type for item in second.output] == ["mcp_call", "message"]
    assert second.output_text == "done: saved: over SSE"
    assert ("write_note", {"text": "over SSE"}) in env.mcp.stats.calls


def test_the_stdio_server_stops_with_parley(env: Env) -> None:
    assert _marked_processes(env.marker)  # started by the first test, kept for the app's life
    env.server.stop()
    assert _marked_processes(env.marker) == []
    env.server.start()  # for any test after this one
