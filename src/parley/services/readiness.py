"""GET /ready: whether this process can serve requests now — its database answers, each configured upstream
answers HTTP, and the models Parley runs itself (the embedded one) are ready.

Each check is cheap and bounded by `readiness_timeout_s`: the database gets `SELECT 1`; an upstream gets
`GET <base_url>/models` without credentials, and any HTTP answer (401 included) counts as reachable: the question
is whether it is up, not whether Parley's key is right (a request will say that). The answer is kept for
`readiness_cache_s` and concurrent probes share one check in flight, so probing /ready cannot multiply the load
on upstreams or the database. No URL, host or reason is shown: model ids and states only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from parley.providers.base import ModelStatus
from parley.providers.http1 import Endpoint, Http1Pool

# Models Parley runs itself that can take a request now (`not_started`: started by the first request).
_READY_STATES = frozenset({"ready", "not_started"})


@dataclass(frozen=True, slots=True)
class Upstream:
    """The models one upstream base URL serves."""

    base_url: str
    model_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReadinessChecks:
    database: Callable[[], Awaitable[None]]
    upstreams: tuple[Upstream, ...]
    local_models: tuple[tuple[str, Callable[[], ModelStatus]], ...]  # (model id, its status)


class Readiness:
    def __init__(self, checks: ReadinessChecks, http: Http1Pool, timeout_s: float, cache_s: float) -> None:
        self._checks = checks
        self._http = http
        self._timeout_s = timeout_s
        self._cache_s = cache_s
        self._last: tuple[float, dict[str, Any]] | None = None
        self._running: asyncio.Future[dict[str, Any]] | None = None

    async def report(self) -> dict[str, Any]:
        """{"status": "ready" | "not_ready", "checks": {...}}, from the cache while it is fresh."""
        now = time.monotonic()
        if self._last is not None and now - self._last[0] < self._cache_s:
            return self._last[1]
        if self._running is None:
            self._running = asyncio.ensure_future(self._check())
            self._running.add_done_callback(self._checked)
        return await asyncio.shield(self._running)

    def _checked(self, future: asyncio.Future[dict[str, Any]]) -> None:
        self._running = None
        if not future.cancelled() and future.exception() is None:
            self._last = (time.monotonic(), future.result())

    async def _check(self) -> dict[str, Any]:
        database, *upstreams = await asyncio.gather(
            self._bounded(self._checks.database()), *(self._upstream(u) for u in self._checks.upstreams))
        models: dict[str, str] = {}
        for upstream, state in zip(self._checks.upstreams, upstreams, strict=True):
            models.update({model_id: state for model_id in upstream.model_ids})
        for model_id, status in self._checks.local_models:
            models[model_id] = status().state
        ok = database == "ok" and all(state in ("ok", *_READY_STATES) for state in models.values())
        return {"status": "ready" if ok else "not_ready", "checks": {"database": database, "models": models}}

    async def _upstream(self, upstream: Upstream) -> str:
        async def probe() -> None:
            endpoint = Endpoint.parse(upstream.base_url.rstrip("/") + "/models")
            resp = await self._http.request(endpoint, "GET", {"accept": "application/json"}, b"",
                                            connect_timeout=self._timeout_s, read_timeout=self._timeout_s)
            try:
                await resp.read_prefix(4096)
            finally:
                resp.release()

        return await self._bounded(probe())

    async def _bounded(self, check: Awaitable[None]) -> str:
        """"ok", "timeout" or "unreachable"."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await check
        except TimeoutError:
            return "timeout"
        except Exception:  # a refused connection, a broken reply, a database driver's own error types
            return "unreachable"
        return "ok"
