"""PostgreSQL's group commit of plain inserts: one statement, each table's rows as one JSONB parameter
(store/writer.py `_pg_batch`). What goes in must come back exactly, and what the ordinary path refused must still
be refused (never truncated, never stored half)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import Column, Float, MetaData, String, Table, func, select
from tests.store.test_store_contract import PROJECT, message, response

from parley.errors import InvalidRequest
from parley.ids import new_id
from parley.store import tables
from parley.store.base import UsageRecord
from parley.store.sql import SqlStore
from parley.store.writer import Write, _pg_batch

pytestmark = pytest.mark.slow


@pytest.fixture
async def pg(postgres_clean_url: str) -> AsyncIterator[SqlStore]:
    opened = await SqlStore.open(postgres_clean_url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of every asyncpg `execute` call (the batched group commit's only way to the server)."""
    seen: list[str] = []
    original = asyncpg.Connection.execute

    async def execute(self: asyncpg.Connection, query: str, *args: Any, **kwargs: Any) -> str:
        seen.append(query)
        status: str = await original(self, query, *args, **kwargs)
        return status

    monkeypatch.setattr(asyncpg.Connection, "execute", execute)
    return seen


TRICKY = ['quote " and \' and \\ backslash', "Réponds en français 🇫🇷", "line\u2028separator\nnew\tline",
          '{"looks": ["like", "json"]}', "x" * 100_000, "", "\\u0000 is text here, not a NUL"]


def usage(response_id: str, tokens: int) -> UsageRecord:
    return UsageRecord(
        response_id=response_id, created_at=1_700_000_000, project_id=PROJECT, api_key_id=None, model="m",
        upstream_model="up", upstream_host="127.0.0.1:1", status="completed", background=True,
        input_tokens=tokens, cached_tokens=0, cache_write_tokens=0, output_tokens=2**62, reasoning_tokens=0,
        tool_calls={"web_search_call": 2}, input_cost=2**63 - 1, cached_cost=0, output_cost=0, tool_cost=0,
        latency_ms=5, ttft_ms=None, timeline={"started_at": 1, "marks": [{"event": "started", "ms": 0.0}]},
    )


async def test_concurrent_saves_are_one_statement_and_read_back_exactly(pg: SqlStore, statements: list[str]) -> None:
    saves = []
    for n, text in enumerate(TRICKY * 3):
        resp = response([message(text, role="assistant"), message(f"second {n}", role="assistant")],
                        metadata={"k": text[:64]}, background=n % 2 == 0, instructions=text)
        saves.append((resp, [message(f"question {n}: {text}")], usage(resp["id"], n)))

    await asyncio.gather(*(pg.save_response(PROJECT, resp, inputs, record) for resp, inputs, record in saves))

    batched = [sql for sql in statements if sql.startswith("WITH w0 AS (INSERT INTO")]
    assert batched and len(batched) < len(saves)  # merged, one statement per group commit
    assert not [sql for sql in statements if sql.upper().startswith(("BEGIN", "COMMIT"))]
    for resp, inputs, record in saves:
        assert await pg.get_response(PROJECT, resp["id"]) == resp
        assert await pg.load_context(PROJECT, resp["id"]) == inputs + resp["output"]
        assert await pg.response_usage(PROJECT, resp["id"]) == [record]


async def test_an_over_long_id_is_refused_not_truncated(pg: SqlStore) -> None:
    # responses.id is VARCHAR(64): an explicit cast would cut the value silently; the insert's assignment refuses it.
    too_long = response([message("x", role="assistant")], id="resp_" + "a" * 80)
    fine = [response([message(f"ok {n}", role="assistant")]) for n in range(5)]

    results = await asyncio.gather(*(pg.save_response(PROJECT, r, []) for r in [too_long, *fine]),
                                   return_exceptions=True)

    assert isinstance(results[0], Exception) and results[1:] == [None] * 5
    async with pg.engine.connect() as conn:
        cut = await conn.scalar(select(func.count()).select_from(tables.responses)
                                .where(tables.responses.c.id.startswith("resp_aaaa")))
    assert cut == 0
    for r in fine:
        assert await pg.get_response(PROJECT, r["id"]) == r


async def test_a_nul_character_in_a_column_is_still_the_requests_mistake(pg: SqlStore) -> None:
    # JSONB refuses \u0000 (22P05); the write is retried alone on the ordinary path, which maps PostgreSQL's refusal
    # of a NUL (22021) to a 400, as before. The other writes of the batch are stored.
    bad = response([message("x", role="assistant")], model="model\x00name")
    fine = [response([message(f"ok {n}", role="assistant")]) for n in range(5)]

    results = await asyncio.gather(*(pg.save_response(PROJECT, r, []) for r in [bad, *fine]), return_exceptions=True)

    assert isinstance(results[0], InvalidRequest) and results[1:] == [None] * 5
    assert await pg.get_response(PROJECT, bad["id"]) is None


