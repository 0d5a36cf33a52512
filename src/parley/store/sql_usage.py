"""SQL side of usage records, mixed into SqlStore: their rows, written only with other writes, their sums per
time bucket and group for the usage and costs endpoints, and one response's records (its cost and timeline).

A usage record never costs a write of its own on the request path: a stored response carries it in its
own transaction (`save_response`), a background run in its final event-log flush, and a response that
stores nothing hands it to the group-commit writer without waiting (`record_usage`), which inserts such
rows together every 50 ms.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from parley.store import tables
from parley.store.base import UsageQuery, UsageRecord, UsageTotals
from parley.store.writer import GroupCommitWriter

_SUMMED = ("input_tokens", "cached_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens",
           "input_cost", "cached_cost", "output_cost", "tool_cost")


def usage_row(record: UsageRecord) -> dict[str, Any]:
    """The usage_records row of a record."""
    return {
        "response_id": record.response_id, "created_at": record.created_at, "project_id": record.project_id,
        "api_key_id": record.api_key_id, "model": record.model, "upstream_model": record.upstream_model,
        "upstream_host": record.upstream_host, "status": record.status, "background": record.background,
        "input_tokens": record.input_tokens, "cached_tokens": record.cached_tokens,
        "cache_write_tokens": record.cache_write_tokens, "output_tokens": record.output_tokens,
        "reasoning_tokens": record.reasoning_tokens, "tool_calls": orjson.dumps(record.tool_calls).decode(),
        "input_cost": record.input_cost, "cached_cost": record.cached_cost, "output_cost": record.output_cost,
        "tool_cost": record.tool_cost, "latency_ms": record.latency_ms, "ttft_ms": record.ttft_ms,
        "timeline": orjson.dumps(record.timeline).decode() if record.timeline is not None else None,
    }


def _record(row: Any) -> UsageRecord:
    fields = dict(row._mapping)
    del fields["seq"]
    fields["tool_calls"] = orjson.loads(fields["tool_calls"])
    fields["timeline"] = orjson.loads(fields["timeline"]) if fields["timeline"] is not None else None
    return UsageRecord(**fields)


class SqlUsage:
    engine: AsyncEngine
    writer: GroupCommitWriter

    def record_usage(self, record: UsageRecord) -> None:
        """Queue the record for a coming group commit; nobody waits for it."""
        self.writer.defer(tables.usage_records, usage_row(record))

    async def response_usage(self, project_id: str, response_id: str) -> list[UsageRecord] | None:
        """The usage records of one response of the project, oldest first; None if the project has neither a
        record nor a stored response of that id (an index lookup each)."""
        u, r = tables.usage_records, tables.responses
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                select(u).where(u.c.response_id == response_id, u.c.project_id == project_id).order_by(u.c.seq)
            )).all()
            if not rows and (await conn.execute(
                    select(r.c.id).where(r.c.id == response_id, r.c.project_id == project_id))).first() is None:
                return None
        return [_record(row) for row in rows]

    async def usage_totals(self, query: UsageQuery) -> list[UsageTotals]:
        """Sums per bucket and group, in bucket order (one query)."""
        u = tables.usage_records
        bucket = ((u.c.created_at - query.origin) // query.width).label("bucket")
        groups = [u.c[name] for name in query.group_by]
        sums = [func.sum(u.c[name]).label(name) for name in _SUMMED]
        statement = (
            select(bucket, *groups, func.count().label("requests"), *sums)
            .where(u.c.created_at >= query.start, u.c.created_at < query.end)
            .group_by(bucket, *groups)
            .order_by(bucket, *(group.asc().nulls_first() for group in groups))
        )
        for column, values in (("project_id", query.project_ids), ("api_key_id", query.api_key_ids),
                               ("model", query.models)):
            if values:
                statement = statement.where(u.c[column].in_(values))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [
            UsageTotals(int(row.bucket), {name: row._mapping[name] for name in query.group_by},
                        int(row.requests), *(int(row._mapping[name] or 0) for name in _SUMMED))
            for row in rows
        ]
