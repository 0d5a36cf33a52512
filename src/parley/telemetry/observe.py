"""The hooks the request path reports through: one `Telemetry` per app, feeding its metrics and, when tracing is
on, its OpenTelemetry spans.

Where each hook sits (ARCHITECTURE.md, "Observability"): `api/http.py` `Endpoint` (every HTTP request, and the
trace context a client sent), `services/responses.py` `open_run` (a response's span, current from there on in its
task), `telemetry/meter.py` (a response's counters, once, when its usage record is made: foreground and
background alike), `telemetry/provider.py` (model turns and upstream failures), `engine/tool_loop.py` `Dispatch`
(built-in tool calls) and `store/writer.py` (write batches, and a span per awaited write). Nothing here runs per
token: a response touches its counters once, at its end.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from parley.errors import ParleyError
from parley.providers.base import ModelCall
from parley.providers.routing import served_by
from parley.store.base import UsageRecord
from parley.telemetry.metrics import Metrics
from parley.tools.base import BuiltinCall, Item

if TYPE_CHECKING:
    from starlette.types import Scope

    from parley.telemetry.otel import OtelTracing, RequestScope, Span

_TOKEN_TYPES = ("input", "cached", "cache_write", "output", "reasoning")
access_log = logging.getLogger("parley.access")


@dataclass(slots=True)
class RequestObservation:
    """One HTTP request being served: when it started, and its trace scope (tracing on)."""

    started: float
    scope: RequestScope | None


class Telemetry:
    """Metrics (None: `metrics = "off"`), tracing (None: off) and access log lines (`access_log`) of one app.
    `log_content`: access lines of finished responses also carry their instructions and output text."""

    def __init__(self, metrics: Metrics | None = None, tracing: OtelTracing | None = None, *,
                 access_log: bool = False, log_content: bool = False) -> None:
        self.metrics = metrics
        self.tracing = tracing
        self.access_log = access_log
        self.log_content = log_content
        self.enabled = metrics is not None or tracing is not None or access_log
        self.tools = _ToolObserver(self) if self.enabled else None
        self.writes = _WriteObserver(self) if self.enabled else None

    # -- HTTP requests (api/http.py) -------------------------------------------------------------

    def request_started(self, scope: Scope) -> RequestObservation:
        tracing = self.tracing
        return RequestObservation(time.perf_counter(), tracing.enter(scope["headers"]) if tracing else None)

    def request_ended(self, observation: RequestObservation, scope: Scope, status: int) -> None:
        seconds = time.perf_counter() - observation.started
        route = scope.get("route")
        # The router's match (a template such as /v1/responses/{response_id}); the app's static fast path
        # leaves none, and there the path is the template.
        key = (scope["method"], route.path if route is not None else scope["path"])
        metrics = self.metrics
        if metrics is not None:
            metrics.http_requests.inc((*key, str(status)))
            metrics.http_duration.observe(key, seconds)
        if self.access_log:
            fields = {"method": key[0], "route": key[1], "status": status, "duration_ms": round(seconds * 1000, 2)}
            access_log.info("%s %s %d %.2fms", *key, status, fields["duration_ms"], extra={"fields": fields})
        if observation.scope is not None and self.tracing is not None:
            self.tracing.exit(observation.scope, status)

    # -- responses (services/responses.py, telemetry/meter.py) -----------------------------------

    def response_opening(self, response: dict[str, Any], call: ModelCall) -> AbstractContextManager[None]:
        """Around opening a response's first model turn: its span starts here (tracing on) and stays the current
        span of the task that runs it; if the opening fails, the span ends with the error."""
        if self.tracing is None:
            return contextlib.nullcontext()
        return self._opening(self.tracing, response, call)

    @contextlib.contextmanager
    def _opening(self, tracing: OtelTracing, response: dict[str, Any], call: ModelCall) -> Iterator[None]:
        tracing.response_started(response, call)
        try:
            yield
        except BaseException as exc:
            tracing.response_failed(str(response.get("id")), exc)
            raise

    def response_recorded(self, record: UsageRecord, response: dict[str, Any]) -> None:
        """A response ended and its usage record was made (once per response that ran a model)."""
        metrics = self.metrics
        if metrics is not None:
            model = record.model
            metrics.responses.inc((model, record.status, "background" if record.background else "foreground"))
            metrics.response_duration.observe((model,), record.latency_ms / 1000)
            if record.ttft_ms is not None:
                metrics.ttft.observe((model,), record.ttft_ms / 1000)
            counts = (record.input_tokens, record.cached_tokens, record.cache_write_tokens, record.output_tokens,
                      record.reasoning_tokens)
            for kind, count in zip(_TOKEN_TYPES, counts, strict=True):
                if count:
                    metrics.tokens.inc((model, kind), count)
            if record.cost:
                metrics.cost.inc((model,), record.cost / 1e9)  # nano-USD
        if self.tracing is not None:
            self.tracing.response_recorded(record, response)
        if self.access_log:
            self._log_response(record, response)

    def _log_response(self, record: UsageRecord, response: dict[str, Any]) -> None:
        fields: dict[str, Any] = {
            "response_id": record.response_id, "project": record.project_id, "api_key_id": record.api_key_id,
            "model": record.model, "deployment": record.upstream_host, "status": record.status,
            "background": record.background, "latency_ms": record.latency_ms, "ttft_ms": record.ttft_ms,
            "input_tokens": record.input_tokens, "cached_tokens": record.cached_tokens,
            "output_tokens": record.output_tokens, "reasoning_tokens": record.reasoning_tokens,
            "tool_calls": record.tool_calls, "cost_usd": record.cost / 1e9,
        }
        served = served_by()  # a routed model: the deployment that served its last turn
        if served is not None:
            fields["served_by"] = served
        if self.log_content:
            fields["instructions"] = response.get("instructions")
            fields["output_text"] = _output_text(response)
        access_log.info("response %s %s%s %s latency_ms=%d ttft_ms=%s tokens=%d/%d", record.response_id,
                        record.model, f" via {served}" if served is not None else "", record.status,
                        record.latency_ms, record.ttft_ms, record.input_tokens, record.output_tokens,
                        extra={"fields": fields})

    # -- model turns (telemetry/provider.py) -----------------------------------------------------

    def upstream_failed(self, model: str, deployment: str, err: ParleyError) -> None:
        if self.metrics is not None:
            self.metrics.upstream_errors.inc((model, deployment, str(err.status)))


def _output_text(response: dict[str, Any]) -> str:
    return "".join(part.get("text", "") for item in response.get("output") or () if item.get("type") == "message"
                   for part in item.get("content") or () if part.get("type") == "output_text")


class _ToolCall:
    """One built-in call under observation (engine/tool_loop.py's ToolCallNote)."""

    __slots__ = ("_item", "_span", "_started", "_telemetry", "_token")

    def __init__(self, telemetry: Telemetry, call: BuiltinCall) -> None:
        self._telemetry = telemetry
        self._item: Item | None = None
        self._span: Span | None = telemetry.tracing.tool_started(call) if telemetry.tracing else None
        self._token: object = None
        self._started = time.perf_counter()

    def finished(self, item: Item) -> None:
        self._item = item

    def __enter__(self) -> _ToolCall:
        if self._span is not None and self._telemetry.tracing is not None:
            self._token = self._telemetry.tracing.make_current(self._span)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        item = self._item or {}
        tool = str(item.get("type") or "unknown")
        status = str(item.get("status") or ("cancelled" if kind is not None else "unknown"))
        metrics = self._telemetry.metrics
        if metrics is not None:
            metrics.tool_calls.inc((tool, status))
            metrics.tool_duration.observe((tool,), time.perf_counter() - self._started)
        tracing = self._telemetry.tracing
        if self._span is not None and tracing is not None:
            tracing.tool_ended(self._span, self._token, tool, status, exc)


class _ToolObserver:
    """engine/tool_loop.py's ToolObserver: counts and times each built-in call; a span per call (tracing on)."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry

    def tool_call(self, call: BuiltinCall) -> _ToolCall:
        return _ToolCall(self._telemetry, call)


class _WriteObserver:
    """store/writer.py's WriteObserver: the size of each group commit; a span per awaited write (tracing on)."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry

    def committed(self, writes: int) -> None:
        if self._telemetry.metrics is not None:
            self._telemetry.metrics.write_batch.observe((), writes)

    def write(self) -> AbstractContextManager[object]:
        tracing = self._telemetry.tracing
        return tracing.store_write() if tracing is not None else contextlib.nullcontext()
