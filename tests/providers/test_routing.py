"""RoutedProvider on scripted deployments (a fake clock, no sleeping): orders by strategy, cache affinity, retries
honouring retry-after, fallbacks, cool-downs and the probe after them, what is never retried, and the per-minute
limits of a deployment (requests, tokens from usage, an upstream's 429)."""

from __future__ import annotations

import asyncio
import email.utils
import random
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from parley.errors import InvalidRequest, UpstreamError
from parley.providers.base import ModelCall, ModelEvent, ModelStream, TokenCount, Usage
from parley.providers.redact import SecretMasker
from parley.providers.routing import Deployment, RoutedProvider, retry_after, served_by
from parley.providers.upstream_http import status_error
from parley.rate_windows import reset_seconds


class Stream:
    """One batch; `fail_at` 0 raises instead of the first batch, 1 after it."""

    def __init__(self, name: str, fail_at: int | None = None, usage: Usage | None = None) -> None:
        self.name = name
        self.fail_at = fail_at
        self.usage = usage
        self.closed = False

    async def _events(self) -> AsyncIterator[list[ModelEvent]]:
        if self.fail_at == 0:
            raise UpstreamError.timeout("no first event")
        yield []
        if self.usage is not None:
            yield [self.usage]
        if self.fail_at == 1:
            raise UpstreamError.bad_gateway("dropped")

    def __aiter__(self) -> AsyncIterator[list[ModelEvent]]:
        return self._events()

    async def aclose(self) -> None:
        self.closed = True


