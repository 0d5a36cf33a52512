"""A model's provider as the app calls it: upstream failures counted by model and deployment, and with tracing a
span per model turn (`chat <upstream model>`), current while the call is sent so its `traceparent` header
(providers/http1.py's header hook) names it.

Wrapped around each configured model at start-up (app.py) only when metrics or tracing are on. Failures to open a
turn (connect, HTTP status, timeouts before the answer starts: most upstream failures) are counted with metrics
alone; the turn's stream is wrapped only with tracing, which must see it end: the wrapper costs ~0.5-0.8 µs per
batch of events (one per network read; `python -m bench.metrics_updates`), which metrics alone do not pay. So a
failure after a stream started is counted here only with tracing on; it always shows in
`parley_responses_total{status="failed"}`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from parley.errors import ParleyError
from parley.providers.base import Finish, ModelCall, ModelEvent, ModelStream, Provider, TokenCount, Usage
from parley.telemetry.observe import Telemetry

if TYPE_CHECKING:
    from parley.telemetry.otel import Span


class ObservedProvider:
    def __init__(self, inner: Provider, model: str, deployment: str, telemetry: Telemetry) -> None:
        self.inner = inner
        self._model = model
        self._deployment = deployment
        self._telemetry = telemetry

    async def open(self, call: ModelCall) -> ModelStream:
        tracing = self._telemetry.tracing
        span = tracing.turn_started(call, self._deployment) if tracing is not None else None
        try:
            if span is None or tracing is None:
                stream = await self.inner.open(call)
            else:
                token = tracing.make_current(span)
                try:
                    stream = await self.inner.open(call)
                finally:
                    tracing.restore(token)
        except BaseException as exc:
            self._failed(span, exc)
            raise
        return stream if span is None else _ObservedStream(stream, self, span)

    async def count_tokens(self, call: ModelCall) -> TokenCount:
        return await self.inner.count_tokens(call)

    def _failed(self, span: Span | None, exc: BaseException) -> None:
        if isinstance(exc, ParleyError):
            self._telemetry.upstream_failed(self._model, self._deployment, exc)
        if span is not None and self._telemetry.tracing is not None:
            self._telemetry.tracing.turn_ended(span, None, None, exc)

    def _ended(self, span: Span, usage: Usage | None, finish: Finish | None) -> None:
        if self._telemetry.tracing is not None:
            self._telemetry.tracing.turn_ended(span, usage, finish, None)


class _ObservedStream:
    """The turn's events unchanged; its span ends at the turn's Finish (or when closed, or on a failure)."""

    def __init__(self, stream: ModelStream, provider: ObservedProvider, span: Span | None) -> None:
        self._stream = stream
        self._provider = provider
        self._span = span
        self._batches: AsyncIterator[list[ModelEvent]] | None = None

    def __aiter__(self) -> _ObservedStream:
        self._batches = self._stream.__aiter__()
        return self

    async def __anext__(self) -> list[ModelEvent]:
        assert self._batches is not None
        try:
            batch = await self._batches.__anext__()
        except StopAsyncIteration:
            self._end(None, None)
            raise
        except BaseException as exc:
            span, self._span = self._span, None
            self._provider._failed(span, exc)
            raise
        if self._span is not None and batch and isinstance(batch[-1], Finish):
            usage = next((event for event in batch if isinstance(event, Usage)), None)
            self._end(usage, batch[-1])
        return batch

    def _end(self, usage: Usage | None, finish: Finish | None) -> None:
        span, self._span = self._span, None
        if span is not None:
            self._provider._ended(span, usage, finish)

    async def aclose(self) -> None:
        self._end(None, None)
        await self._stream.aclose()
