"""What metrics cost per update and per response, measured in isolation (the gateway benchmark cannot resolve a
~1% difference on a busy 2-core machine).

    python -m bench.metrics_updates [--updates N]

Prints one JSON document (microseconds, best of 5 timings):
- `per_update`: Parley's lock-free families (telemetry/metrics.py) against prometheus_client's own labelled
  metrics, which take a lock for `labels()` and another for `inc()` / `observe()`;
- `per_response`: everything a non-streamed, stored response costs the app's telemetry with metrics on and
  tracing off: its HTTP request observed (start and end), its usage record reported (response counter, duration
  and time-to-first-token histograms, token counters, cost), one group commit's batch size;
- `per_batch`: what the provider's stream wrapper (telemetry/provider.py; with tracing on only) adds to each batch
  of upstream events.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import timeit
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client import Counter as ClientCounter
from prometheus_client import Histogram as ClientHistogram

from parley.providers.base import ModelCall, ModelEvent, TextDelta, TokenCount
from parley.store.base import UsageRecord
from parley.telemetry.metrics import DURATION_BUCKETS, Counter, Histogram, Metrics
from parley.telemetry.observe import Telemetry
from parley.telemetry.provider import ObservedProvider, _ObservedStream


def _best(run: Any, number: int) -> float:
    return round(min(timeit.repeat(run, number=number, repeat=5)) / number * 1e6, 3)


def per_update(updates: int) -> dict[str, float]:
    registry = CollectorRegistry()
    client_counter = ClientCounter("c", "c", ["method", "route", "status"], registry=registry)
    client_histogram = ClientHistogram("h", "h", ["method", "route"], registry=registry, buckets=DURATION_BUCKETS)
    counter = Counter("c", "c", ("method", "route", "status"))
    histogram = Histogram("h", "h", ("method", "route"))
    key3, key2 = ("POST", "/v1/responses", "200"), ("POST", "/v1/responses")
    return {
        "prometheus_client_counter_inc": _best(lambda: client_counter.labels(*key3).inc(), updates),
        "prometheus_client_histogram_observe": _best(lambda: client_histogram.labels(*key2).observe(0.0123), updates),
        "parley_counter_inc": _best(lambda: counter.inc(key3), updates),
        "parley_histogram_observe": _best(lambda: histogram.observe(key2, 0.0123), updates),
    }


def per_response(responses: int) -> float:
    telemetry = Telemetry(Metrics())
    scope: dict[str, Any] = {"method": "POST", "path": "/v1/responses", "headers": []}
    record = UsageRecord(
        response_id="resp_1", created_at=0, project_id="default", api_key_id=None, model="bench",
        upstream_model="fixed", upstream_host="127.0.0.1:9000", status="completed", background=False,
        input_tokens=12, cached_tokens=0, cache_write_tokens=0, output_tokens=32, reasoning_tokens=0, tool_calls={},
        input_cost=1800, cached_cost=0, output_cost=19200, tool_cost=0, latency_ms=1, ttft_ms=0)
    writes = telemetry.writes
    assert writes is not None

    def one() -> None:
        observation = telemetry.request_started(scope)
        telemetry.response_recorded(record, {})
        writes.committed(1)
        telemetry.request_ended(observation, scope, 200)

    return _best(one, responses)


class _Stream:
    def __init__(self, batches: int) -> None:
        self._left = batches

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> list[ModelEvent]:
        if not self._left:
            raise StopAsyncIteration
        self._left -= 1
        return [TextDelta(" token")]

    async def aclose(self) -> None:
        pass


class _Provider:
    def __init__(self, batches: int) -> None:
        self._batches = batches

    async def open(self, call: ModelCall) -> _Stream:
        return _Stream(self._batches)

    async def count_tokens(self, call: ModelCall) -> TokenCount:
        return TokenCount(0, False)


def per_batch(batches: int) -> float:
    """Microseconds the wrapper adds to one batch: iterate a stream of `batches` batches with and without it."""
    provider = ObservedProvider(_Provider(batches), "bench", "127.0.0.1:9000", Telemetry(Metrics()))

    async def drain(wrap: bool) -> float:
        stream: AsyncIterator[list[ModelEvent]] = _Stream(batches)
        if wrap:  # as with tracing on (a span-less wrapper: the span's own end is once per turn)
            stream = _ObservedStream(_Stream(batches), provider, None)
        started = time.perf_counter()
        async for _ in stream:
            pass
        return time.perf_counter() - started

    async def measure() -> float:
        plain = min([await drain(False) for _ in range(5)])
        observed = min([await drain(True) for _ in range(5)])
        return (observed - plain) / batches * 1e6

    return round(asyncio.run(measure()), 3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=200_000, help="updates per timing (default 200000)")
    args = parser.parse_args(argv)
    print(json.dumps({"benchmark": "metrics_updates", "unit": "us", "per_update": per_update(args.updates),
                      "per_response": per_response(args.updates // 10), "per_batch": per_batch(args.updates)},
                     indent=2))


if __name__ == "__main__":
    main()
