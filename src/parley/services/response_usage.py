"""One response's usage, cost and timeline (`GET /v1/responses/{id}/usage`, a Parley extension the console's
explorer reads): its usage records, summed, each with the timing marks of its run.

A response has one record per run that reached a model (all its model turns summed: services/usage.py); the
records are summed all the same, so the answer holds whatever rows exist. Costs are exact nano-USD sums, shown
in USD as the costs report shows them.
"""

from __future__ import annotations

from typing import Any, Protocol

from parley.errors import NotFound
from parley.store.base import UsageRecord

_TOKENS = ("input_tokens", "cached_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")
_COSTS = (("input", "input_cost"), ("cached_input", "cached_cost"), ("output", "output_cost"),
          ("tool_calls", "tool_cost"))


class ResponseUsageStore(Protocol):
    async def response_usage(self, project_id: str, response_id: str) -> list[UsageRecord] | None: ...


def _usd(nanos: int) -> float:
    return nanos / 1e9


async def response_usage(store: ResponseUsageStore, project_id: str, response_id: str) -> dict[str, Any]:
    """The `response.usage` object; a 404 when the project has no such response (nor a record of one made with
    `store: false`). A response with no record yet (queued, running, or one that never reached a model) has
    zero counts and no runs."""
    records = await store.response_usage(project_id, response_id)
    if records is None:
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
    tokens = {name: sum(getattr(record, name) for record in records) for name in _TOKENS}
    calls: dict[str, int] = {}
    for record in records:
        for kind, count in record.tool_calls.items():
            calls[kind] = calls.get(kind, 0) + count
    nanos = {label: sum(getattr(record, column) for record in records) for label, column in _COSTS}
    return {
        "object": "response.usage",
        "response_id": response_id,
        **tokens,
        "total_tokens": tokens["input_tokens"] + tokens["output_tokens"],
        "tool_calls": calls,
        "cost": {"value": _usd(sum(nanos.values())), "currency": "usd",
                 **{label: _usd(value) for label, value in nanos.items()}},
        "runs": [_run(record) for record in records],
    }


def _run(record: UsageRecord) -> dict[str, Any]:
    """One record: who ran it where, its own counts and cost, and its timeline."""
    return {
        "created_at": record.created_at, "status": record.status, "background": record.background,
        "model": record.model, "upstream_model": record.upstream_model, "api_key_id": record.api_key_id,
        "input_tokens": record.input_tokens, "output_tokens": record.output_tokens,
        "cost": {"value": _usd(record.cost), "currency": "usd"},
        "latency_ms": record.latency_ms, "ttft_ms": record.ttft_ms,
        "timeline": record.timeline,
    }