def test_only_plain_inserts_that_json_carries_exactly_are_batched() -> None:
    rows = [{"id": new_id("resp"), "project_id": PROJECT, "created_at": 1, "status": "completed", "model": "m",
             "previous_response_id": None, "conversation_id": None, "background": False, "body": "{}"}]
    batch = _pg_batch([Write(inserts=[(tables.responses, rows)])])
    assert batch is not None and batch[0].startswith('WITH w0 AS (INSERT INTO "responses"')
    assert '"body") SELECT' in batch[0] and "(v->>7)::boolean" in batch[0] and "(v->>2)::bigint" in batch[0]

    floats = Table("t", MetaData(), Column("id", String(8), primary_key=True), Column("score", Float))
    assert _pg_batch([Write(inserts=[(floats, [{"id": "a", "score": float("nan")}])])]) is None  # NaN would be null
    assert _pg_batch([Write(before=[lambda conn: None], inserts=[(tables.responses, rows)])]) is None
    assert _pg_batch([Write(inserts=[(tables.responses, [{**rows[0], "created_at": 2**64}])])]) is None
    other_columns = [rows[0], {k: v for k, v in rows[0].items() if k != "body"}]
    assert _pg_batch([Write(inserts=[(tables.responses, other_columns[::-1])])]) is None


def _row(response_id: str) -> dict[str, Any]:
    return {"id": response_id, "project_id": PROJECT, "created_at": 1, "status": "completed", "model": "m",
            "previous_response_id": None, "conversation_id": None, "background": False, "body": "{}"}


async def _until(condition: Any, what: str) -> None:
    """Poll an observable state (never a duration: the deadline only keeps a broken run from hanging)."""
    for _ in range(600):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never saw: {what}")


async def test_plain_insert_batches_commit_past_a_blocked_one_and_statements_wait_for_it(
        pg: SqlStore, postgres_clean_url: str) -> None:
    # A transaction of another client holds an uncommitted row with the id batch A inserts: A's statement waits on
    # the unique index. A later batch of plain inserts (B) commits meanwhile: such batches commute and several are in
    # flight at once. A write with a statement of its own (C) waits for every batch in flight, so its statement sees
    # A's row once the other client rolls back.
    held, later = new_id("resp"), new_id("resp")
    other = await asyncpg.connect(postgres_clean_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        blocker = other.transaction()
        await blocker.start()
        await other.execute("INSERT INTO responses (id, project_id, created_at, status, model, background, body) "
                            "VALUES ($1, $2, 1, 'completed', 'm', false, '{}')", held, PROJECT)
        a = asyncio.ensure_future(pg.writer.submit(Write(inserts=[(tables.responses, [_row(held)])])))

        async def a_waits() -> bool:
            return bool(await other.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"))

        await _until(a_waits, "batch A waiting on the other client's row")
        await asyncio.wait_for(pg.writer.submit(Write(inserts=[(tables.responses, [_row(later)])])), 30)
        assert not a.done()
        assert await _stored(pg, later)

        seen: list[int] = []

        def count_held(conn: Any) -> None:
            seen.append(conn.scalar(select(func.count()).select_from(tables.responses)
                                    .where(tables.responses.c.id == held)))

        c = asyncio.ensure_future(pg.writer.submit(Write(before=[count_held])))
        # Given time to run (a writer without the wait runs it at once): it must not, while A is blocked. Cannot
        # fail for a writer that waits, however slow the machine.
        await asyncio.wait([c], timeout=1.0)
        assert not c.done() and seen == []
        await blocker.rollback()
        await asyncio.wait_for(asyncio.gather(a, c), 30)
        assert seen == [1]
    finally:
        await other.close()


async def _stored(pg: SqlStore, response_id: str) -> bool:
    async with pg.engine.connect() as conn:
        return bool(await conn.scalar(select(func.count()).select_from(tables.responses)
                                      .where(tables.responses.c.id == response_id)))


async def test_the_writer_gives_its_connections_back_when_it_stops(pg: SqlStore) -> None:
    await asyncio.gather(*(pg.save_response(PROJECT, response([message(f"r {n}", role="assistant")]), [])
                           for n in range(20)))
    assert pg.engine.pool.checkedout() > 0  # kept between batches
    await pg.writer.stop()
    assert pg.engine.pool.checkedout() == 0
