"""Operating endpoints: GET /metrics (Prometheus), GET /ready (readiness, services/readiness.py).

/metrics is open, needs an admin key, or is not served, as `metrics` says (config.py `metrics_access`: by default
open on a loopback bind, where only this machine can scrape it, else an admin key, as Prometheus sends with
`authorization` in its scrape config). It shows every project's models, tokens and costs together, so a project
key is not enough. /ready and /health need no key: load balancers and orchestrators probe them without one.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from parley.api.http import endpoint, json_response
from parley.api.runtime import Runtime, runtime_of
from parley.errors import NotFound
from parley.store.sql_status import queued_background_jobs
from parley.telemetry.metrics import Metrics

log = logging.getLogger("parley.api")


@endpoint
async def metrics(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    registry = rt.telemetry.metrics
    if registry is None:
        raise NotFound("Unknown request URL: GET /metrics (metrics = \"off\").", code="unknown_url")
    if rt.settings.metrics_access == "keys":
        (await rt.auth.caller_of(request)).check_admin()
    await _gauges(rt, registry)
    body, content_type = registry.render(request.headers.get("accept"))
    return Response(body, headers={"content-type": content_type, "x-request-id": rid})


async def _gauges(rt: Runtime, registry: Metrics) -> None:
    """The values only a scrape reads: the shared background queue, this process's runs, models' states, the
    upstream connection pool's retries and the ingestion worker's totals."""
    try:
        registry.background_queued.values[()] = await queued_background_jobs(rt.store.engine)
    except Exception:
        log.warning("metrics: counting queued background responses failed", exc_info=True)
    registry.background_running.values[()] = rt.background.runner.running
    for entry in rt.models.all():
        if entry.status is not None:
            registry.model_up.values[(entry.id,)] = 1.0 if entry.status().state == "ready" else 0.0
    registry.upstream_retries.values = {(host,): float(count) for host, count in rt.http.retries.items()}
    if rt.ingestion is not None:  # its own running totals (services/ingestion.py IngestionStats)
        stats = rt.ingestion.stats
        registry.indexed_files.values = {("completed",): float(stats.files), ("failed",): float(stats.failed)}
        registry.indexed_chunks.values = {(): float(stats.chunks)}
        registry.ingestion_seconds.values = {(stage,): seconds for stage, seconds in stats.stages.items()}


@endpoint
async def ready(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    if rt.readiness is None:
        return json_response({"status": "ready", "checks": {}}, rid)
    report = await rt.readiness.report()
    return json_response(report, rid, 200 if report["status"] == "ready" else 503)
