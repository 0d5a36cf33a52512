"""Routing, as an aggregator does it: a public model served by several deployments, retries and fallbacks.

A `RoutedProvider` is a Provider over deployments (other configured models, each with its own provider, upstream
model name and key). A turn goes to the deployments in the route's order (`ordered`; `weighted` at random by
weight; `least_busy` by open turns; with cache affinity a request's prompt_cache_key, or else its instructions and
first input item, picks the same deployment every time so the upstream's prompt cache hits). A deployment that
fails to open the turn with a 429, a 5xx, a connect error or a timeout is asked again up to its `retries`
(waiting what its retry-after says, else a short exponential back-off), then cooled down for `cooldown_s` and
the next one is tried; once the cool-down is over the next request probes it again, alone: while that probe
runs, other requests go to the other deployments (a half-open circuit breaker). A turn is retried or moved
only until its first event: `open` waits for the deployment's first batch of events, so an upstream that
answers 200 and then drops the connection or stalls past its read timeout before sending anything counts as a
failure to open; once an event is returned, nothing a deployment streamed is ever mixed with another's. An error
that is the request's own (a 400) is never retried. A deployment with `max_concurrent` takes at most that many
open turns (per process). A deployment with `requests_per_minute` or `tokens_per_minute` takes at most that many
turns, or turns until that many tokens were used, in each UTC minute (per process; the windows of the project
and key limits, parley/rate_windows.py): a turn is counted when it is sent, its tokens when its usage arrives (a
turn cut before it, by a client that left or an upstream that dropped, by an estimate), so like those limits a
turn is never refused for tokens not used yet and the last turn of a minute may overshoot.
An upstream's 429 that says how long to wait (`retry-after-ms`, `retry-after`, or OpenAI's `x-ratelimit-reset-*`
read into them at the edge, providers/upstream_http.py) puts its deployment at its limit for that long instead of
the cool-down. A deployment at a limit is passed over; when every deployment is, the turn is refused with a 429
whose retry-after is when the first of them has room again. A model with `retries`, `max_concurrent` or a
per-minute limit and no route is a route of one.

Which deployment served is logged and kept for the response headers (`served_by`, `x-parley-deployment`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import hashlib
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

import orjson

from parley.errors import ParleyError, UpstreamError
from parley.providers.base import (
    ModelCall,
    ModelEvent,
    ModelStream,
    Provider,
    ReasoningDelta,
    TextDelta,
    TokenCount,
    ToolCallDelta,
    Usage,
)
from parley.providers.tokens import estimated_input
from parley.rate_windows import LONGEST_WAIT_S, minute_window, reset_text

log = logging.getLogger("parley.routing")

_RETRIED_STATUSES = frozenset({429, 502, 503, 504})
_BACKOFF_S = 0.25  # the first wait without a retry-after; doubled per attempt
_SERVED: ContextVar[str | None] = ContextVar("parley_served_by", default=None)


def served_by() -> str | None:
    """The deployment that opened the current request's last turn (None for a model that is not routed)."""
    return _SERVED.get()


def clear_served() -> None:
    """A new response starts: forget the deployment of an earlier one run in the same context (a server gives
    each request its own task and context, but an in-process ASGI client or a caller running several responses
    in one task does not)."""
    _SERVED.set(None)


def _transient(err: ParleyError) -> bool:
    """Worth asking the same deployment again: it is busy, down or slow, not refusing this request."""
    return err.status in _RETRIED_STATUSES and err.code != "upstream_auth_failed"


def _falls_over(err: ParleyError) -> bool:
    """Worth asking another deployment: transient, or this deployment's own credentials were refused."""
    return _transient(err) or err.code == "upstream_auth_failed"


