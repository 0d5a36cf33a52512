"""Rate limits and budgets per project and per key, checked with no database round trip on the request path.

Fixed UTC windows: requests and tokens per minute, spend per day and per month. A request is admitted when,
for each scope that limits it (its project, from the configuration; its key, stored with the key), the
requests of this minute are under the limit, and the tokens of this minute and the spend of this day and
month have not reached theirs; it is then counted. Its tokens and cost are charged when it ends (a request
is never refused for tokens it has not used yet, so one request may overshoot a token or spend limit).

Counts are shared through the database without a query per request: each process keeps what it counted
locally, and every `sync_interval_s` adds it to the shared counters and reads everyone's totals back, in
one statement inside a group commit (store/sql_limits.py). A check uses the last totals read plus what this
process counted since. So processes sharing a database together can overshoot a limit by at most what the
others admitted during one interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from parley.config import LimitsConfig, RateLimits
from parley.errors import RateLimited
from parley.rate_windows import Windows, reset_text

log = logging.getLogger("parley.limits")

CounterKey = tuple[str, str, int]  # (scope, period, window_start)
Counts = tuple[int, int, int]  # (requests, tokens, cost in nano-USD)
NANOS_PER_USD = 1_000_000_000
# Shared counter rows older than this are deleted now and then (by any process).
_KEEP = {"minute": 3600, "day": 3 * 86400, "month": 93 * 86400}
_PRUNE_EVERY = 60  # syncs


class RateCounterStore(Protocol):
    async def sync_rate_counters(
        self, deltas: Mapping[CounterKey, Counts], windows: Mapping[str, int],
        prune_before: Mapping[str, int] | None = None,
    ) -> dict[CounterKey, Counts]: ...


@dataclass(frozen=True, slots=True)
class Scope:
    """A project or a key, and its limits."""

    name: str  # "project:<id>" or "key:<id>"
    limits: RateLimits


@dataclass(frozen=True, slots=True)
class Admission:
    """An admitted request: the `x-ratelimit-*` headers its response carries (none if nothing limits it)."""

    scopes: tuple[Scope, ...]
    headers: dict[str, str]


class Limiter:
    def __init__(self, store: RateCounterStore, config: LimitsConfig, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._config = config
        self._clock = clock
        self._totals: dict[CounterKey, Counts] = {}  # everyone's, as of the last sync
        self._inflight: dict[CounterKey, list[int]] = {}  # being added by the running sync
        self._pending: dict[CounterKey, list[int]] = {}  # counted here since
        self._configured = not config.default.empty or any(not limits.empty for limits in config.projects.values())
        self._key_seen = -math.inf  # when a limited key was last used here
        self._windows = Windows.at(clock())
        self._syncs = 0
        self._task: asyncio.Task[None] | None = None

    # -- the request path (no I/O) ----------------------------------------------------------------

    def scopes(self, project_id: str, key_id: str | None, key_limits: RateLimits | None) -> tuple[Scope, ...]:
        """The scopes that limit a request of this project and key (empty: nothing does)."""
        project = self._config.projects.get(project_id, self._config.default)
        scopes: list[Scope] = []
        if not project.empty:
            scopes.append(Scope("project:" + project_id, project))
        if key_id is not None and key_limits is not None and not key_limits.empty:
            scopes.append(Scope("key:" + key_id, key_limits))
        return tuple(scopes)

    def admit(self, scopes: tuple[Scope, ...]) -> Admission:
        """Count the request, or raise RateLimited (429) when one of its scopes is at a limit."""
        if not scopes:
            return Admission(scopes, {})
        now = self._clock()
        windows = self._current(now)
        for scope in scopes:
            self._check(scope, windows, now)
        for scope in scopes:
            if scope.name.startswith("key:"):
                self._key_seen = now
            if scope.limits.requests_per_minute is not None or scope.limits.tokens_per_minute is not None:
                self._add((scope.name, "minute", windows.start("minute")), 1, 0, 0)
        return Admission(scopes, self._headers(scopes, windows, now))

    def charge(self, scopes: tuple[Scope, ...], tokens: int, cost: int) -> None:
        """A finished response's tokens and cost (nano-USD), on the windows its scopes limit."""
        if not scopes:
            return
        windows = self._current(self._clock())
        for scope in scopes:
            limits = scope.limits
            if limits.tokens_per_minute is not None or limits.requests_per_minute is not None:
                self._add((scope.name, "minute", windows.start("minute")), 0, tokens, 0)
            for period, limit in (("day", limits.spend_per_day_usd), ("month", limits.spend_per_month_usd)):
                if limit is not None:
                    self._add((scope.name, period, windows.start(period)), 0, 0, cost)

    def _current(self, now: float) -> Windows:
        if now >= self._windows.end("minute") or now < self._windows.start("minute"):
            self._windows = Windows.at(now)
        return self._windows

    def _used(self, key: CounterKey) -> tuple[int, int, int]:
        total = self._totals.get(key, (0, 0, 0))
        inflight = self._inflight.get(key, (0, 0, 0))
        pending = self._pending.get(key, (0, 0, 0))
        return (total[0] + inflight[0] + pending[0], total[1] + inflight[1] + pending[1],
                total[2] + inflight[2] + pending[2])

    def _add(self, key: CounterKey, requests: int, tokens: int, cost: int) -> None:
        counts = self._pending.get(key)
        if counts is None:
            self._pending[key] = [requests, tokens, cost]
        else:
            counts[0] += requests
            counts[1] += tokens
            counts[2] += cost

    def _check(self, scope: Scope, windows: Windows, now: float) -> None:
        limits, who = scope.limits, scope.name.replace(":", " ", 1)
        for period, budget in (("month", limits.spend_per_month_usd), ("day", limits.spend_per_day_usd)):
            spent = self._used((scope.name, period, windows.start(period)))[2]
            if budget is not None and spent >= budget * NANOS_PER_USD:
                wait = windows.end(period) - now
                raise RateLimited(
                    f"You exceeded your current quota: the spend limit of ${budget:g} per {period} of {who} is "
                    f"reached. It resets in {reset_text(wait)}.", "insufficient_quota",
                    {"retry-after": str(math.ceil(wait)), **self._headers((scope,), windows, now)})
        requests, tokens, _ = self._used((scope.name, "minute", windows.start("minute")))
        wait = windows.end("minute") - now
        for kind, label, limit, used, over in (
            ("requests", "requests per min (RPM)", limits.requests_per_minute, requests,
             limits.requests_per_minute is not None and requests + 1 > limits.requests_per_minute),
            ("tokens", "tokens per min (TPM)", limits.tokens_per_minute, tokens,
             limits.tokens_per_minute is not None and tokens >= limits.tokens_per_minute),
        ):
            if over:
                raise RateLimited(
                    f"Rate limit reached for {who} on {label}: Limit {limit}, Used {used}, Requested 1. "
                    f"Please try again in {reset_text(wait)}.", kind,
                    {"retry-after": str(math.ceil(wait)), **self._headers((scope,), windows, now)})

    def _headers(self, scopes: tuple[Scope, ...], windows: Windows, now: float) -> dict[str, str]:
        """OpenAI's x-ratelimit-* trios, for the scope with the least left of each."""
        headers: dict[str, str] = {}
        reset = reset_text(windows.end("minute") - now)
        for index, name in ((0, "requests"), (1, "tokens")):
            tightest: tuple[int, int] | None = None  # (remaining, limit)
            for scope in scopes:
                limit = scope.limits.requests_per_minute if index == 0 else scope.limits.tokens_per_minute
                if limit is None:
                    continue
                used = self._used((scope.name, "minute", windows.start("minute")))[index]
                remaining = max(0, limit - used)
                if tightest is None or remaining < tightest[0]:
                    tightest = (remaining, limit)
            if tightest is not None:
                headers[f"x-ratelimit-limit-{name}"] = str(tightest[1])
                headers[f"x-ratelimit-remaining-{name}"] = str(tightest[0])
                headers[f"x-ratelimit-reset-{name}"] = reset
        return headers

    # -- sharing through the database (off the request path) --------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="parley-limits-sync")

    async def stop(self) -> None:
        """Stop syncing, after adding what was counted since the last sync."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        with contextlib.suppress(Exception):
            await self.sync()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._config.sync_interval_s)
            try:
                await self.sync()
            except Exception:
                log.warning("syncing the rate-limit counters failed; retrying", exc_info=True)

    async def sync(self) -> None:
        """Add the local counts to the shared counters and read every scope's totals back. Skipped while
        nothing here is limited: no project limit in the configuration and no limited key used for two days."""
        now = self._clock()
        if self._key_seen < now - 2 * 86400 and not self._configured and not self._pending:
            return
        windows = self._current(now)
        self._inflight, self._pending = self._pending, {}
        deltas = {key: (c[0], c[1], c[2]) for key, c in self._inflight.items()}
        self._syncs += 1
        prune = ({period: windows.start(period) - keep for period, keep in _KEEP.items()}
                 if self._syncs % _PRUNE_EVERY == 1 else None)
        try:
            totals = await self._store.sync_rate_counters(
                deltas, {period: windows.start(period) for period in windows.bounds}, prune)
        except BaseException:
            for key, counts in self._inflight.items():  # counted again at the next sync
                self._add(key, *counts)
            self._inflight = {}
            raise
        self._totals = totals
        self._inflight = {}
