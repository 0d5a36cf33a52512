"""Usage and cost of each response: its usage record (tokens, built-in tool calls, cost, timings), and the
charge of its tokens and cost to the caller's limits.

Cost comes from the model's price in the configuration (`[models.price]`, USD per 1M tokens and per tool
call) and is kept in nano-USD integers, so sums are exact. Input tokens read from the cache are priced as
cached input, those written to it as cache writes, the rest as input; reasoning tokens are output tokens.
A response of several model turns (the built-in tool loop) has the usage of all its turns summed already.
The record also carries the run's timeline (engine/timing.py), stored in the same row.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from parley.config import ModelPrice, Settings
from parley.engine.timing import Timing
from parley.providers.routing import served_by
from parley.schema.client_tools import CALL_TYPES
from parley.services.keys import Caller
from parley.services.limits import Limiter, Scope
from parley.store.base import UsageRecord

# Calls the client runs; every other `*_call` output item is a built-in tool Parley ran (counted, priced).
_CLIENT_CALLS = frozenset({"function_call", "custom_tool_call", *CALL_TYPES.values()})


@dataclass(frozen=True, slots=True)
class Deployment:
    """Where a public model id is served from, and its price."""

    upstream_model: str
    upstream_host: str
    price: ModelPrice


def deployments(settings: Settings) -> dict[str, Deployment]:
    """Configured models by id; the embedded model runs here, at no price."""
    found = {m.id: Deployment(m.upstream_model or m.id, urlsplit(m.base_url).netloc, m.price) for m in settings.models}
    embedded = settings.embedded
    found.setdefault(embedded.model_id, Deployment(embedded.model_id, "embedded", ModelPrice()))
    for model in settings.models:  # an alias is its model
        found.update((alias, found[model.id]) for alias in model.aliases)
    return found


def _nanos(tokens: int, usd_per_million: float) -> int:
    return round(tokens * usd_per_million * 1000)  # USD per 1M tokens = 1,000 nano-USD per token


def tool_calls(output: list[dict[str, Any]]) -> dict[str, int]:
    """Built-in tool calls of a response, by output item type."""
    counts: dict[str, int] = {}
    for item in output:
        kind = item.get("type", "")
        if kind.endswith("_call") and kind not in _CLIENT_CALLS:
            counts[kind] = counts.get(kind, 0) + 1
    return counts


@dataclass(frozen=True, slots=True)
class UsageOrigin:
    """What a usage record says about who asked and how the response ran."""

    caller: Caller
    scopes: tuple[Scope, ...]  # the limits its tokens and cost are charged to
    background: bool = False


class Meter:
    def __init__(self, models: Mapping[str, Deployment], limiter: Limiter | None = None) -> None:
        self._models = models
        self.limiter = limiter

    def scopes(self, caller: Caller) -> tuple[Scope, ...]:
        if self.limiter is None or caller.project_id is None:
            return ()
        return self.limiter.scopes(caller.project_id, caller.key_id, caller.limits)

    def record(self, origin: UsageOrigin, response: dict[str, Any], timing: Timing | None) -> UsageRecord:
        """The response's usage record (its cost from the model's price); its tokens and cost are charged."""
        usage = response.get("usage") or {}
        details = usage.get("input_tokens_details") or {}
        input_tokens = int(usage.get("input_tokens") or 0)
        cached = int(details.get("cached_tokens") or 0)
        cache_write = int(details.get("cache_write_tokens") or 0)
        output_tokens = int(usage.get("output_tokens") or 0)
        reasoning = int((usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0)
        model = str(response.get("model") or "")
        # A routed model: the deployment that served its last turn (its upstream, its price).
        served = served_by()
        deployment = ((self._models.get(served) if served else None) or self._models.get(model)
                      or Deployment(model, "", ModelPrice()))
        price = deployment.price
        calls = tool_calls(response.get("output") or [])
        uncached = max(0, input_tokens - cached - cache_write)
        now = time.monotonic()
        status = str(response.get("status"))
        record = UsageRecord(
            response_id=response["id"], created_at=int(response.get("created_at") or time.time()),
            project_id=origin.caller.project_id or "", api_key_id=origin.caller.key_id, model=model,
            upstream_model=deployment.upstream_model, upstream_host=deployment.upstream_host,
            status=status, background=origin.background,
            input_tokens=input_tokens, cached_tokens=cached, cache_write_tokens=cache_write,
            output_tokens=output_tokens, reasoning_tokens=reasoning, tool_calls=calls,
            input_cost=_nanos(uncached, price.input)
            + _nanos(cache_write, price.input if price.cache_write is None else price.cache_write),
            cached_cost=_nanos(cached, price.input if price.cached_input is None else price.cached_input),
            output_cost=_nanos(output_tokens, price.output),
            tool_cost=sum(round(count * price.tool_calls.get(kind, 0.0) * 1e9) for kind, count in calls.items()),
            latency_ms=round((now - timing.started) * 1000) if timing else 0,
            ttft_ms=round((timing.first_token - timing.started) * 1000)
            if timing and timing.first_token is not None else None,
            timeline=timing.timeline(status, now) if timing else None,
        )
        if self.limiter is not None:
            self.limiter.charge(origin.scopes, input_tokens + output_tokens, record.cost)
        return record
