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
_SCOPES_KEPT = 4096  # (project, key) pairs whose scopes are kept made; past it they are made again


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

    @property
    def per_minute(self) -> bool:
        return self.limits.requests_per_minute is not None or self.limits.tokens_per_minute is not None


@dataclass(frozen=True, slots=True)
class Admission:
    """An admitted request: the `x-ratelimit-*` headers its response carries (none if nothing limits it)."""

    scopes: tuple[Scope, ...]
    headers: dict[str, str]


_ZERO: Counts = (0, 0, 0)


class Limiter:
    def __init__(self, store: RateCounterStore, config: LimitsConfig, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._config = config
        self._clock = clock
        self._totals: dict[CounterKey, Counts] = {}  # everyone's, as of the last sync
        self._inflight: dict[CounterKey, list[int]] = {}  # being added by the running sync
        self._pending: dict[CounterKey, list[int]] = {}  # counted here since
        self._base: dict[CounterKey, Counts] = {}  # _totals + _inflight: what a check adds _pending to
        self._configured = not config.default.empty or any(not limits.empty for limits in config.projects.values())
        self._key_seen = -math.inf  # when a limited key was last used here
        self._windows = Windows.at(clock())
        self._minute = self._windows.bounds["minute"]
        self._keys: dict[str, tuple[CounterKey, CounterKey, CounterKey]] = {}  # scope -> its keys in _windows
        self._scopes: dict[tuple[str, str | None], tuple[RateLimits | None, tuple[Scope, ...]]] = {}
        self._reset = (-1, "")  # (milliseconds, x-ratelimit-reset-* text): one formatting per millisecond
        self._syncs = 0
        self._task: asyncio.Task[None] | None = None

    # -- the request path (no I/O) ----------------------------------------------------------------

    def scopes(self, project_id: str, key_id: str | None, key_limits: RateLimits | None) -> tuple[Scope, ...]:
        """The scopes that limit a request of this project and key (empty: nothing does). Made once per
        project and key (again when the key's limits change)."""
        cached = self._scopes.get((project_id, key_id))
        if cached is not None and cached[0] is key_limits:
            return cached[1]
        project = self._config.projects.get(project_id, self._config.default)
        scopes: list[Scope] = []
        if not project.empty:
            scopes.append(Scope("project:" + project_id, project))
        if key_id is not None and key_limits is not None and not key_limits.empty:
            scopes.append(Scope("key:" + key_id, key_limits))
        if len(self._scopes) >= _SCOPES_KEPT:
            self._scopes.clear()
        self._scopes[(project_id, key_id)] = (key_limits, tuple(scopes))
        return tuple(scopes)

    def admit(self, scopes: tuple[Scope, ...]) -> Admission:
        """Count the request, or raise RateLimited (429) when one of its scopes is at a limit."""
        if not scopes:
            return Admission(scopes, {})
        now = self._clock()
        if not self._minute[0] <= now < self._minute[1]:
            self._roll(now)
        for scope in scopes:
            self._check(scope, now)
        for scope in scopes:
            if scope.name.startswith("key:"):
                self._key_seen = now
            if scope.per_minute:
                self._add(self._keys_of(scope.name)[0], 1, 0, 0)
        return Admission(scopes, self._headers(scopes, now))

    def charge(self, scopes: tuple[Scope, ...], tokens: int, cost: int) -> None:
        """A finished response's tokens and cost (nano-USD), on the windows its scopes limit."""
        if not scopes:
            return
        now = self._clock()
        if not self._minute[0] <= now < self._minute[1]:
            self._roll(now)
        for scope in scopes:
            limits = scope.limits
            minute, day, month = self._keys_of(scope.name)
            if scope.per_minute:
                self._add(minute, 0, tokens, 0)
            if limits.spend_per_day_usd is not None:
                self._add(day, 0, 0, cost)
            if limits.spend_per_month_usd is not None:
                self._add(month, 0, 0, cost)

    def _roll(self, now: float) -> None:
        """A new minute (or a clock set back): the windows and the counter keys in them."""
        self._windows = Windows.at(now)
        self._minute = self._windows.bounds["minute"]
        self._keys.clear()

    def _keys_of(self, scope: str) -> tuple[CounterKey, CounterKey, CounterKey]:
        """A scope's (minute, day, month) counter keys in the current windows."""
        keys = self._keys.get(scope)
        if keys is None:
            bounds = self._windows.bounds
            keys = self._keys[scope] = ((scope, "minute", bounds["minute"][0]), (scope, "day", bounds["day"][0]),
                                        (scope, "month", bounds["month"][0]))
        return keys

    def _used(self, key: CounterKey) -> Counts:
        base = self._base.get(key, _ZERO)
        pending = self._pending.get(key)
        if pending is None:
            return base
        return base[0] + pending[0], base[1] + pending[1], base[2] + pending[2]

    def _add(self, key: CounterKey, requests: int, tokens: int, cost: int) -> None:
        counts = self._pending.get(key)
        if counts is None:
            self._pending[key] = [requests, tokens, cost]
        else:
            counts[0] += requests
            counts[1] += tokens
            counts[2] += cost

    def _check(self, scope: Scope, now: float) -> None:
        limits = scope.limits
        minute, day, month = self._keys_of(scope.name)
        for period, budget, key in (("month", limits.spend_per_month_usd, month),
                                    ("day", limits.spend_per_day_usd, day)):
            if budget is not None and self._used(key)[2] >= budget * NANOS_PER_USD:
                wait = self._windows.end(period) - now
                raise RateLimited(
                    f"You exceeded your current quota: the spend limit of ${budget:g} per {period} of "
                    f"{_who(scope)} is reached. It resets in {reset_text(wait)}.", "insufficient_quota",
                    {"retry-after": str(math.ceil(wait)), **self._headers((scope,), now)})
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        if rpm is None and tpm is None:
            return
        requests, tokens, _ = self._used(minute)
        for kind, label, limit, used, over in (
            ("requests", "requests per min (RPM)", rpm, requests, rpm is not None and requests + 1 > rpm),
            ("tokens", "tokens per min (TPM)", tpm, tokens, tpm is not None and tokens >= tpm),
        ):
            if over:
                wait = self._minute[1] - now
                raise RateLimited(
                    f"Rate limit reached for {_who(scope)} on {label}: Limit {limit}, Used {used}, Requested 1. "
                    f"Please try again in {reset_text(wait)}.", kind,
                    {"retry-after": str(math.ceil(wait)), **self._headers((scope,), now)})

    def _headers(self, scopes: tuple[Scope, ...], now: float) -> dict[str, str]:
        """OpenAI's x-ratelimit-* trios, for the scope with the least left of each."""
        requests: tuple[int, int] | None = None  # (remaining, limit) of the tightest scope
        tokens: tuple[int, int] | None = None
        for scope in scopes:
            rpm, tpm = scope.limits.requests_per_minute, scope.limits.tokens_per_minute
            if rpm is None and tpm is None:
                continue
            used = self._used(self._keys_of(scope.name)[0])
            if rpm is not None:
                left = max(0, rpm - used[0])
                if requests is None or left < requests[0]:
                    requests = (left, rpm)
            if tpm is not None:
                left = max(0, tpm - used[1])
                if tokens is None or left < tokens[0]:
                    tokens = (left, tpm)
        if requests is None and tokens is None:
            return {}
        ms = int((self._minute[1] - now) * 1000)
        if ms != self._reset[0]:
            self._reset = (ms, reset_text(ms / 1000))
        reset = self._reset[1]
        headers: dict[str, str] = {}
        if requests is not None:
            headers["x-ratelimit-limit-requests"] = str(requests[1])
            headers["x-ratelimit-remaining-requests"] = str(requests[0])
            headers["x-ratelimit-reset-requests"] = reset
        if tokens is not None:
            headers["x-ratelimit-limit-tokens"] = str(tokens[1])
            headers["x-ratelimit-remaining-tokens"] = str(tokens[0])
            headers["x-ratelimit-reset-tokens"] = reset
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
        if not self._minute[0] <= now < self._minute[1]:
            self._roll(now)
        windows = self._windows
        self._inflight, self._pending = self._pending, {}
        self._base = _merged(self._totals, self._inflight)
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
            self._base = self._totals
            raise
        self._totals = self._base = totals
        self._inflight = {}


def _merged(totals: Mapping[CounterKey, Counts], adding: Mapping[CounterKey, list[int]]) -> dict[CounterKey, Counts]:
    merged = dict(totals)
    for key, (requests, tokens, cost) in adding.items():
        total = merged.get(key, _ZERO)
        merged[key] = (total[0] + requests, total[1] + tokens, total[2] + cost)
    return merged


def _who(scope: Scope) -> str:
    return scope.name.replace(":", " ", 1)
