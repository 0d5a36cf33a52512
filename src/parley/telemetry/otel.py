"""OpenTelemetry tracing (the `otel` extra; imported only when `tracing` is not "off"): a span per response,
child spans per model turn, per built-in tool call and per awaited store write, and the W3C trace context
propagated to upstreams and taken from clients.

Spans follow the GenAI semantic conventions (development status, as of semantic-conventions 1.37):
- the response: `invoke_agent`, kind SERVER (Parley runs the agent loop a client invokes): `gen_ai.operation.name`
  `invoke_agent`, `gen_ai.provider.name` `openai` (the API flavour Parley serves), `gen_ai.request.model` (the
  public model id), `gen_ai.response.id`, `gen_ai.conversation.id`, the request's sampling settings; at its end
  `gen_ai.response.model` (the upstream model), `gen_ai.usage.input_tokens` / `output_tokens` (every turn summed),
  `gen_ai.usage.cache_read.input_tokens`, `gen_ai.response.finish_reasons`, `error.type` when it failed;
- a model turn: `chat <upstream model>`, kind CLIENT, with `server.address` / `server.port`, its own usage and
  finish reason; it is the current span while the upstream request is sent, so the `traceparent` header names it;
- a built-in tool call: `execute_tool <function name>`, kind INTERNAL, `gen_ai.tool.name`, `gen_ai.tool.call.id`;
- a store write: `parley.store.write`, with `db.system.name`.
Prompts, outputs and tool arguments are never recorded (the conventions make them opt-in).

No global state: each app has its own TracerProvider (never installed as the global one) and propagator. The
exporter reads the standard variables itself (`OTEL_EXPORTER_OTLP_ENDPOINT`, `..._HEADERS`, `..._PROTOCOL`,
`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, ...).
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, Literal

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from parley.errors import ParleyError
from parley.providers.base import Finish, ModelCall, Usage
from parley.store.base import UsageRecord
from parley.tools.base import BuiltinCall

__all__ = ["OtelTracing", "RequestScope", "Span", "build_tracing"]

TracingExporter = Literal["otlp", "console"]
# The context a response span was started in, while it is current: a later response in the same task (several on
# one WebSocket connection) is its sibling, not its child.
_RESPONSE_PARENT: ContextVar[Context | None] = ContextVar("parley_response_parent", default=None)
# Response spans started within the current HTTP request, and whether each was recorded: they end with the request
# (so the span covers storing the response and sending its last bytes), as failed if never recorded.
_REQUEST_SPANS: ContextVar[dict[Span, bool] | None] = ContextVar("parley_request_spans", default=None)
_MAX_OPEN = 10_000  # response spans waiting for their usage record; beyond, the oldest is ended as abandoned
_FINISH_REASONS = {"completed": "stop", "failed": "error", "cancelled": "cancelled"}


def build_tracing(exporter: TracingExporter, db_system: str) -> OtelTracing:
    """A tracer provider of its own exporting in batches: OTLP over HTTP/protobuf (configured by OTEL_* variables)
    or the console (for a look without a collector)."""
    span_exporter: SpanExporter
    if exporter == "console":
        span_exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exporter = OTLPSpanExporter()
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "parley"}))  # OTEL_SERVICE_NAME, when set, wins
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    return OtelTracing(provider, db_system)


@dataclass(slots=True)
class RequestScope:
    """What an HTTP request changed in its task's context, restored when it ends."""

    context_token: object
    spans_token: Token[dict[Span, bool] | None]
    parent_token: Token[Context | None]


