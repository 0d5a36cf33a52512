"""Building an app's telemetry from its settings (app.py): metrics unless `metrics = "off"`, tracing when
`tracing` names an exporter (or a test hands in its own tracer provider), and the model providers it watches."""

from __future__ import annotations

import dataclasses
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from parley.config import Settings
from parley.providers.registry import ModelEntry
from parley.services.usage import Deployment
from parley.telemetry.metrics import Metrics
from parley.telemetry.observe import Telemetry
from parley.telemetry.provider import ObservedProvider

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider


def build_telemetry(settings: Settings, stack: AsyncExitStack,
                    tracer_provider: TracerProvider | None = None) -> Telemetry:
    """`tracer_provider`: trace into it (tests: an in-memory exporter) whatever `tracing` says."""
    tracing = None
    if tracer_provider is not None or settings.tracing != "off":
        db = "sqlite" if settings.effective_database_url.startswith("sqlite") else "postgresql"
        try:
            from parley.telemetry.otel import OtelTracing, build_tracing

            if tracer_provider is not None:
                tracing = OtelTracing(tracer_provider, db)
            else:
                tracing = build_tracing("console" if settings.tracing == "console" else "otlp", db)
                stack.callback(tracing.shutdown)  # the last spans are exported when the app stops
        except ImportError as exc:
            raise RuntimeError(f"tracing = \"{settings.tracing}\" needs the otel extra "
                               "(pip install 'parley[otel]')") from exc
    metrics = Metrics() if settings.metrics_access != "off" else None
    return Telemetry(metrics, tracing, access_log=settings.access_log, log_content=settings.log_content)


def observed(entries: list[ModelEntry], deployments: dict[str, Deployment], telemetry: Telemetry) -> list[ModelEntry]:
    """Each model's provider wrapped so its upstream failures are counted and its turns traced (nothing to
    wrap when metrics and tracing are off)."""
    if telemetry.metrics is None and telemetry.tracing is None:
        return entries
    wrapped = []
    for entry in entries:
        deployment = deployments.get(entry.id)
        host = deployment.upstream_host if deployment is not None else ""
        wrapped.append(dataclasses.replace(entry, provider=ObservedProvider(entry.provider, entry.id, host, telemetry)))
    return wrapped
