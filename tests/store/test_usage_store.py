"""Migration 10's tables on SQLite and PostgreSQL: key roles, expiry, allowed models and limits; usage records
(written only alongside other writes) and their sums per bucket and group; the shared rate-limit counters.
Migration 12: a record's timeline, and one response's records read back by its id, in its project only."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from parley.config import EmbeddedConfig, RateLimits, Settings
from parley.ids import new_id
from parley.store import migrations, tables
from parley.store.base import KeySpec, UsageQuery, UsageRecord
from parley.store.migrations import migrate
from parley.store.sql import SqlStore, hash_key, make_engine
from parley.store.sql_usage import usage_row
from parley.testing.in_process import InProcess, in_process


def usage(created_at: int, project: str = "p1", key: str | None = "key_a", model: str = "m1",
          tokens: tuple[int, int] = (10, 5), cost: int = 1000) -> UsageRecord:
    return UsageRecord(
        response_id=new_id("resp"), created_at=created_at, project_id=project, api_key_id=key, model=model,
        upstream_model="up-" + model, upstream_host="127.0.0.1:9", status="completed", background=False,
        input_tokens=tokens[0], cached_tokens=2, cache_write_tokens=1, output_tokens=tokens[1], reasoning_tokens=3,
        tool_calls={"web_search_call": 2}, input_cost=cost, cached_cost=cost // 10, output_cost=2 * cost,
        tool_cost=7, latency_ms=12, ttft_ms=4,
    )


async def _rows(store: SqlStore) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(tables.usage_records))).scalar_one())


# -- keys ----------------------------------------------------------------------------------------


async def test_key_roles_expiry_models_and_limits_round_trip(store: SqlStore) -> None:
    limits = RateLimits(requests_per_minute=5, spend_per_day_usd=1.5)
    spec = KeySpec("ci", "project", int(time.time()) + 60, ("m1", "m2"), limits)
    record, secret = await store.create_key("p1", "ci", spec)
    assert (record.role, record.allowed_models, record.limits) == ("project", ("m1", "m2"), limits)
    assert await store.find_key(hash_key(secret)) == record

    admin, admin_secret = await store.create_key("ignored", "ops", KeySpec("ops", "admin"))
    assert admin.role == "admin" and admin.project_id == "" and admin_secret.startswith("sk-parley-admin-")

    keep = frozenset({"name", "allowed_models"})
    updated = await store.update_key(record.id, KeySpec(expires_at=None, limits=None, keep=keep))
    assert updated is not None
    assert (updated.name, updated.expires_at, updated.allowed_models) == ("ci", None, ("m1", "m2"))
    assert updated.limits is None
    assert await store.revoke_key(record.id)
    assert await store.update_key(record.id, KeySpec("x", keep=frozenset({"expires_at"}))) is None


async def test_keys_of_an_older_database_become_project_keys(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    older = [m for m in migrations.MIGRATIONS if m[0] < 10]
    monkeypatch.setattr(migrations, "MIGRATIONS", older)
    engine = make_engine(sqlite_url)
    try:
        await migrate(engine)
        async with engine.begin() as conn:
            await conn.execute(insert(tables.api_keys).values(
                id="key_old", project_id="p1", name="old", key_hash=hash_key("sk-old"), key_prefix="sk-old",
                created_at=1, revoked_at=None))
        monkeypatch.undo()
        assert await migrate(engine) == [m[0] for m in migrations.MIGRATIONS if m[0] >= 10]  # 10 and later
    finally:
        await engine.dispose()
    store = await SqlStore.open(sqlite_url)
    try:
        record = await store.find_key(hash_key("sk-old"))
        assert record is not None
        assert (record.role, record.expires_at, record.allowed_models, record.limits) == ("project", None, None, None)
    finally:
        await store.close()


# -- usage records -------------------------------------------------------------------------------


async def test_usage_goes_in_the_response_transaction(store: SqlStore) -> None:
    response = {"id": new_id("resp"), "created_at": 100, "status": "completed", "model": "m1", "output": []}
    before = store.writer.transactions
    await store.save_response("p1", response, [], usage(100))
    assert store.writer.transactions == before + 1
    assert await _rows(store) == 1


async def test_record_usage_is_deferred_and_batched(store: SqlStore) -> None:
    before = store.writer.transactions
    for _ in range(20):
        store.record_usage(usage(100))  # not awaited: the writer inserts such rows together every 50 ms
    for _ in range(6000):
        if await _rows(store) == 20:
            break
        await asyncio.sleep(0.01)
    assert await _rows(store) == 20
    assert store.writer.transactions == before + 1


async def test_record_usage_before_close_is_committed(store_url: str) -> None:
    store = await SqlStore.open(store_url)
    store.record_usage(usage(100))
    await store.close()
    reopened = await SqlStore.open(store_url)
    try:
        assert await _rows(reopened) == 1
    finally:
        await reopened.close()


async def test_usage_totals_by_bucket_and_group(store: SqlStore) -> None:
    day = 86400 * 20000
    for record in (usage(day + 10), usage(day + 20, model="m2"), usage(day + 90, key=None),
                   usage(day + 3600, project="p2"), usage(day - 1)):
        store.record_usage(record)
    store.writer.flush_deferred()  # queued now rather than within 50 ms
    await store.save_response("p1", {"id": "resp_x", "created_at": 1, "status": "completed", "model": "m",
                                      "output": []}, [])  # waits for the queued records too
    whole = await store.usage_totals(UsageQuery(start=day, end=day + 86400, origin=day, width=86400))
    summed = [(t.bucket, t.requests, t.input_tokens, t.output_tokens, t.cached_tokens) for t in whole]
    assert summed == [(0, 4, 40, 20, 8)]
    assert whole[0].input_cost == 4000 and whole[0].tool_cost == 28 and whole[0].reasoning_tokens == 12

    minutes = await store.usage_totals(UsageQuery(start=day, end=day + 7200, origin=day, width=60,
                                                  group_by=("model",)))
    assert [(t.bucket, t.group, t.requests) for t in minutes] == [
        (0, {"model": "m1"}, 1), (0, {"model": "m2"}, 1), (1, {"model": "m1"}, 1), (60, {"model": "m1"}, 1)]

    by_key = await store.usage_totals(UsageQuery(start=day, end=day + 86400, origin=day, width=3600,
                                                 group_by=("project_id", "api_key_id"), project_ids=("p1",)))
    assert [(t.bucket, t.group, t.requests) for t in by_key] == [
        (0, {"project_id": "p1", "api_key_id": None}, 1), (0, {"project_id": "p1", "api_key_id": "key_a"}, 2)]


async def test_a_responses_records_come_back_with_their_timeline_in_its_project_only(store: SqlStore) -> None:
    timeline = {"started_at": 1_700_000_000_000, "marks": [{"event": "started", "ms": 0.0},
                                                           {"event": "finished", "ms": 12.5, "status": "completed"}]}
    first = dataclasses.replace(usage(100), timeline=timeline)
    second = dataclasses.replace(usage(101), response_id=first.response_id, timeline=None)
    other = usage(102, project="p2")
    await store.save_response("p1", {"id": first.response_id, "created_at": 100, "status": "completed",
                                      "model": "m1", "output": []}, [], first)
    for record in (second, other):
        store.record_usage(record)
    store.writer.flush_deferred()
    await store.save_response("p1", {"id": "resp_empty", "created_at": 1, "status": "completed", "model": "m",
                                      "output": []}, [])  # committed after the deferred records: they are in
    assert await store.response_usage("p1", first.response_id) == [first, second]  # every field, in order
    assert await store.response_usage("p2", first.response_id) is None  # another project's: not there
    assert await store.response_usage("p2", other.response_id) == [other]  # store: false, found by its record
    assert await store.response_usage("p1", other.response_id) is None
    assert await store.response_usage("p1", "resp_empty") == []  # a stored response without a record
    assert await store.response_usage("p1", "resp_nope") is None


async def test_records_of_an_older_database_have_no_timeline(sqlite_url: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(migrations, "MIGRATIONS", [m for m in migrations.MIGRATIONS if m[0] < 12])
    engine = make_engine(sqlite_url)
    try:
        await migrate(engine)
        old = usage(5)
        async with engine.begin() as conn:  # the row as migration 10 made it: no timeline column yet
            await conn.execute(insert(tables.usage_records).values(
                {name: value for name, value in usage_row(old).items() if name != "timeline"}))
        monkeypatch.undo()
        assert (await migrate(engine))[0] == 12  # and any later ones
    finally:
        await engine.dispose()
    store = await SqlStore.open(sqlite_url)
    try:
        assert await store.response_usage("p1", old.response_id) == [old]  # timeline None
    finally:
        await store.close()


# -- rate-limit counters -------------------------------------------------------------------------


async def test_rate_counters_add_up_across_stores(store_url: str) -> None:
    first, second = await SqlStore.open(store_url), await SqlStore.open(store_url)
    windows = {"minute": 600, "day": 0, "month": 0}
    try:
        assert await first.sync_rate_counters({("key:a", "minute", 600): (2, 30, 0)}, windows) == {
            ("key:a", "minute", 600): (2, 30, 0)}
        totals = await second.sync_rate_counters({("key:a", "minute", 600): (1, 5, 0),
                                                  ("project:p", "day", 0): (0, 0, 99),
                                                  ("key:a", "minute", 540): (9, 9, 9)}, windows)
        # Every scope's current windows, with both stores' counts; the previous minute is not current.
        assert totals == {("key:a", "minute", 600): (3, 35, 0), ("project:p", "day", 0): (0, 0, 99)}
        pruned = await first.sync_rate_counters({}, windows, prune_before={"minute": 600, "day": 0, "month": 0})
        assert pruned == totals
        async with first.engine.connect() as conn:
            starts = (await conn.execute(select(tables.rate_counters.c.window_start))).scalars().all()
        assert sorted(starts) == [0, 600]
    finally:
        await first.close()
        await second.close()


# -- over HTTP on both databases -----------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/responses/resp_a%00b/usage", "/v1/responses/resp_a%00b",
                                  "/v1/responses/resp_a%00b/input_items", "/v1/conversations/conv_%00",
                                  "/v1/files/file-%00/content"])
async def test_an_id_with_a_nul_character_is_not_found_on_either_database(
        tmp_path: Path, db_url: str, path: str) -> None:
    # PostgreSQL refuses a NUL in a text parameter: every lookup by such an id was a 500 there (404 on SQLite).
    settings = Settings(data_dir=tmp_path, database_url=db_url, embedded=EmbeddedConfig(enabled=False))
    async with in_process(settings) as app:
        resp = await app.http.get(path)
    assert resp.status_code == 404, resp.text
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "not_found"
    assert error["param"] == {"responses": "response_id", "conversations": "conversation_id",
                              "files": "file_id"}[path.split("/")[2]]


@pytest.mark.parametrize("body", [
    {"input": "x", "previous_response_id": "resp_\u0000"},
    {"input": "x", "conversation": "conv_\u0000"},
    {"input": [{"type": "item_reference", "id": "msg_\u0000"}]},
    {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-\u0000"}]}]},
    {"input": "x", "tools": [{"type": "file_search", "vector_store_ids": ["vs_\u0000"]}]},
    {"input": "x", "prompt": {"id": "pmpt_\u0000"}},
    {"input": [{"type": "message", "role": "user", "content": "hi", "id": "msg_\u0000"}]},
], ids=["previous_response_id", "conversation", "item_reference", "file_id", "vector_store_ids", "prompt",
        "item_id"])
async def test_a_nul_character_in_a_body_id_is_the_requests_mistake_on_either_database(
        echo_app: InProcess, body: dict[str, object]) -> None:
    # PostgreSQL refuses a NUL in a text parameter (SQLSTATE 22021): each of these was a 500 there.
    resp = await echo_app.http.post("/v1/responses", json={"model": "echo", **body})
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        assert resp.json()["error"]["type"] == "invalid_request_error"
