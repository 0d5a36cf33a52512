"""Helpers of the WebSocket mode tests: read frames strictly (every one validated against the SDK's
`ResponsesServerEvent`), and a server with the fake upstreams."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI
from openai.resources.responses.responses import AsyncResponsesConnection
from openai.types.responses.responses_server_event import ResponsesServerEvent
from pydantic import TypeAdapter

from parley.config import EmbeddedConfig, ModelConfig, Settings, WebSearchConfig, WebSocketConfig
from parley.testing.fake_agent import AgentUpstream
from parley.testing.fake_search import FakeSearch
from parley.testing.in_process import Served, served

SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(ResponsesServerEvent)
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


def check_frame(raw: bytes | str) -> dict[str, Any]:
    """One frame: one JSON object that the SDK's server event union validates, as the type it says it is."""
    data: dict[str, Any] = json.loads(raw)
    parsed = SERVER_EVENT.validate_python(data)
    assert parsed.type == data["type"], (parsed, data)
    if data["type"] == "error":
        assert set(data["error"]) >= {"type", "code", "message", "param"}, data
        assert isinstance(data["status"], int)
    return data


async def next_frame(conn: AsyncResponsesConnection, within_s: float = 10.0) -> dict[str, Any]:
    return check_frame(await asyncio.wait_for(conn.recv_bytes(), within_s))


async def one_response(conn: AsyncResponsesConnection) -> list[dict[str, Any]]:
    """Frames up to and including a terminal event or an `error`; sequence numbers checked from 0."""
    frames: list[dict[str, Any]] = []
    while True:
        frame = await next_frame(conn)
        frames.append(frame)
        if frame["type"] == "error" or frame["type"] in TERMINAL:
            break
    numbered = [f["sequence_number"] for f in frames if f["type"].startswith("response.")
                and not f["type"].startswith("response.steer")]
    assert numbered == list(range(len(numbered))), numbered
    return frames


@dataclass
class Env:
    upstream: AgentUpstream
    search: FakeSearch
    server: Served
    data_dir: Path
    extra: dict[str, Served] = field(default_factory=dict)

    def sdk(self, api_key: str = "local") -> AsyncOpenAI:
        return self.server.sdk(api_key)

    @property
    def ws_url(self) -> str:
        return self.server.base_url.replace("http://", "ws://") + "/responses"


def settings(data_dir: Path, upstream: AgentUpstream, search: FakeSearch, **extra: Any) -> Settings:
    models = [ModelConfig(id=name, base_url=upstream.base_url, upstream_model=name)
              for name in ("echo", "slow", "error-500", "error-400", "drop", "web-agent", "tools")]
    # A search never times out in these tests: a "slow" one is held open by the test (`holding`) instead.
    web = WebSearchConfig(provider="searxng", base_url=search.root + "/searxng", timeout_s=60.0)
    return Settings(data_dir=data_dir, models=models, embedded=EmbeddedConfig(enabled=False), web_search=web,
                    **extra)


@asynccontextmanager
async def holding(search: FakeSearch) -> AsyncIterator[asyncio.Event]:
    """"slow" searches wait until the event is set (at the latest when the block ends): a response stays in its
    tool loop for as long as the test needs, whatever the machine's speed."""
    search.hold = gate = asyncio.Event()
    try:
        yield gate
    finally:
        gate.set()
        search.hold = None


@asynccontextmanager
async def environment(data_dir: Path, websocket: WebSocketConfig | None = None,
                      **extra: Any) -> AsyncIterator[Env]:
    upstream, search = AgentUpstream(), FakeSearch()
    await upstream.start()
    await search.start()
    try:
        config = settings(data_dir, upstream, search, websocket=websocket or WebSocketConfig(), **extra)
        async with served(config) as server:
            yield Env(upstream, search, server, data_dir)
    finally:
        await search.stop()
        await upstream.stop()