class OtelTracing:
    def __init__(self, provider: TracerProvider, db_system: str = "sqlite") -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("parley")
        self._propagator = TraceContextTextMapPropagator()
        self._db_system = db_system
        self._open: dict[str, Span] = {}  # response spans by response id, until their usage record

    def shutdown(self) -> None:
        """Export what is buffered, then stop (the app's shutdown)."""
        self.provider.shutdown()

    # -- HTTP requests -----------------------------------------------------------------------------

    def enter(self, headers: list[tuple[bytes, bytes]]) -> RequestScope:
        """The request's trace context: the client's (`traceparent`, `tracestate`), else a new trace."""
        carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in headers
                   if name in (b"traceparent", b"tracestate")}
        incoming = self._propagator.extract(carrier, context=Context())
        return RequestScope(otel_context.attach(incoming), _REQUEST_SPANS.set({}), _RESPONSE_PARENT.set(None))

    def exit(self, scope: RequestScope, status: int) -> None:
        """End the request's response spans (one never recorded failed before it ran to its end), restore the
        context."""
        for span, recorded in (_REQUEST_SPANS.get() or {}).items():
            if not recorded:
                self._forget(span)
                self._fail(span, f"http.{status}" if status >= 400 else "unfinished")
            span.end()
        _RESPONSE_PARENT.reset(scope.parent_token)
        _REQUEST_SPANS.reset(scope.spans_token)
        otel_context.detach(scope.context_token)  # type: ignore[arg-type]

    # -- responses -----------------------------------------------------------------------------------

    def response_started(self, response: dict[str, Any], call: ModelCall) -> None:
        """Start the response's span and make it the current one of this task (until the request ends)."""
        parent = _RESPONSE_PARENT.get() or otel_context.get_current()
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": str(response.get("model") or ""), "gen_ai.response.id": str(response["id"]),
            "gen_ai.output.type": _output_type(call), "parley.response.background": bool(response.get("background")),
            **_sampling(call),
        }
        conversation = response.get("conversation")
        if isinstance(conversation, dict) and conversation.get("id"):
            attributes["gen_ai.conversation.id"] = str(conversation["id"])
        span = self._tracer.start_span("invoke_agent", context=parent, kind=SpanKind.SERVER, attributes=attributes)
        otel_context.attach(trace.set_span_in_context(span, parent))  # restored by the request's exit()
        _RESPONSE_PARENT.set(parent)
        spans = _REQUEST_SPANS.get()
        if spans is not None:
            spans[span] = False
        if len(self._open) >= _MAX_OPEN:
            oldest = self._open.pop(next(iter(self._open)))
            self._fail(oldest, "abandoned")
            oldest.end()
        self._open[str(response["id"])] = span

    def response_failed(self, response_id: str, exc: BaseException) -> None:
        span = self._open.pop(response_id, None)
        if span is not None:
            self._fail(span, _error_type(exc), exc)
            self._end(span, recorded=True)

    def response_recorded(self, record: UsageRecord, response: dict[str, Any]) -> None:
        span = self._open.pop(record.response_id, None)
        if span is None:
            return
        span.set_attributes({
            "gen_ai.response.model": record.upstream_model, "gen_ai.usage.input_tokens": record.input_tokens,
            "gen_ai.usage.output_tokens": record.output_tokens,
            "gen_ai.usage.cache_read.input_tokens": record.cached_tokens,
            "gen_ai.response.finish_reasons": [_finish_reason(response)],
            "parley.response.status": record.status, "parley.project.id": record.project_id,
            "parley.usage.reasoning_tokens": record.reasoning_tokens, "parley.cost_usd": record.cost / 1e9,
        })
        if record.status == "failed":
            error = response.get("error") or {}
            self._fail(span, str(error.get("code") or "server_error"))
        self._end(span, recorded=True)

    @staticmethod
    def _end(span: Span, *, recorded: bool) -> None:
        """End now, or with the HTTP request that started it (its write and last bytes still to come)."""
        spans = _REQUEST_SPANS.get()
        if spans is not None and span in spans:
            spans[span] = recorded
        else:
            span.end()

    # -- model turns ---------------------------------------------------------------------------------

    def turn_started(self, call: ModelCall, deployment: str) -> Span:
        host, colon, port = deployment.rpartition(":")
        if not colon or not port.isdigit():
            host, port = deployment, ""
        attributes: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                                      "gen_ai.request.model": call.upstream_model, **_sampling(call)}
        if host:
            attributes["server.address"] = host
        if port:
            attributes["server.port"] = int(port)
        return self._tracer.start_span(f"chat {call.upstream_model}", kind=SpanKind.CLIENT, attributes=attributes)

    def turn_ended(self, span: Span, usage: Usage | None, finish: Finish | None, exc: BaseException | None) -> None:
        if usage is not None:
            span.set_attributes({"gen_ai.usage.input_tokens": usage.input_tokens,
                                 "gen_ai.usage.output_tokens": usage.output_tokens})
        if finish is not None:
            span.set_attribute("gen_ai.response.finish_reasons", [finish.reason])
        if exc is not None:
            self._fail(span, _error_type(exc), exc)
        span.end()

    # -- built-in tools and store writes -----------------------------------------------------------------

    def tool_started(self, call: BuiltinCall) -> Span:
        return self._tracer.start_span(f"execute_tool {call.name}", kind=SpanKind.INTERNAL, attributes={
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": call.name,
            "gen_ai.tool.call.id": call.call_id, "gen_ai.tool.type": "extension"})

    def tool_ended(self, span: Span, token: object, tool: str, status: str, exc: BaseException | None) -> None:
        span.set_attributes({"parley.tool.item_type": tool, "parley.tool.status": status})
        if exc is not None:
            self._fail(span, _error_type(exc), exc)
        elif status == "failed":
            self._fail(span, "tool_failed")
        span.end()
        if token is not None:
            self.restore(token)

    def store_write(self) -> Any:
        """A span around one awaited write (a group commit it joined), current while it waits."""
        return self._tracer.start_as_current_span("parley.store.write", kind=SpanKind.INTERNAL,
                                                  attributes={"db.system.name": self._db_system})

    # -- context ---------------------------------------------------------------------------------------

    def make_current(self, span: Span) -> object:
        return otel_context.attach(trace.set_span_in_context(span))

    def restore(self, token: object) -> None:
        otel_context.detach(token)  # type: ignore[arg-type]

    def outgoing_headers(self) -> dict[str, str]:
        """`traceparent` (and `tracestate`) of the current span, for an upstream request; {} outside any span."""
        carrier: dict[str, str] = {}
        self._propagator.inject(carrier)
        return carrier

    # -- helpers -----------------------------------------------------------------------------------------

    def _forget(self, span: Span) -> None:
        for response_id, open_span in list(self._open.items()):
            if open_span is span:
                del self._open[response_id]

    @staticmethod
    def _fail(span: Span, error_type: str, exc: BaseException | None = None) -> None:
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, str(exc)[:200] if exc is not None else error_type))


def _sampling(call: ModelCall) -> dict[str, Any]:
    values = {"gen_ai.request.temperature": call.temperature, "gen_ai.request.top_p": call.top_p,
              "gen_ai.request.max_tokens": call.max_output_tokens}
    return {name: value for name, value in values.items() if value is not None}


def _output_type(call: ModelCall) -> str:
    kind = (call.text_format or {}).get("type")
    return "json" if kind in ("json_schema", "json_object") else "text"


def _finish_reason(response: dict[str, Any]) -> str:
    status = str(response.get("status"))
    if status == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return "length" if reason == "max_output_tokens" else str(reason or "incomplete")
    return _FINISH_REASONS.get(status, status)


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, ParleyError):
        return exc.code or str(exc.status)
    return type(exc).__qualname__