def retry_after(headers: dict[str, str], now: Callable[[], float] = time.time) -> float | None:
    """Seconds the upstream asked to wait, as the openai SDK reads it: `retry-after-ms`, else `retry-after` in
    seconds or as an HTTP date; None when absent or unreadable."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        with contextlib.suppress(ValueError):
            if math.isfinite(float(millis)):  # `inf` or `nan` is no wait (a parked deployment for ever, a crash)
                return max(0.0, float(millis) / 1000)
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now())


@dataclass(slots=True)
class Load:
    """What one deployment is doing in this process, shared by every route (and the model itself) that uses it,
    so its limits and its cool-down hold across them."""

    open_turns: int = 0  # turns opened and not yet ended (least_busy, max_concurrent)
    cooled_until: float = 0.0  # monotonic clock
    failed: bool = False  # its last turn failed: once cooled down, one request at a time probes it
    probing: bool = False  # a probe is under way: other requests go elsewhere meanwhile
    minute: tuple[int, int] = (0, 0)  # the UTC minute `requests` and `tokens` count in (wall clock)
    requests: int = 0  # turns sent in that minute (requests_per_minute)
    tokens: int = 0  # tokens those turns used, from their usage (tokens_per_minute)
    limited_until: float = 0.0  # wall clock: its upstream answered 429 and said to wait until then

    def count_from(self, now: float) -> None:
        """Start counting afresh when `now` is past the minute counted so far."""
        if not self.minute[0] <= now < self.minute[1]:
            self.minute = minute_window(now)
            self.requests = self.tokens = 0


@dataclass(slots=True)
class Deployment:
    name: str  # the configured model id
    provider: Provider
    upstream_model: str
    retries: int = 0
    weight: float = 1.0
    max_concurrent: int | None = None  # open turns at once (per process); None: no limit
    load: Load = field(default_factory=Load)
    requests_per_minute: int | None = None  # turns sent per UTC minute (per process); None: no limit
    tokens_per_minute: int | None = None  # tokens used per UTC minute (per process); None: no limit

    @property
    def open_turns(self) -> int:
        return self.load.open_turns

    @open_turns.setter
    def open_turns(self, value: int) -> None:
        self.load.open_turns = value

    @property
    def cooled_until(self) -> float:
        return self.load.cooled_until

    @cooled_until.setter
    def cooled_until(self, value: float) -> None:
        self.load.cooled_until = value

    def at_limit(self, now: float) -> tuple[float, str] | None:
        """None when it can take a turn at `now` (wall clock); else about how many seconds until it can, and why.
        A turn may end at any moment, so a deployment at max_concurrent only is said to have room in a second."""
        load = self.load
        found: list[tuple[float, str]] = []
        if self.max_concurrent is not None and load.open_turns >= self.max_concurrent:
            found.append((1.0, f"max_concurrent {self.max_concurrent}"))
        if self.requests_per_minute is not None or self.tokens_per_minute is not None:
            load.count_from(now)
            rest = load.minute[1] - now
            if self.requests_per_minute is not None and load.requests >= self.requests_per_minute:
                found.append((rest, f"requests_per_minute {self.requests_per_minute}"))
            if self.tokens_per_minute is not None and load.tokens >= self.tokens_per_minute:
                found.append((rest, f"tokens_per_minute {self.tokens_per_minute}"))
        if load.limited_until > now:
            found.append((load.limited_until - now, "rate limited by its upstream"))
        return max(found) if found else None

    def sent(self, now: float) -> None:
        """A turn goes to this deployment: count it against its requests_per_minute."""
        if self.requests_per_minute is not None:
            self.load.count_from(now)
            self.load.requests += 1

    def used(self, now: float, usage: Usage) -> None:
        """A turn's usage arrived: count its tokens against its tokens_per_minute (input and output, as the
        project and key limits count them)."""
        self.load.count_from(now)
        self.load.tokens += usage.input_tokens + usage.output_tokens


class _CountedStream:
    """A deployment's stream, its first batch already read (by `open`), counted as an open turn until it ends or
    is closed."""

    def __init__(self, inner: ModelStream, events: AsyncIterator[list[ModelEvent]],
                 first: list[ModelEvent] | None, deployment: Deployment, wall: Callable[[], float],
                 call: ModelCall) -> None:
        self._inner = inner
        self._events = events
        self._first = first  # None: the stream ended before any batch
        self._deployment: Deployment | None = deployment
        # Only a deployment with a tokens_per_minute looks at the batches (for their usage).
        self._metered = deployment if deployment.tokens_per_minute is not None else None
        self._wall = wall
        self._call = call
        self._usage_seen = False
        self._deltas = 0  # output deltas seen, for a turn cut before its usage

    def _meter(self, batch: list[ModelEvent]) -> None:
        assert self._metered is not None
        for event in batch:
            if isinstance(event, Usage):
                self._usage_seen = True
                self._metered.used(self._wall(), event)
            elif isinstance(event, TextDelta | ReasoningDelta | ToolCallDelta):
                self._deltas += 1

    def _done(self) -> None:
        if self._deployment is not None:
            self._deployment.open_turns -= 1
            if self._metered is not None and not self._usage_seen:
                # Cut before its usage (the client left, the upstream dropped): the upstream still read the
                # input, so count the estimate providers make for an upstream that reports none.
                self._metered.used(self._wall(), Usage(input_tokens=estimated_input(self._call),
                                                       output_tokens=self._deltas))
            self._deployment = None

    async def _iterate(self) -> AsyncIterator[list[ModelEvent]]:
        try:
            if self._first is None:
                return
            if self._metered is not None:
                self._meter(self._first)
            yield self._first
            async for batch in self._events:
                if self._metered is not None:
                    self._meter(batch)
                yield batch
        finally:
            self._done()

    def __aiter__(self) -> AsyncIterator[list[ModelEvent]]:
        return self._iterate()

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._done()


def affinity_key(call: ModelCall) -> bytes | None:
    """What makes two calls share an upstream prompt cache: the prompt_cache_key, else the prefix every turn of
    a conversation starts with (instructions and first input item)."""
    if call.prompt_cache_key:
        return call.prompt_cache_key.encode()
    if not call.items and not call.instructions:
        return None
    first = call.items[0] if call.items else None
    return orjson.dumps([call.instructions, first], option=orjson.OPT_SORT_KEYS)


class RoutedProvider:
    def __init__(self, model_id: str, deployments: Sequence[Deployment], *, strategy: str = "ordered",
                 cooldown_s: float = 30.0, retry_max_wait_s: float = 10.0, cache_affinity: bool = False,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 rng: random.Random | None = None, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.model_id = model_id
        self.deployments = list(deployments)
        self._strategy = strategy
        self._cooldown_s = cooldown_s
        self._max_wait_s = retry_max_wait_s
        self._affinity = cache_affinity
        self._clock = clock  # cool-downs
        self.wall = wall  # per-minute windows and upstream rate limits (a retry-after may be a date); tests set it
        self._rng = rng or random.Random()
        self._sleep = sleep

    def order(self, call: ModelCall) -> list[Deployment]:
        """The deployments to try, best first: healthy ones by the strategy, then cooled-down ones and ones being
        probed (soonest back first), so a route whose every deployment failed lately still tries rather than
        refusing."""
        now, wall = self._clock(), self.wall()
        open_ = [d for d in self.deployments if d.at_limit(wall) is None]
        healthy = [d for d in open_ if d.cooled_until <= now and not d.load.probing]
        cooled = sorted((d for d in open_ if d.cooled_until > now or d.load.probing), key=lambda d: d.cooled_until)
        key = affinity_key(call) if self._affinity and len(healthy) > 1 else None
        if self._strategy == "weighted":
            healthy = self._weighted(healthy, key)
        elif self._strategy == "least_busy":
            if key is not None:  # the cache's deployment unless it is busier than the least busy by more than one
                preferred = healthy[_pick(key, [d.name for d in healthy], [1.0] * len(healthy))]
                least = min(d.open_turns for d in healthy)
                healthy.sort(key=lambda d: d.open_turns)
                if preferred.open_turns <= least + 1:
                    healthy.remove(preferred)
                    healthy.insert(0, preferred)
            else:
                healthy.sort(key=lambda d: d.open_turns)
        return healthy + cooled

    def _weighted(self, healthy: list[Deployment], key: bytes | None) -> list[Deployment]:
        ordered: list[Deployment] = []
        left = list(healthy)
        while left:
            weights = [d.weight for d in left]
            index = (_pick(key, [d.name for d in left], weights) if key is not None and not ordered
                     else self._rng.choices(range(len(left)), weights)[0])
            ordered.append(left.pop(index))
        return ordered

    async def open(self, call: ModelCall) -> ModelStream:
        last: ParleyError | None = None
        for deployment in self.order(call):
            load = deployment.load
            probe = load.failed and not load.probing  # the first request after a failure: the others wait for it
            if probe:
                load.probing = True
            try:
                opened = await self._try(deployment, call)
            finally:
                if probe:
                    load.probing = False
            if isinstance(opened, ParleyError):
                last = opened
                continue
            if opened is not None:
                return opened
        if last is None:  # no deployment had room
            raise self._no_room()
        raise last

    def _no_room(self) -> UpstreamError:
        """The 429 for a turn no deployment had room for, saying when the first of them will have."""
        wall = self.wall()
        limits = [(d, d.at_limit(wall)) for d in self.deployments]
        wait, soonest = min((found for _, found in limits if found is not None), default=(1.0, ""))
        why = ", ".join(f"{d.name}: {found[1]}" for d, found in limits if found is not None)
        # OpenAI's `type` says which limit: `tokens` when the first deployment to have room waits for tokens.
        kind = "tokens" if soonest.startswith("tokens_per_minute") else "requests"
        return UpstreamError(f"Every deployment of model '{self.model_id}' is at a limit ({why}); try again in "
                             f"{reset_text(wait)}.", "model", "rate_limit_exceeded", 429, kind,
                             {"retry-after": str(max(1, math.ceil(wait)))})

    async def _try(self, deployment: Deployment, call: ModelCall) -> ModelStream | ParleyError | None:
        """One deployment's attempts at the turn: its stream, the error that moves the turn on (the deployment
        cooled down), or None when it had no room; an error that is the request's own is raised."""
        attempt = 0
        turn = dataclasses.replace(call, upstream_model=deployment.upstream_model)
        while True:
            wall = self.wall()
            if deployment.at_limit(wall) is not None:  # reached while an earlier deployment (or try) was under way
                return None
            deployment.open_turns += 1
            deployment.sent(wall)
            try:
                stream, events, first = await _first_batch(deployment.provider, turn)
            except ParleyError as err:
                deployment.open_turns -= 1
                if not _falls_over(err):
                    raise
                told = retry_after(err.headers, self.wall)
                wait = told if told is not None else _BACKOFF_S * (2 ** attempt) * (0.5 + self._rng.random())
                if _transient(err) and attempt < deployment.retries and wait <= self._max_wait_s:
                    log.warning("model %s: deployment %s failed (%s, HTTP %s); retry %d of %d in %.2f s",
                                self.model_id, deployment.name, err.code, err.status, attempt + 1,
                                deployment.retries, wait)
                    await self._sleep(wait)
                    attempt += 1
                    continue
                if err.status == 429 and told is not None:  # the upstream said when it has room again
                    told = min(told, LONGEST_WAIT_S)  # a day at most, whatever a broken upstream says
                    deployment.load.limited_until = self.wall() + told
                    log.warning("model %s: deployment %s is rate limited by its upstream (HTTP 429); passed over "
                                "for %.3g s", self.model_id, deployment.name, told)
                    return err
                cooldown = max(self._cooldown_s, told or 0.0)  # a 5xx saying when it is back
                deployment.cooled_until = self._clock() + cooldown
                deployment.load.failed = True
                log.warning("model %s: deployment %s failed (%s, HTTP %s); cooled down for %g s",
                            self.model_id, deployment.name, err.code, err.status, cooldown)
                return err
            except BaseException:
                deployment.open_turns -= 1
                raise
            deployment.cooled_until = 0.0
            deployment.load.failed = False
            _SERVED.set(deployment.name)
            if len(self.deployments) > 1 or attempt:
                log.info("model %s served by deployment %s", self.model_id, deployment.name)
            return _CountedStream(stream, events, first, deployment, self.wall, turn)

    async def count_tokens(self, call: ModelCall) -> TokenCount:
        """The first deployment's count (counting is not a turn: it does not count against a limit)."""
        first = next(iter(self.order(call)), self.deployments[0])
        return await first.provider.count_tokens(dataclasses.replace(call, upstream_model=first.upstream_model))


async def _first_batch(provider: Provider, call: ModelCall
                       ) -> tuple[ModelStream, AsyncIterator[list[ModelEvent]], list[ModelEvent] | None]:
    """Open the call and read its first batch of events: until then nothing of this turn reached the client, so
    a drop or a read timeout here may still go to another deployment."""
    stream = await provider.open(call)
    events = stream.__aiter__()
    try:
        first: list[ModelEvent] | None = await events.__anext__()
    except StopAsyncIteration:
        first = None
    except BaseException:
        await stream.aclose()
        raise
    return stream, events, first


def _pick(key: bytes, names: Sequence[str], weights: Sequence[float]) -> int:
    """Weighted rendezvous hashing: the same key picks the same deployment while it is healthy, and a deployment
    that leaves (cooled down) moves only the keys that picked it."""
    best, best_score = 0, -1.0
    for index, (name, weight) in enumerate(zip(names, weights, strict=True)):
        digest = hashlib.blake2b(key + b"\0" + name.encode(), digest_size=8).digest()
        unit = (int.from_bytes(digest, "big") + 1) / 2 ** 64
        score = unit ** (1.0 / weight)
        if score > best_score:
            best, best_score = index, score
    return best
