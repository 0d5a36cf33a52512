"""SQL implementation of BackgroundStore: background jobs, their leases, and every response's event log.

A job is claimed by one worker with a lease it renews; a lease that runs out means the worker died, and
recovery ends that run as `failed` (its open items closed and a terminal event, so every follower's stream
ends). Response
status changes go through conditional UPDATEs, so a cancel and a finishing worker can never both win.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from parley.store import tables
from parley.store.base import ConversationTurn, UsageRecord
from parley.store.rows import item_rows, response_row
from parley.store.sql_conversations import conversation_append
from parley.store.sql_usage import usage_row
from parley.store.writer import GroupCommitWriter, Statement, Write

Item = dict[str, Any]
TERMINAL = ("completed", "incomplete", "failed", "cancelled")
EVENTS_CHANNEL = "parley_response_events"


@dataclass(frozen=True, slots=True)
class BackgroundJob:
    response_id: str
    project_id: str
    request: dict[str, Any]
    input_items: list[Item]


@dataclass(frozen=True, slots=True)
class InterruptedRun:
    """A running job whose worker stopped renewing its lease (its process died), as the worker left it."""

    response_id: str
    project_id: str
    request: dict[str, Any]  # the job's request (BackgroundJob.request)
    status: str | None  # the response's status (None: the response was deleted)
    response: dict[str, Any]  # the stored response, without its output
    output: list[Item]  # the output items stored so far (the finished ones, in order)
    events: list[tuple[int, bytes]]  # the whole event log


def _now_ms() -> int:
    return int(time.time() * 1000)


def _body_row(response: dict[str, Any]) -> dict[str, Any]:
    return {"status": response["status"],
            "body": orjson.dumps({k: v for k, v in response.items() if k != "output"}).decode()}


class SqlBackground:
    engine: AsyncEngine
    writer: GroupCommitWriter

    async def enqueue_background(
        self, project_id: str, response: dict[str, Any], input_items: list[Item], request: dict[str, Any],
        first_events: list[tuple[int, bytes]],
    ) -> None:
        """Record the queued response, its input items, its first events and its job in one transaction
        (before replying, so an accepted background response survives a crash)."""
        async with self.engine.begin() as conn:
            await conn.execute(insert(tables.responses), [response_row(project_id, response)])
            rows = item_rows(project_id, response["id"], 0, input_items)
            if rows:
                await conn.execute(insert(tables.items), rows)
            if first_events:
                await conn.execute(insert(tables.response_events), [
                    {"response_id": response["id"], "seq": seq, "data": data.decode()} for seq, data in first_events
                ])
            await conn.execute(insert(tables.background_jobs).values(
                response_id=response["id"], project_id=project_id, state="queued",
                request=orjson.dumps(request).decode(), created_at=_now_ms(), worker_id=None, lease_until=None,
            ))

    async def claim_background(self, worker_id: str, lease_ms: int, limit: int) -> list[BackgroundJob]:
        """Atomically take up to `limit` queued jobs, oldest first."""
        j = tables.background_jobs
        claimed: list[BackgroundJob] = []
        async with self.engine.begin() as conn:
            candidates = (await conn.execute(
                select(j.c.response_id).where(j.c.state == "queued").order_by(j.c.created_at).limit(limit)
            )).scalars().all()
            for response_id in candidates:
                result = await conn.execute(
                    update(j).where(j.c.response_id == response_id, j.c.state == "queued")
                    .values(state="running", worker_id=worker_id, lease_until=_now_ms() + lease_ms,
                            attempts=j.c.attempts + 1)
                )
                if result.rowcount:
                    claimed.append(await _job(conn, response_id))
        return claimed

    async def renew_leases(self, worker_id: str, response_ids: list[str], lease_ms: int) -> set[str]:
        """Extend the worker's leases on these running jobs. Returns the ones it no longer holds: their job is no
        longer running under this worker, because another process ended the run (or queued it again) once the
        lease had run out (the worker stalled past it), or because the run's own last write has just ended it."""
        if not response_ids:
            return set()
        j = tables.background_jobs
        async with self.engine.begin() as conn:
            renewed = (await conn.execute(
                update(j).where(j.c.worker_id == worker_id, j.c.response_id.in_(response_ids), j.c.state == "running")
                .values(lease_until=_now_ms() + lease_ms).returning(j.c.response_id)
            )).scalars().all()
        return set(response_ids) - set(renewed)

    async def append_events(
        self, project_id: str, response: dict[str, Any], events: list[tuple[int, bytes]], done_items: list[Item],
        first_position: int, usage: UsageRecord | None = None, turn: ConversationTurn | None = None,
    ) -> bool:
        """Append events and finished output items (and, with the last flush, the run's usage record and its
        conversation turn); update the response row unless it was cancelled (then the turn is not appended).

        Returns False when the response was cancelled meanwhile (the worker should stop)."""
        r = tables.responses
        rows = [{"response_id": response["id"], "seq": seq, "data": data.decode()} for seq, data in events]
        outcome: list[bool] = []

        def update_status(conn: Connection) -> None:
            result = conn.execute(
                update(r).where(r.c.id == response["id"], r.c.status.not_in(TERMINAL)).values(**_body_row(response))
            )
            outcome.append(bool(result.rowcount))
            if conn.dialect.name == "postgresql":
                # Delivered at commit, after the events below: followers in other processes wake at once.
                notify = text("SELECT pg_notify(:channel, :rid)")
                conn.execute(notify, {"channel": EVENTS_CHANNEL, "rid": response["id"]})

        before: list[Statement] = [update_status]
        if turn is not None:
            # In the transaction that makes the response final: a crash between two left it completed (polled and
            # followed as such) without its turn in the conversation, and nothing would ever append it.
            append = conversation_append(project_id, turn.conversation_id, turn.items)

            def append_unless_cancelled(conn: Connection) -> None:
                if outcome[-1]:  # the last run of update_status: a failed batch is retried alone
                    append(conn)

            before.append(append_unless_cancelled)
        item_data = item_rows(project_id, response["id"], 1, done_items, start=first_position)
        inserts = [(tables.response_events, rows), (tables.items, item_data)]
        if usage is not None:
            inserts.append((tables.usage_records, [usage_row(usage)]))
        await self.writer.submit(Write(before=before, inserts=inserts))
        return outcome[-1]

    async def listen_for_events(self, on_event: Callable[[str], None]) -> Callable[[], Awaitable[None]] | None:
        """PostgreSQL: call `on_event(response_id)` whenever any process logs events (LISTEN/NOTIFY).
        Returns the function that stops listening; None on databases without notifications (SQLite),
        where followers poll."""
        if self.engine.dialect.name != "postgresql":
            return None
        conn = await self.engine.connect()
        raw = (await conn.get_raw_connection()).driver_connection  # the asyncpg connection
        assert raw is not None

        def deliver(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            on_event(payload)

        await raw.add_listener(EVENTS_CHANNEL, deliver)

        async def stop() -> None:
            await raw.remove_listener(EVENTS_CHANNEL, deliver)
            await conn.close()

        return stop

    async def finish_background(self, response_id: str) -> None:
        j = tables.background_jobs
        async with self.engine.begin() as conn:
            await conn.execute(update(j).where(j.c.response_id == response_id).values(state="done", lease_until=None))

    async def cancel_background(self, project_id: str, response_id: str) -> dict[str, Any] | None:
        """Mark a queued/in-progress background response cancelled; returns its (new or unchanged) body row,
        or None if it does not exist for this project."""
        r, j = tables.responses, tables.background_jobs
        async with self.engine.begin() as conn:
            row = (await conn.execute(
                select(r.c.body, r.c.status).where(r.c.id == response_id, r.c.project_id == project_id)
                .with_for_update()
            )).first()
            if row is None:
                return None
            body: dict[str, Any] = orjson.loads(row.body)
            if row.status in TERMINAL:
                return body
            body["status"] = "cancelled"
            await conn.execute(update(r).where(r.c.id == response_id).values(**_body_row(body)))
            await conn.execute(update(j).where(j.c.response_id == response_id, j.c.state == "queued")
                               .values(state="done"))
        return body

    async def read_events(self, response_id: str, after: int) -> list[tuple[int, bytes]]:
        """Logged events with sequence_number > after, in order."""
        e = tables.response_events
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                select(e.c.seq, e.c.data).where(e.c.response_id == response_id, e.c.seq > after).order_by(e.c.seq)
            )).all()
        return [(int(row.seq), row.data.encode()) for row in rows]

    async def response_status(self, project_id: str, response_id: str) -> str | None:
        r = tables.responses
        async with self.engine.connect() as conn:
            status: str | None = (await conn.execute(
                select(r.c.status).where(r.c.id == response_id, r.c.project_id == project_id)
            )).scalar_one_or_none()
        return status

    async def expired_runs(self) -> list[tuple[str, str]]:
        """(response_id, project_id) of running jobs whose worker stopped renewing its lease."""
        j = tables.background_jobs
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                select(j.c.response_id, j.c.project_id).where(j.c.state == "running", j.c.lease_until < _now_ms())
            )).all()
        return [(row.response_id, row.project_id) for row in rows]

    async def interrupted_run(self, response_id: str) -> InterruptedRun | None:
        """A running job whose lease ran out, with what its worker stored and logged; None if there is none (any
        more)."""
        r, j, e, i = tables.responses, tables.background_jobs, tables.response_events, tables.items
        async with self.engine.connect() as conn:
            job = (await conn.execute(select(j.c.project_id, j.c.request).where(
                j.c.response_id == response_id, j.c.state == "running", j.c.lease_until < _now_ms()))).first()
            if job is None:
                return None
            row = (await conn.execute(select(r.c.body, r.c.status).where(r.c.id == response_id))).first()
            output = (await conn.execute(
                select(i.c.data).where(i.c.response_id == response_id, i.c.kind == 1).order_by(i.c.position)
            )).scalars().all()
            events = (await conn.execute(
                select(e.c.seq, e.c.data).where(e.c.response_id == response_id).order_by(e.c.seq))).all()
        return InterruptedRun(
            response_id, job.project_id, orjson.loads(job.request), row.status if row else None,
            orjson.loads(row.body) if row else {}, [orjson.loads(d) for d in output],
            [(int(ev.seq), ev.data.encode()) for ev in events])

    async def requeue_interrupted(self, run: InterruptedRun, max_attempts: int) -> bool:
        """Queue again a running job whose lease ran out before its run logged anything (the response is still
        `queued`), if it was claimed fewer than `max_attempts` times; False, writing nothing, otherwise or when the
        job was taken meanwhile."""
        r, j = tables.responses, tables.background_jobs
        async with self.engine.connect() as conn, conn.begin() as transaction:
            requeued = await conn.execute(
                update(j).where(j.c.response_id == run.response_id, j.c.state == "running",
                                j.c.lease_until < _now_ms(), j.c.attempts < max_attempts)
                .values(state="queued", worker_id=None, lease_until=None))
            status = (await conn.execute(  # after the write: SQLite lets no other writer in from here
                select(r.c.status).where(r.c.id == run.response_id).with_for_update())).scalar_one_or_none()
            if not requeued.rowcount or status != "queued":
                await transaction.rollback()
                return False
        return True

    async def end_interrupted(self, run: InterruptedRun, response: dict[str, Any] | None,
                              events: list[tuple[int, bytes]], items: list[Item]) -> bool:
        """End an interrupted run in one transaction: take its job, store its `response` row (None: unchanged), the
        `items` that follow its stored output and the `events` that follow its log. False, writing nothing, when
        the run already ended or was taken meanwhile, or its status changed since it was read (a cancel)."""
        r, j = tables.responses, tables.background_jobs
        async with self.engine.connect() as conn, conn.begin() as transaction:
            claimed = await conn.execute(
                update(j).where(j.c.response_id == run.response_id, j.c.state == "running",
                                j.c.lease_until < _now_ms()).values(state="done", lease_until=None))
            status = (await conn.execute(  # after the claim (a write): SQLite lets no other writer in from here
                select(r.c.status).where(r.c.id == run.response_id).with_for_update())).scalar_one_or_none()
            if not claimed.rowcount or status != run.status:
                await transaction.rollback()
                return False
            if response is not None:
                await conn.execute(update(r).where(r.c.id == run.response_id).values(**_body_row(response)))
            if items:
                await conn.execute(insert(tables.items), item_rows(run.project_id, run.response_id, 1, items,
                                                                   start=len(run.output)))
            if events:
                await conn.execute(insert(tables.response_events), [
                    {"response_id": run.response_id, "seq": seq, "data": data.decode()} for seq, data in events])
                if conn.dialect.name == "postgresql":  # followers on other processes read the log now
                    await conn.execute(text("SELECT pg_notify(:channel, :rid)"),
                                       {"channel": EVENTS_CHANNEL, "rid": run.response_id})
        return True


async def _job(conn: AsyncConnection, response_id: str) -> BackgroundJob:
    j, i = tables.background_jobs, tables.items
    row = (await conn.execute(select(j.c.project_id, j.c.request).where(j.c.response_id == response_id))).one()
    inputs = (await conn.execute(
        select(i.c.data).where(i.c.response_id == response_id, i.c.kind == 0).order_by(i.c.position)
    )).scalars().all()
    return BackgroundJob(response_id, row.project_id, orjson.loads(row.request), [orjson.loads(d) for d in inputs])
