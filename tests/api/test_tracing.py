"""OpenTelemetry traces (in-memory exporter): a response span with child spans per model turn, built-in tool
call and store write; GenAI attributes; the client's trace context joined and the turn's passed upstream in
`traceparent`; failures marked; no OpenTelemetry SDK imported when tracing is off."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from parley.app import create_app
from parley.config import EmbeddedConfig, ModelConfig, Settings, WebSearchConfig
from parley.testing.fake_agent import AgentUpstream
from parley.testing.fake_search import FakeSearch
from parley.testing.recording_upstream import HeaderRecordingUpstream

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"


@dataclass
class Env:
    http: httpx.AsyncClient
    spans: InMemorySpanExporter
    upstream: HeaderRecordingUpstream

    def trace(self, response_id: str) -> tuple[ReadableSpan, list[ReadableSpan]]:
        """The response's span and every span of its trace below it."""
        finished = self.spans.get_finished_spans()
        root = next(s for s in finished if s.attributes and s.attributes.get("gen_ai.response.id") == response_id)
        below = [s for s in finished if s.context.trace_id == root.context.trace_id and s is not root]
        return root, below


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    upstream, agent, search = HeaderRecordingUpstream(), AgentUpstream(), FakeSearch()
    for server in (upstream, agent, search):
        await server.start()
    models = [ModelConfig(id="echo", base_url=upstream.base_url, upstream_model="echo"),
              ModelConfig(id="broken", base_url=upstream.base_url, upstream_model="error-502"),
              ModelConfig(id="web-agent", base_url=agent.base_url, upstream_model="web-agent")]
    settings = Settings(data_dir=tmp_path_factory.mktemp("tracing"), models=models,
                        embedded=EmbeddedConfig(enabled=False),
                        web_search=WebSearchConfig(provider="searxng", base_url=search.root + "/searxng"))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(settings, tracer_provider=provider)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://parley") as http:
            yield Env(http, exporter, upstream)
    for server in (upstream, agent, search):
        await server.stop()


def _parent(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_a_response_span_with_its_turn_and_write(env: Env) -> None:
    traceparent = f"00-{CLIENT_TRACE}-b7ad6b7169203331-01"
    body = (await env.http.post("/v1/responses", headers={"traceparent": traceparent},
                                json={"model": "echo", "input": "hello there", "temperature": 0.5})).json()
    root, below = env.trace(body["id"])
    assert format(root.context.trace_id, "032x") == CLIENT_TRACE  # the client's trace, joined
    assert _parent(root) == 0xB7AD6B7169203331
    assert (root.name, root.kind) == ("invoke_agent", SpanKind.SERVER)
    attributes = dict(root.attributes or {})
    assert attributes["gen_ai.operation.name"] == "invoke_agent"
    assert attributes["gen_ai.request.model"] == "echo"
    assert attributes["gen_ai.request.temperature"] == 0.5
    assert attributes["gen_ai.usage.input_tokens"] == body["usage"]["input_tokens"]
    assert attributes["gen_ai.usage.output_tokens"] == body["usage"]["output_tokens"]
    assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert {s.name for s in below} == {"chat echo", "parley.store.write"}
    assert all(_parent(s) == root.context.span_id for s in below)
    turn = next(s for s in below if s.name == "chat echo")
    assert turn.kind == SpanKind.CLIENT
    assert dict(turn.attributes or {})["server.address"] == "127.0.0.1"
    # The upstream was told the turn's span: W3C trace context in `traceparent`.
    sent = env.upstream.headers[-1]["traceparent"]
    assert sent == f"00-{CLIENT_TRACE}-{turn.context.span_id:016x}-01"
    # The response span covers storing the response.
    write = next(s for s in below if s.name == "parley.store.write")
    assert root.end_time is not None and write.end_time is not None and write.end_time <= root.end_time
    assert "hello there" not in json.dumps([dict(s.attributes or {}) for s in [root, *below]])  # no content


async def test_requests_without_trace_context_start_their_own(env: Env) -> None:
    first = (await env.http.post("/v1/responses", json={"model": "echo", "input": "a", "stream": False})).json()
    streamed = await env.http.post("/v1/responses", json={"model": "echo", "input": "b", "stream": True})
    second_id = next(json.loads(line[6:])["response"]["id"] for line in streamed.text.splitlines()
                     if line.startswith("data: {") and '"response.completed"' in line)
    one, _ = env.trace(first["id"])
    two, below = env.trace(second_id)
    assert one.parent is None and two.parent is None  # roots: each request its own trace, not nested
    assert one.context.trace_id != two.context.trace_id
    assert [s.name for s in below].count("chat echo") == 1


async def test_tool_calls_are_child_spans(env: Env) -> None:
    steps = json.dumps([[{"query": "paris"}, {"query": "berlin"}]])
    body = (await env.http.post("/v1/responses", json={"model": "web-agent", "input": steps,
                                                       "tools": [{"type": "web_search"}]})).json()
    root, below = env.trace(body["id"])
    names = sorted(s.name for s in below if _parent(s) == root.context.span_id)
    assert names == ["chat web-agent", "chat web-agent", "execute_tool web_search", "execute_tool web_search",
                     "parley.store.write"]
    tool = next(s for s in below if s.name == "execute_tool web_search")
    assert dict(tool.attributes or {})["gen_ai.tool.call.id"]
    assert dict(tool.attributes or {})["parley.tool.item_type"] == "web_search_call"


async def test_a_background_response_is_traced_where_it_runs(env: Env) -> None:
    queued = (await env.http.post("/v1/responses", json={"model": "echo", "input": "later",
                                                          "background": True})).json()
    for _ in range(3000):
        if any((s.attributes or {}).get("gen_ai.response.id") == queued["id"] for s in env.spans.get_finished_spans()):
            break
        await asyncio.sleep(0.02)
    root, below = env.trace(queued["id"])
    assert dict(root.attributes or {})["parley.response.background"] is True
    assert dict(root.attributes or {})["parley.response.status"] == "completed"
    assert "chat echo" in {s.name for s in below if _parent(s) == root.context.span_id}


async def test_a_failed_upstream_marks_the_spans(env: Env) -> None:
    resp = await env.http.post("/v1/responses", json={"model": "broken", "input": "hi"})
    assert resp.status_code == 502
    failed = [s for s in env.spans.get_finished_spans() if s.name in ("chat error-502", "invoke_agent")
              and s.status.status_code == StatusCode.ERROR]
    names = {s.name for s in failed}
    assert names == {"chat error-502", "invoke_agent"}
    assert all(dict(s.attributes or {})["error.type"] for s in failed)


def test_no_opentelemetry_sdk_is_imported_when_tracing_is_off(tmp_path: object) -> None:
    code = ("import asyncio, sys, tempfile, pathlib\n"
            "from parley.app import create_app\nfrom parley.config import Settings, EmbeddedConfig\n"
            "settings = Settings(data_dir=pathlib.Path(tempfile.mkdtemp()), embedded=EmbeddedConfig(enabled=False))\n"
            "app = create_app(settings)\n"
            "async def run():\n    async with app.router.lifespan_context(app):\n        pass\n"
            "asyncio.run(run())\n"
            "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'parley.telemetry.otel'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
