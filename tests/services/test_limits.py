"""The limiter without a database: fixed windows, 429s in OpenAI's shape, headers, and two processes sharing
counts through one counter store (an in-memory stand-in for store/sql_limits.py)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from parley.config import LimitsConfig, RateLimits
from parley.errors import RateLimited
from parley.services.limits import NANOS_PER_USD, CounterKey, Counts, Limiter, Windows, reset_text


class SharedCounters:
    """What rate_counters does: add deltas, return every scope's totals in the current windows."""

    def __init__(self) -> None:
        self.rows: dict[CounterKey, Counts] = {}
        self.syncs = 0

    async def sync_rate_counters(self, deltas: Mapping[CounterKey, Counts], windows: Mapping[str, int],
                                 prune_before: Mapping[str, int] | None = None) -> dict[CounterKey, Counts]:
        self.syncs += 1
        for key, (r, t, c) in deltas.items():
            old = self.rows.get(key, (0, 0, 0))
            self.rows[key] = (old[0] + r, old[1] + t, old[2] + c)
        return {key: counts for key, counts in self.rows.items() if windows.get(key[1]) == key[2]}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


T0 = 1_796_000_000.0 - 1_796_000_000 % 86400 + 30  # 30 s into a UTC day (and minute)


def limiter(store: SharedCounters, clock: Clock, **default: float) -> Limiter:
    return Limiter(store, LimitsConfig(default=RateLimits(**default)), clock)


def test_windows_are_utc_minutes_days_and_months() -> None:
    w = Windows.at(1_798_761_599.5)  # 2026-12-31 23:59:59.5 UTC
    assert w.bounds["minute"] == (1_798_761_540, 1_798_761_600)
    assert w.bounds["day"] == (1_798_675_200, 1_798_761_600)
    assert w.bounds["month"] == (1_796_083_200, 1_798_761_600)  # December 2026 -> 1 January 2027


def test_reset_text_is_openai_style() -> None:
    assert [reset_text(s) for s in (0.02, 1.0, 12.5, 60.0, 361.0)] == ["20ms", "1s", "12.5s", "1m0s", "6m1s"]


async def test_requests_per_minute_then_429_until_the_window_ends() -> None:
    clock = Clock(T0)
    lim = limiter(SharedCounters(), clock, requests_per_minute=2)
    scopes = lim.scopes("p", None, None)
    first = lim.admit(scopes)
    assert first.headers == {"x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "1",
                             "x-ratelimit-reset-requests": "30s"}
    lim.admit(scopes)
    with pytest.raises(RateLimited) as refused:
        lim.admit(scopes)
    err = refused.value
    assert (err.status, err.type, err.code) == (429, "requests", "rate_limit_exceeded")
    assert err.headers["retry-after"] == "30" and err.headers["x-ratelimit-remaining-requests"] == "0"
    assert "Limit 2, Used 2, Requested 1" in err.message
    clock.now += 30  # the next minute
    assert lim.admit(scopes).headers["x-ratelimit-remaining-requests"] == "1"


async def test_tokens_per_minute_counts_what_responses_used() -> None:
    clock = Clock(T0)
    lim = limiter(SharedCounters(), clock, tokens_per_minute=100)
    scopes = lim.scopes("p", None, None)
    assert lim.admit(scopes).headers["x-ratelimit-remaining-tokens"] == "100"
    lim.charge(scopes, tokens=99, cost=0)
    assert lim.admit(scopes).headers["x-ratelimit-remaining-tokens"] == "1"  # under the limit: admitted
    lim.charge(scopes, tokens=5, cost=0)  # one response may overshoot
    with pytest.raises(RateLimited) as refused:
        lim.admit(scopes)
    assert refused.value.type == "tokens" and refused.value.headers["x-ratelimit-remaining-tokens"] == "0"


async def test_spend_per_day_is_insufficient_quota_until_midnight() -> None:
    clock = Clock(T0)
    lim = limiter(SharedCounters(), clock, spend_per_day_usd=0.5)
    scopes = lim.scopes("p", None, None)
    assert lim.admit(scopes).headers == {}  # no per-minute limit: no x-ratelimit headers
    lim.charge(scopes, tokens=10, cost=NANOS_PER_USD // 2)
    with pytest.raises(RateLimited) as refused:
        lim.admit(scopes)
    err = refused.value
    assert (err.type, err.code) == ("insufficient_quota", "insufficient_quota")
    assert int(err.headers["retry-after"]) == 86400 - 30
    clock.now += 86400
    lim.admit(scopes)


async def test_key_and_project_limits_both_apply_and_headers_show_the_tightest() -> None:
    store = SharedCounters()
    lim = Limiter(store, LimitsConfig(projects={"p": RateLimits(requests_per_minute=10)}), Clock(T0))
    assert lim.scopes("other", "key_1", None) == ()  # nothing limits another project without key limits
    scopes = lim.scopes("p", "key_1", RateLimits(requests_per_minute=3, tokens_per_minute=50))
    assert [s.name for s in scopes] == ["project:p", "key:key_1"]
    headers = lim.admit(scopes).headers
    assert headers["x-ratelimit-limit-requests"] == "3" and headers["x-ratelimit-remaining-requests"] == "2"
    assert headers["x-ratelimit-limit-tokens"] == "50"
    lim.admit(scopes)
    lim.admit(scopes)
    with pytest.raises(RateLimited) as refused:
        lim.admit(scopes)
    assert "key key_1" in refused.value.message
    # The project's other keys are still under the project's own limit.
    assert lim.admit(lim.scopes("p", "key_2", None)).headers["x-ratelimit-remaining-requests"] == "6"


async def test_two_processes_share_counts_through_the_store() -> None:
    store, clock = SharedCounters(), Clock(T0)
    a, b = limiter(store, clock, requests_per_minute=4), limiter(store, clock, requests_per_minute=4)
    scopes = a.scopes("p", None, None)
    for _ in range(3):
        a.admit(scopes)
    await a.sync()
    await b.sync()  # b reads a's three requests back
    b.admit(scopes)
    with pytest.raises(RateLimited):
        b.admit(scopes)
    await b.sync()
    await a.sync()
    with pytest.raises(RateLimited):
        a.admit(scopes)


async def test_a_failed_sync_keeps_its_counts_for_the_next() -> None:
    class Broken(SharedCounters):
        fail = True

        async def sync_rate_counters(self, deltas: Mapping[CounterKey, Counts], windows: Mapping[str, int],
                                     prune_before: Mapping[str, int] | None = None) -> dict[CounterKey, Counts]:
            if self.fail:
                raise OSError("database away")
            return await super().sync_rate_counters(deltas, windows, prune_before)

    store, clock = Broken(), Clock(T0)
    lim = limiter(store, clock, requests_per_minute=5)
    scopes = lim.scopes("p", None, None)
    lim.admit(scopes)
    lim.admit(scopes)
    with pytest.raises(OSError):
        await lim.sync()
    assert lim.admit(scopes).headers["x-ratelimit-remaining-requests"] == "2"  # nothing lost meanwhile
    store.fail = False
    await lim.sync()
    assert store.rows[("project:p", "minute", int(T0) - 30)] == (3, 0, 0)


async def test_nothing_to_sync_without_limits() -> None:
    store = SharedCounters()
    lim = Limiter(store, LimitsConfig(), Clock(T0))
    assert lim.admit(lim.scopes("p", "key_1", None)).headers == {}
    await lim.sync()
    assert store.syncs == 0
