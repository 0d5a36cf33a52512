"""SQL side of the shared rate-limit counters (table rate_counters), mixed into SqlStore.

Each process adds what it counted since its last sync and reads everyone's totals back, in one statement
run inside a group commit (services/limits.py calls it every `sync_interval_s`, never on a request's path).
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Connection, and_, delete, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from parley.store import tables
from parley.store.writer import GroupCommitWriter, Write

# (scope, period, window_start) -> (requests, tokens, cost in nano-USD)
CounterKey = tuple[str, str, int]
Counts = tuple[int, int, int]


class SqlLimits:
    engine: AsyncEngine
    writer: GroupCommitWriter

    async def sync_rate_counters(
        self, deltas: Mapping[CounterKey, Counts], windows: Mapping[str, int],
        prune_before: Mapping[str, int] | None = None,
    ) -> dict[CounterKey, Counts]:
        """Add `deltas`, drop windows that started before `prune_before[period]`, and return every scope's
        totals in the current `windows` (period -> window_start), in one transaction. (Old windows are pruned,
        so the current ones hold one row per scope in use.)"""
        totals: dict[CounterKey, Counts] = {}
        c = tables.rate_counters

        def sync(conn: Connection) -> None:
            totals.clear()  # a batch that failed is retried alone: start over
            if deltas:
                # In key order: two processes upserting the same rows lock them in the same order (no deadlock).
                rows = [{"scope": scope, "period": period, "window_start": start, "requests": counts[0],
                         "tokens": counts[1], "cost": counts[2]}
                        for (scope, period, start), counts in sorted(deltas.items())]
                upsert = (postgresql.insert(c) if conn.dialect.name == "postgresql" else sqlite.insert(c))
                conn.execute(upsert.on_conflict_do_update(
                    index_elements=[c.c.scope, c.c.period, c.c.window_start],
                    set_={"requests": c.c.requests + upsert.excluded.requests,
                          "tokens": c.c.tokens + upsert.excluded.tokens,
                          "cost": c.c.cost + upsert.excluded.cost},
                ), rows)
            if prune_before:
                conn.execute(delete(c).where(or_(*(and_(c.c.period == period, c.c.window_start < start)
                                                   for period, start in prune_before.items()))))
            current = or_(*(and_(c.c.period == period, c.c.window_start == start) for period, start in windows.items()))
            query = select(c.c.scope, c.c.period, c.c.window_start, c.c.requests, c.c.tokens, c.c.cost).where(current)
            for row in conn.execute(query):
                totals[(row.scope, row.period, int(row.window_start))] = (
                    int(row.requests), int(row.tokens), int(row.cost))

        await self.writer.submit(Write(before=[sync]))
        return totals