class Scripted:
    """A deployment's provider: raises the scripted errors in turn, then opens streams; records the calls."""

    def __init__(self, name: str, *errors: Exception, fail_at: int | None = None, usage: Usage | None = None) -> None:
        self.name = name
        self.errors = list(errors)
        self.calls: list[str] = []
        self.fail_at = fail_at
        self.usage = usage
        self.streams: list[Stream] = []
        self.counted = 0  # count_tokens calls

    async def open(self, call: ModelCall) -> ModelStream:
        self.calls.append(call.upstream_model)
        if self.errors:
            raise self.errors.pop(0)
        self.streams.append(Stream(self.name, self.fail_at, self.usage))
        return self.streams[-1]

    async def count_tokens(self, call: ModelCall) -> TokenCount:
        self.counted += 1
        return TokenCount(len(call.items), exact=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def route(*providers: Scripted, retries: int = 0, clock: Clock | None = None, **options: object) -> RoutedProvider:
    clock = clock or Clock()
    deployments = [Deployment(p.name, p, f"up-{p.name}", retries) for p in providers]
    return RoutedProvider("public", deployments, clock=clock, wall=clock, sleep=clock.sleep, rng=random.Random(7),
                          **options)  # type: ignore[arg-type]


def call(key: str | None = None, first: str = "hello") -> ModelCall:
    return ModelCall(upstream_model="public", items=[{"type": "message", "role": "user", "content": first}],
                     prompt_cache_key=key)


def busy(retry_after: str | None = None) -> UpstreamError:
    return UpstreamError.rate_limited("busy", retry_after)


async def test_retries_honour_retry_after_then_fall_over_and_cool_down() -> None:
    clock = Clock()
    a = Scripted("a", busy("2"), UpstreamError.bad_gateway("down"), UpstreamError.timeout("slow"))
    b = Scripted("b")
    routed = route(a, b, retries=2, clock=clock, cooldown_s=30.0)
    stream = await routed.open(call())
    assert stream.__class__.__name__ == "_CountedStream" and served_by() == "b"
    assert a.calls == ["up-a"] * 3 and b.calls == ["up-b"]  # each deployment gets its own upstream model name
    assert clock.slept[0] == 2.0 and 0.25 * 0.5 <= clock.slept[1] <= 0.5 * 1.5  # retry-after, then back-off
    # Cooled down: the next turns go straight to b ...
    await routed.open(call())
    assert len(a.calls) == 3
    # ... until the cool-down is over: then a is probed again (and, healthy, serves).
    clock.now += 31
    await routed.open(call())
    assert len(a.calls) == 4 and served_by() == "a"


async def test_a_retry_after_beyond_the_limit_is_not_waited_for() -> None:
    clock = Clock()
    a, b = Scripted("a", busy("60")), Scripted("b")
    await route(a, b, retries=3, clock=clock, retry_max_wait_s=10.0).open(call())
    assert clock.slept == [] and len(a.calls) == 1 and served_by() == "b"


async def test_refused_credentials_fall_over_without_a_retry() -> None:
    a = Scripted("a", UpstreamError.bad_gateway("no", code="upstream_auth_failed"))
    b = Scripted("b")
    await route(a, b, retries=3).open(call())
    assert len(a.calls) == 1 and served_by() == "b"


async def test_the_requests_own_errors_are_never_retried() -> None:
    a = Scripted("a", UpstreamError.rejected("bad input", "input"), InvalidRequest("bad", param="tools"))
    b = Scripted("b")
    routed = route(a, b, retries=3)
    for _ in range(2):
        with pytest.raises((UpstreamError, InvalidRequest)):
            await routed.open(call())
    assert len(a.calls) == 2 and b.calls == []


async def test_when_every_deployment_fails_the_last_error_is_raised() -> None:
    a, b = Scripted("a", UpstreamError.bad_gateway("a down")), Scripted("b", UpstreamError.timeout("b slow"))
    routed = route(a, b)
    with pytest.raises(UpstreamError) as info:
        await routed.open(call())
    assert info.value.status == 504
    # Both cooled down: they are still tried (soonest back first) rather than refusing outright.
    assert [d.name for d in routed.order(call())] == ["a", "b"]
    assert (await routed.open(call())) is not None and served_by() == "a"


async def test_weighted_follows_the_weights() -> None:
    a, b = Scripted("a"), Scripted("b")
    routed = RoutedProvider("public", [Deployment("a", a, "x", weight=3.0), Deployment("b", b, "x", weight=1.0)],
                            strategy="weighted", rng=random.Random(3))
    firsts = Counter(routed.order(call())[0].name for _ in range(4000))
    assert 0.7 < firsts["a"] / 4000 < 0.8  # 3:1, a fixed seed


async def test_cache_affinity_keeps_a_key_on_one_deployment() -> None:
    providers = [Scripted(name) for name in "abcd"]
    routed = RoutedProvider("public", [Deployment(p.name, p, "x") for p in providers], strategy="weighted",
                            cache_affinity=True, rng=random.Random(5))
    for key in ("user-1", "user-2", "user-3"):
        assert len({routed.order(call(key))[0].name for _ in range(50)}) == 1
    # Without a prompt_cache_key the conversation's first item is the key: turns of one conversation agree.
    assert len({routed.order(call(first="same start"))[0].name for _ in range(50)}) == 1
    chosen = {routed.order(call(f"user-{n}"))[0].name for n in range(200)}
    assert chosen == set("abcd")  # and keys spread over every deployment
    # A cooled-down deployment moves only its own keys.
    before = {n: routed.order(call(f"user-{n}"))[0].name for n in range(200)}
    routed.deployments[0].cooled_until = float("inf")
    after = {n: routed.order(call(f"user-{n}"))[0].name for n in range(200)}
    assert all(after[n] == before[n] for n in range(200) if before[n] != "a")
    assert all(after[n] != "a" for n in range(200))


async def test_least_busy_counts_open_turns() -> None:
    a, b = Scripted("a"), Scripted("b")
    routed = RoutedProvider("public", [Deployment("a", a, "x"), Deployment("b", b, "x")], strategy="least_busy")
    first = await routed.open(call())
    assert served_by() == "a"
    second = await routed.open(call())
    assert served_by() == "b"  # a has one open turn
    async for _ in first:
        pass  # a's turn ended
    await second.aclose()
    assert [d.open_turns for d in routed.deployments] == [0, 0]


async def test_a_stream_failing_before_its_first_batch_falls_over_and_after_it_does_not() -> None:
    early, b = Scripted("early", fail_at=0), Scripted("b")
    routed = route(early, b)
    stream = await routed.open(call())
    assert served_by() == "b" and early.streams[0].closed  # the failed stream was released
    assert [batch async for batch in stream] == [[]]
    late = Scripted("late", fail_at=1)
    routed = route(late, Scripted("c"))
    stream = await routed.open(call())
    assert served_by() == "late"
    with pytest.raises(UpstreamError, match="dropped"):
        async for _ in stream:
            pass
    assert routed.deployments[0].open_turns == 0 and routed.deployments[1].provider.calls == []  # type: ignore[attr-defined]


async def test_max_concurrent_passes_a_full_deployment_over_and_refuses_when_all_are_full() -> None:
    a, b = Scripted("a"), Scripted("b")
    deployments = [Deployment("a", a, "x", max_concurrent=1), Deployment("b", b, "x", max_concurrent=1)]
    routed = RoutedProvider("public", deployments)
    held = await routed.open(call())
    assert served_by() == "a"
    other = await routed.open(call())
    assert served_by() == "b"
    with pytest.raises(UpstreamError) as info:
        await routed.open(call())
    assert info.value.status == 429 and "max_concurrent" in info.value.message and len(a.calls) == 1
    await held.aclose()
    await routed.open(call())
    assert served_by() == "a"
    await other.aclose()
    # A deployment's Load is shared: another route over the same deployment sees it full.
    shared = RoutedProvider("other", [Deployment("a", a, "y", max_concurrent=1, load=deployments[0].load)])
    with pytest.raises(UpstreamError):
        await shared.open(call())


def test_retry_after_is_read_as_the_openai_sdk_reads_it() -> None:
    assert retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5  # the precise one first
    assert retry_after({"retry-after": "2.5"}) == 2.5
    date = "Wed, 21 Oct 2026 07:28:10 GMT"
    then = email.utils.parsedate_to_datetime(date).timestamp()
    assert retry_after({"retry-after": date}, now=lambda: then - 4) == 4.0
    assert retry_after({"retry-after": date}, now=lambda: then + 60) == 0.0  # already past
    assert retry_after({"retry-after": "soon"}) is None and retry_after({}) is None
    assert retry_after({"retry-after-ms": "x", "retry-after": "3"}) == 3.0


def test_upstream_wait_hints_are_kept_on_429_and_5xx() -> None:
    hints = {"retry-after": "3", "retry-after-ms": "2500", "x-other": "no"}
    limited = status_error("m", 429, b'{"error": {"message": "slow down"}}', hints, SecretMasker())
    assert limited.status == 429 and limited.headers == {"retry-after": "3", "retry-after-ms": "2500"}
    down = status_error("m", 503, b"", {"retry-after": "5"}, SecretMasker())
    assert down.status == 502 and down.headers == {"retry-after": "5"}
    rejected = status_error("m", 400, b"", {"retry-after": "5"}, SecretMasker())
    assert rejected.headers == {}


async def test_a_retry_waits_what_retry_after_ms_says() -> None:
    clock = Clock()
    limited = UpstreamError.rate_limited("busy", "30")
    limited.headers["retry-after-ms"] = "250"
    a = Scripted("a", limited)
    await route(a, retries=1, clock=clock, retry_max_wait_s=10.0).open(call())
    assert clock.slept == [0.25] and len(a.calls) == 2 and served_by() == "a"


class Held(Scripted):
    """A deployment whose next open waits until released (a probe under way)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

        self.piled = 0  # opens that came while one was held (they are not held: the test must not hang)

    async def open(self, call: ModelCall) -> ModelStream:
        if self.entered.is_set() and not self.release.is_set():
            self.piled += 1
            return await super().open(call)
        self.entered.set()
        await self.release.wait()
        return await super().open(call)


async def test_after_a_cool_down_one_request_probes_while_the_others_go_elsewhere() -> None:
    clock = Clock()
    a, b = Held("a"), Scripted("b")
    a.release.set()
    a.errors.append(UpstreamError.bad_gateway("down"))
    routed = route(a, b, clock=clock, cooldown_s=30.0)
    await routed.open(call())  # a fails and is cooled down; b serves
    assert served_by() == "b"
    clock.now += 31
    a.release.clear()
    a.entered.clear()
    probe = asyncio.create_task(routed.open(call()))
    await a.entered.wait()  # the probe is waiting on a
    await routed.open(call())
    assert served_by() == "b" and a.piled == 0 and len(a.calls) == 1  # no second request piles onto the probe
    a.release.set()
    await probe
    assert len(a.calls) == 2 and not routed.deployments[0].load.failed
    await routed.open(call())
    assert served_by() == "a"  # the probe succeeded: a is back in the order


MINUTE = 1_798_761_540.0  # a UTC minute's first second (2026-12-31 23:59:00)


def limited(*providers: Scripted, clock: Clock, rpm: list[int | None] | None = None,
            tpm: list[int | None] | None = None, **options: object) -> RoutedProvider:
    """A route over `providers` with per-minute limits, reading `clock` for cool-downs and windows alike."""
    deployments = [Deployment(p.name, p, "x", requests_per_minute=(rpm or [None] * len(providers))[i],
                              tokens_per_minute=(tpm or [None] * len(providers))[i]) for i, p in enumerate(providers)]
    return RoutedProvider("public", deployments, clock=clock, wall=clock, sleep=clock.sleep, rng=random.Random(7),
                          **options)  # type: ignore[arg-type]


async def test_requests_per_minute_passes_a_spent_deployment_over_then_429_until_the_minute_ends() -> None:
    clock = Clock()
    clock.now = MINUTE + 10
    a, b = Scripted("a"), Scripted("b")
    routed = limited(a, b, clock=clock, rpm=[2, 1])
    served = []
    for _ in range(3):
        await routed.open(call())
        served.append(served_by())
    assert served == ["a", "a", "b"]  # a's two turns of this minute are spent: b serves the third
    clock.now = MINUTE + 20.5
    with pytest.raises(UpstreamError) as info:
        await routed.open(call())
    err = info.value
    assert (err.status, err.code, err.headers) == (429, "rate_limit_exceeded", {"retry-after": "40"})
    assert "a: requests_per_minute 2" in err.message and "b: requests_per_minute 1" in err.message
    assert "try again in 39.5s" in err.message and len(a.calls) == 2 and len(b.calls) == 1
    clock.now = MINUTE + 60  # the next minute: both have room again, a first
    await routed.open(call())
    assert served_by() == "a" and len(a.calls) == 3


async def test_tokens_per_minute_counts_each_turns_usage_when_it_arrives() -> None:
    clock = Clock()
    clock.now = MINUTE + 5
    a, b = Scripted("a", usage=Usage(input_tokens=70, output_tokens=40)), Scripted("b")
    routed = limited(a, b, clock=clock, tpm=[200, None])
    first = await routed.open(call())
    # Its usage has not arrived yet: a turn is never refused for tokens it has not used (as project limits).
    second = await routed.open(call())
    assert served_by() == "a" and routed.deployments[0].load.tokens == 0
    for stream in (first, second):
        assert [batch async for batch in stream][-1] == [Usage(70, 40)]
    assert routed.deployments[0].load.tokens == 220  # input and output of both turns
    await routed.open(call())
    assert served_by() == "b"  # 220 >= 200: a is passed over for the rest of the minute
    clock.now = MINUTE + 61
    await routed.open(call())
    assert served_by() == "a"


async def test_the_429_says_when_the_first_deployment_has_room_again() -> None:
    clock = Clock()
    clock.now = MINUTE + 1
    a, b = Scripted("a", usage=Usage(10, 10)), Scripted("b", busy("7"))
    routed = limited(a, b, clock=clock, tpm=[5, None], retry_max_wait_s=1.0)
    async for _ in await routed.open(call()):
        pass
    # b answers 429 with retry-after 7: it is passed over for 7 s (not the route's cool-down) ...
    with pytest.raises(UpstreamError) as info:
        await routed.open(call())
    assert info.value.status == 429 and len(b.calls) == 1 and not routed.deployments[1].load.failed
    # ... and a has spent its tokens for 59 s: the route is full, and b is back first.
    with pytest.raises(UpstreamError) as info:
        await routed.open(call())
    assert info.value.headers == {"retry-after": "7"} and len(b.calls) == 1
    assert "a: tokens_per_minute 5" in info.value.message and "b: rate limited by its upstream" in info.value.message
    clock.now += 7
    await routed.open(call())
    assert served_by() == "b" and len(b.calls) == 2


async def test_an_upstream_429_without_a_wait_is_cooled_down_and_a_5xx_wait_lengthens_the_cool_down() -> None:
    clock = Clock()
    a, b = Scripted("a", busy(None)), Scripted("b")
    routed = limited(a, b, clock=clock, cooldown_s=30.0)
    await routed.open(call())
    assert served_by() == "b" and routed.deployments[0].load.failed  # the usual cool-down and probe
    assert routed.deployments[0].cooled_until == clock.now + 30
    down = UpstreamError.bad_gateway("down")
    down.headers["retry-after"] = "90"
    c, d = Scripted("c", down), Scripted("d")
    routed = limited(c, d, clock=clock, cooldown_s=30.0)
    await routed.open(call())
    assert routed.deployments[0].cooled_until == clock.now + 90


async def test_retries_count_against_requests_per_minute() -> None:
    clock = Clock()
    clock.now = MINUTE
    a = Scripted("a", UpstreamError.bad_gateway("down"), UpstreamError.bad_gateway("down"))
    b = Scripted("b")
    deployments = [Deployment("a", a, "x", retries=3, requests_per_minute=2), Deployment("b", b, "x")]
    routed = RoutedProvider("public", deployments, clock=clock, wall=clock, sleep=clock.sleep, rng=random.Random(1))
    await routed.open(call())
    # Both of a's sends this minute failed; a third would exceed its limit, so b serves without it.
    assert len(a.calls) == 2 and served_by() == "b"


async def test_a_deployments_minute_is_shared_by_every_route_over_it() -> None:
    clock = Clock()
    clock.now = MINUTE
    a = Scripted("a")
    first = RoutedProvider("one", [Deployment("a", a, "x", requests_per_minute=1)], clock=clock, wall=clock)
    other = RoutedProvider("two", [Deployment("a", a, "y", requests_per_minute=1, load=first.deployments[0].load)],
                           clock=clock, wall=clock)
    await first.open(call())
    with pytest.raises(UpstreamError) as info:
        await other.open(call())
    assert info.value.status == 429 and len(a.calls) == 1
    counted = await other.count_tokens(call())  # counting is not a turn: it still asks a deployment, full or not
    assert counted.exact and a.counted == 1 and len(a.calls) == 1


def test_openai_rate_limit_headers_become_the_wait_of_a_429_without_retry_after() -> None:
    spent = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s",
             "x-ratelimit-remaining-tokens": "900", "x-ratelimit-reset-tokens": "6m0s"}
    err = status_error("m", 429, b'{"error": {"message": "slow down"}}', spent, SecretMasker())
    assert err.headers == {"retry-after-ms": "1500", "retry-after": "2"}  # the spent limit's reset, not the later
    assert retry_after(err.headers) == 1.5
    unknown = {"x-ratelimit-reset-requests": "20ms", "x-ratelimit-reset-tokens": "1m30s"}  # none says which
    assert status_error("m", 429, b"", unknown, SecretMasker()).headers["retry-after"] == "90"
    told = status_error("m", 429, b"", {**spent, "retry-after": "4"}, SecretMasker())
    assert told.headers == {"retry-after": "4"}  # the upstream's own retry-after wins
    assert status_error("m", 429, b"", {"x-ratelimit-reset-requests": "soon"}, SecretMasker()).headers == {}
    assert status_error("m", 503, b"", spent, SecretMasker()).headers == {}


def test_reset_durations_read_back_as_openai_writes_them() -> None:
    assert [reset_seconds(t) for t in ("20ms", "1s", "12.5s", "6m0s", "1h2m3s", "6m1.5s")] == [
        0.02, 1.0, 12.5, 360.0, 3723.0, 361.5]
    assert [reset_seconds(t) for t in ("", "12", "1x", "s", "1s junk")] == [None] * 5
