"""The store contract, run against SQLite and PostgreSQL alike (the `store` fixture is parametrised)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, select, text

from parley.errors import InvalidRequest
from parley.ids import new_id
from parley.store import tables
from parley.store.base import Item, PageQuery
from parley.store.migrations import MIGRATIONS, migrate
from parley.store.sql import SqlStore, hash_key, make_engine

PROJECT = "proj_a"
OTHER = "proj_b"


def message(text_: str, role: str = "user", item_id: str | None = None) -> Item:
    kind = "input_text" if role == "user" else "output_text"
    part: dict[str, Any] = {"type": kind, "text": text_}
    if role != "user":
        part["annotations"] = []
    return {
        "id": item_id or new_id("msg"),
        "type": "message",
        "role": role,
        "status": "completed",
        "content": [part],
    }


def response(output: list[Item], previous_response_id: str | None = None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": new_id("resp"),
        "object": "response",
        "created_at": 1_760_000_000,
        "status": "completed",
        "model": "scripted-model",
        "previous_response_id": previous_response_id,
        "background": False,
        "conversation": None,
        "instructions": None,
        "metadata": {},
        "output": output,
        "usage": {"input_tokens": 3, "output_tokens": 5, "total_tokens": 8},
    }
    body.update(fields)
    return body


async def save_chain(store: SqlStore, turns: int, project_id: str = PROJECT) -> tuple[list[str], list[Item]]:
    """Save `turns` chained responses (one input, one output each); returns ids and the expected context."""
    ids: list[str] = []
    expected: list[Item] = []
    previous: str | None = None
    for turn in range(turns):
        inputs = [message(f"question {turn}")]
        resp = response([message(f"answer {turn}", role="assistant")], previous_response_id=previous)
        await store.save_response(project_id, resp, inputs)
        ids.append(resp["id"])
        expected += inputs + resp["output"]
        previous = resp["id"]
    return ids, expected


@contextmanager
def count_statements(store: SqlStore) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engines = [store.engine.sync_engine]
    if store.writer.sync_engine is not None:  # SQLite writes go through the writer thread's own engine
        engines.append(store.writer.sync_engine)
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


# -- responses ---------------------------------------------------------------------------------------


async def test_save_and_get_round_trip(store: SqlStore) -> None:
    # 12 outputs: the order must be numeric by position, not by insertion luck or text sorting.
    output: list[Item] = [message(f"part {n}", role="assistant") for n in range(11)]
    output.insert(
        3,
        {
            "id": new_id("fc"),
            "type": "function_call",
            "call_id": "call_1",
            "name": "f",
            "arguments": '{"x": 1}',
            "status": "completed",
        },
    )
    resp = response(
        output,
        background=True,
        instructions="Réponds en français 🇫🇷",
        metadata={"k": "v", "nested": "ok"},
        temperature=0.7,
        tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}],
        conversation={"id": "conv_1"},
    )
    await store.save_response(PROJECT, resp, [message("hello")])

    got = await store.get_response(PROJECT, resp["id"])

    assert got == resp
    assert got is not None
    assert [item["id"] for item in got["output"]] == [item["id"] for item in output]


async def test_store_runs_on_the_parametrised_backend(store: SqlStore, request: pytest.FixtureRequest) -> None:
    expected = {"sqlite": "sqlite", "postgres": "postgresql"}[request.node.callspec.params["store_url"]]
    assert store.engine.dialect.name == expected


async def test_client_chosen_strings_are_not_length_limited(store: SqlStore) -> None:
    # Clients (Codex, the AI SDK) choose their own item ids; model names are free-form. PostgreSQL
    # enforces VARCHAR lengths where SQLite does not, so both must accept long values alike.
    long_id = "msg_" + "x" * 300
    resp = response([message("out", role="assistant", item_id="out_" + "y" * 300)], model="m/" + "z" * 400)
    await store.save_response(PROJECT, resp, [message("in", item_id=long_id)])

    assert await store.get_response(PROJECT, resp["id"]) == resp
    assert list(await store.find_items(PROJECT, [long_id])) == [long_id]
    page = await store.list_input_items(PROJECT, resp["id"], PageQuery(after=long_id))
    assert page is not None
    assert page.data == []


async def test_get_unknown_response_is_none(store: SqlStore) -> None:
    assert await store.get_response(PROJECT, "resp_missing") is None


async def test_response_without_items_round_trips(store: SqlStore) -> None:
    resp = response([])
    await store.save_response(PROJECT, resp, [])
    assert await store.get_response(PROJECT, resp["id"]) == resp
    assert await store.load_context(PROJECT, resp["id"]) == []


async def test_delete_response(store: SqlStore) -> None:
    inputs = [message("hello")]
    resp = response([message("hi", role="assistant")])
    await store.save_response(PROJECT, resp, inputs)
    item_ids = [inputs[0]["id"], resp["output"][0]["id"]]

    assert await store.delete_response(PROJECT, resp["id"]) is True
    assert await store.delete_response(PROJECT, resp["id"]) is False
    assert await store.get_response(PROJECT, resp["id"]) is None
    assert await store.find_items(PROJECT, item_ids) == {}
    assert await store.list_input_items(PROJECT, resp["id"], PageQuery()) is None
    assert await store.load_context(PROJECT, resp["id"]) is None


async def test_delete_keeps_other_responses(store: SqlStore) -> None:
    keep = response([message("kept", role="assistant")])
    drop = response([message("dropped", role="assistant")])
    await store.save_response(PROJECT, keep, [message("a")])
    await store.save_response(PROJECT, drop, [message("b")])

    assert await store.delete_response(PROJECT, drop["id"]) is True
    assert await store.get_response(PROJECT, keep["id"]) == keep


async def test_project_isolation(store: SqlStore) -> None:
    inputs = [message("secret question")]
    resp = response([message("secret answer", role="assistant")])
    await store.save_response(PROJECT, resp, inputs)
    item_ids = [inputs[0]["id"], resp["output"][0]["id"]]

    assert await store.get_response(OTHER, resp["id"]) is None
    assert await store.delete_response(OTHER, resp["id"]) is False
    assert await store.find_items(OTHER, item_ids) == {}
    assert await store.list_input_items(OTHER, resp["id"], PageQuery()) is None
    assert await store.load_context(OTHER, resp["id"]) is None
    # The owner still sees everything after the other project's delete attempt.
    assert await store.get_response(PROJECT, resp["id"]) == resp
    assert set(await store.find_items(PROJECT, item_ids)) == set(item_ids)


async def test_chain_does_not_cross_projects(store: SqlStore) -> None:
    ids, _ = await save_chain(store, 2, project_id=PROJECT)
    inputs = [message("from the other project")]
    resp = response([message("reply", role="assistant")], previous_response_id=ids[-1])
    await store.save_response(OTHER, resp, inputs)

    assert await store.load_context(OTHER, resp["id"]) == inputs + resp["output"]


# -- load_context ------------------------------------------------------------------------------------


async def test_load_context_returns_chain_oldest_first(store: SqlStore) -> None:
    ids, expected = await save_chain(store, 5)

    assert await store.load_context(PROJECT, ids[-1]) == expected
    # From the middle of the chain: only the ancestors, not the descendants.
    assert await store.load_context(PROJECT, ids[2]) == expected[:6]
    assert await store.load_context(PROJECT, ids[0]) == expected[:2]


async def test_load_context_orders_many_items_within_a_turn(store: SqlStore) -> None:
    inputs = [message(f"q{n}") for n in range(12)]
    outputs = [message(f"a{n}", role="assistant") for n in range(12)]
    first = response(outputs)
    await store.save_response(PROJECT, first, inputs)
    follow_up = [message("next")]
    second = response([message("done", role="assistant")], previous_response_id=first["id"])
    await store.save_response(PROJECT, second, follow_up)

    assert await store.load_context(PROJECT, second["id"]) == inputs + outputs + follow_up + second["output"]


async def test_load_context_skips_turns_without_items(store: SqlStore) -> None:
    first_inputs = [message("first")]
    first = response([message("one", role="assistant")])
    await store.save_response(PROJECT, first, first_inputs)
    empty = response([], previous_response_id=first["id"])
    await store.save_response(PROJECT, empty, [])
    last_inputs = [message("last")]
    last = response([message("two", role="assistant")], previous_response_id=empty["id"])
    await store.save_response(PROJECT, last, last_inputs)

    expected = first_inputs + first["output"] + last_inputs + last["output"]
    assert await store.load_context(PROJECT, last["id"]) == expected


async def test_load_context_unknown_response_is_none(store: SqlStore) -> None:
    assert await store.load_context(PROJECT, "resp_missing") is None


async def test_load_context_uses_a_bounded_number_of_queries(store: SqlStore) -> None:
    short, short_expected = await save_chain(store, 3)
    long, long_expected = await save_chain(store, 30)
    await store.load_context(PROJECT, short[-1])  # warm up: connections and dialect initialisation

    with count_statements(store) as short_statements:
        assert await store.load_context(PROJECT, short[-1]) == short_expected
    with count_statements(store) as long_statements:
        assert await store.load_context(PROJECT, long[-1]) == long_expected

    assert len(short_statements) == len(long_statements)
    assert 1 <= len(long_statements) <= 2


# -- find_items --------------------------------------------------------------------------------------


async def test_find_items_latest_copy_wins_and_references_are_ignored(store: SqlStore) -> None:
    shared_id = new_id("msg")
    referenced = message("the real one", role="assistant")
    first = response([referenced])
    await store.save_response(PROJECT, first, [message("v1", item_id=shared_id)])
    # A client (e.g. Codex) resends the same item id with new content; an item_reference points back.
    second = response([message("unrelated", role="assistant")])
    reference: Item = {"type": "item_reference", "id": referenced["id"]}
    only_referenced: Item = {"type": "item_reference", "id": "msg_never_stored"}
    await store.save_response(PROJECT, second, [message("v2", item_id=shared_id), reference, only_referenced])

    found = await store.find_items(PROJECT, [shared_id, referenced["id"], "msg_never_stored", "msg_missing"])

    assert found == {shared_id: message("v2", item_id=shared_id), referenced["id"]: referenced}


async def test_find_items_with_no_ids(store: SqlStore) -> None:
    await save_chain(store, 1)
    assert await store.find_items(PROJECT, []) == {}


# -- list_input_items --------------------------------------------------------------------------------


@pytest.fixture
async def five_inputs(store: SqlStore) -> tuple[str, list[str]]:
    inputs = [message(f"input {n}") for n in range(5)]
    resp = response([message("output", role="assistant")])
    await store.save_response(PROJECT, resp, inputs)
    return resp["id"], [item["id"] for item in inputs]


async def _ids(store: SqlStore, response_id: str, page: PageQuery) -> tuple[list[str], bool]:
    result = await store.list_input_items(PROJECT, response_id, page)
    assert result is not None
    return [item["id"] for item in result.data], result.has_more


async def test_list_input_items_order_and_limit(store: SqlStore, five_inputs: tuple[str, list[str]]) -> None:
    rid, ids = five_inputs
    assert await _ids(store, rid, PageQuery()) == (ids[::-1], False)  # default: desc, 20
    assert await _ids(store, rid, PageQuery(order="asc")) == (ids, False)
    assert await _ids(store, rid, PageQuery(limit=2, order="asc")) == (ids[:2], True)
    assert await _ids(store, rid, PageQuery(limit=2, order="desc")) == ([ids[4], ids[3]], True)
    assert await _ids(store, rid, PageQuery(limit=5, order="asc")) == (ids, False)
    assert await _ids(store, rid, PageQuery(limit=4, order="asc")) == (ids[:4], True)


async def test_list_input_items_returns_full_items(store: SqlStore) -> None:
    inputs = [message("exact content 🙂")]
    resp = response([message("out", role="assistant")])
    await store.save_response(PROJECT, resp, inputs)

    page = await store.list_input_items(PROJECT, resp["id"], PageQuery())

    assert page is not None
    assert page.data == inputs  # outputs are not input items


async def test_list_input_items_after_cursor_walks_pages(store: SqlStore, five_inputs: tuple[str, list[str]]) -> None:
    rid, ids = five_inputs
    assert await _ids(store, rid, PageQuery(limit=2, order="asc", after=ids[1])) == (ids[2:4], True)
    assert await _ids(store, rid, PageQuery(limit=2, order="asc", after=ids[3])) == ([ids[4]], False)
    assert await _ids(store, rid, PageQuery(limit=2, order="desc", after=ids[3])) == ([ids[2], ids[1]], True)
    assert await _ids(store, rid, PageQuery(limit=2, order="desc", after=ids[1])) == ([ids[0]], False)
    assert await _ids(store, rid, PageQuery(order="asc", after=ids[4])) == ([], False)


async def test_list_input_items_before_cursor(store: SqlStore, five_inputs: tuple[str, list[str]]) -> None:
    rid, ids = five_inputs
    assert await _ids(store, rid, PageQuery(order="asc", before=ids[3])) == (ids[:3], False)
    assert await _ids(store, rid, PageQuery(order="desc", before=ids[1])) == ([ids[4], ids[3], ids[2]], False)
    assert await _ids(store, rid, PageQuery(order="asc", after=ids[0], before=ids[4])) == (ids[1:4], False)
    assert await _ids(store, rid, PageQuery(order="asc", before=ids[0])) == ([], False)
    # A limited `before` page is the one just before the cursor, still in the requested order.
    assert await _ids(store, rid, PageQuery(limit=2, order="asc", before=ids[4])) == (ids[2:4], True)
    assert await _ids(store, rid, PageQuery(limit=2, order="desc", before=ids[0])) == ([ids[2], ids[1]], True)


async def test_list_input_items_unknown_cursor(store: SqlStore, five_inputs: tuple[str, list[str]]) -> None:
    rid, _ = five_inputs
    with pytest.raises(InvalidRequest) as after:
        await store.list_input_items(PROJECT, rid, PageQuery(after="msg_missing"))
    assert after.value.param == "after"
    assert after.value.status == 400

    with pytest.raises(InvalidRequest) as before:
        await store.list_input_items(PROJECT, rid, PageQuery(before="msg_missing"))
    assert before.value.param == "before"


async def test_list_input_items_output_id_is_not_a_cursor(store: SqlStore) -> None:
    resp = response([message("out", role="assistant")])
    await store.save_response(PROJECT, resp, [message("in")])
    with pytest.raises(InvalidRequest) as error:
        await store.list_input_items(PROJECT, resp["id"], PageQuery(after=resp["output"][0]["id"]))
    assert error.value.param == "after"


async def test_list_input_items_unknown_response_is_none(store: SqlStore) -> None:
    assert await store.list_input_items(PROJECT, "resp_missing", PageQuery()) is None


# -- API keys ----------------------------------------------------------------------------------------


async def test_api_key_lifecycle(store: SqlStore) -> None:
    assert await store.any_active_key() is False
    record, secret = await store.create_key(PROJECT, "ci")

    assert secret.startswith("sk-parley-")
    assert len(secret) > 40
    assert record.project_id == PROJECT
    assert record.name == "ci"
    assert record.key_prefix == secret[:14]
    assert record.revoked_at is None
    assert await store.any_active_key() is True
    assert await store.find_key(hash_key(secret)) == record
    assert await store.find_key(hash_key(secret + "x")) is None

    assert await store.revoke_key(record.id) is True
    assert await store.revoke_key(record.id) is False
    assert await store.find_key(hash_key(secret)) is None
    assert await store.any_active_key() is False
    [revoked] = await store.list_keys(PROJECT)
    assert revoked.id == record.id
    assert revoked.revoked_at is not None
    assert revoked.revoked_at >= record.created_at


async def test_list_keys_by_project(store: SqlStore) -> None:
    a1, _ = await store.create_key(PROJECT, "one")
    a2, _ = await store.create_key(PROJECT, "two")
    b1, _ = await store.create_key(OTHER, "three")

    assert {k.id for k in await store.list_keys(PROJECT)} == {a1.id, a2.id}
    assert [k.id for k in await store.list_keys(OTHER)] == [b1.id]
    assert {k.id for k in await store.list_keys()} == {a1.id, a2.id, b1.id}
    assert await store.list_keys("proj_none") == []


async def test_revoke_unknown_key(store: SqlStore) -> None:
    assert await store.revoke_key("key_missing") is False


async def test_key_secret_is_stored_hashed(store: SqlStore) -> None:
    _, secret = await store.create_key(PROJECT, "ci")
    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(tables.api_keys))).all()
    assert len(rows) == 1
    assert secret not in [str(value) for value in rows[0]]
    assert rows[0].key_hash == hash_key(secret)


# -- group commit ------------------------------------------------------------------------------------


async def test_concurrent_saves_are_group_committed(store: SqlStore) -> None:
    saves = [(response([message(f"answer {n}", role="assistant")]), [message(f"question {n}")]) for n in range(200)]

    before = store.writer.transactions
    await asyncio.gather(*(store.save_response(PROJECT, resp, inputs) for resp, inputs in saves))
    transactions = store.writer.transactions - before

    for resp, inputs in saves:
        assert await store.get_response(PROJECT, resp["id"]) == resp
        assert await store.load_context(PROJECT, resp["id"]) == inputs + resp["output"]
    assert 1 <= transactions < 50  # merged, not one transaction per save


async def test_a_failing_write_does_not_fail_the_batch(store: SqlStore) -> None:
    original = response([message("original", role="assistant")])
    await store.save_response(PROJECT, original, [])
    duplicate = response([message("duplicate", role="assistant")], id=original["id"])
    others = [response([message(f"other {n}", role="assistant")]) for n in range(20)]

    results = await asyncio.gather(
        *(store.save_response(PROJECT, resp, []) for resp in [*others[:10], duplicate, *others[10:]]),
        return_exceptions=True,
    )

    assert isinstance(results[10], Exception)
    assert [r for n, r in enumerate(results) if n != 10] == [None] * 20
    assert await store.get_response(PROJECT, original["id"]) == original
    for resp in others:
        assert await store.get_response(PROJECT, resp["id"]) == resp


async def test_close_finishes_queued_writes(store_url: str) -> None:
    store = await SqlStore.open(store_url)
    saves = [response([message(f"answer {n}", role="assistant")]) for n in range(20)]
    pending = [asyncio.ensure_future(store.save_response(PROJECT, resp, [])) for resp in saves]
    await asyncio.sleep(0)  # queued, maybe not yet committed
    await store.close()
    await asyncio.gather(*pending)

    reopened = await SqlStore.open(store_url)
    try:
        for resp in saves:
            assert await reopened.get_response(PROJECT, resp["id"]) == resp
    finally:
        await reopened.close()


# -- migrations --------------------------------------------------------------------------------------


async def test_migrations_are_idempotent(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert await migrate(engine) == [version for version, _, _ in MIGRATIONS]
        assert await migrate(engine) == []
    finally:
        await engine.dispose()

    resp = response([message("persisted", role="assistant")])
    first = await SqlStore.open(db_url)
    try:
        await first.save_response(PROJECT, resp, [])
    finally:
        await first.close()

    second = await SqlStore.open(db_url)
    try:
        assert await migrate(second.engine) == []
        assert await second.get_response(PROJECT, resp["id"]) == resp
        async with second.engine.connect() as conn:
            versions = (await conn.execute(text("SELECT version FROM schema_migrations"))).scalars().all()
        assert sorted(versions) == [version for version, _, _ in MIGRATIONS]  # numbers may leave gaps
    finally:
        await second.close()


async def test_concurrent_migrations_apply_each_version_once(db_url: str) -> None:
    engines = [make_engine(db_url) for _ in range(3)]
    try:
        applied = await asyncio.gather(*(migrate(engine) for engine in engines))
    finally:
        for engine in engines:
            await engine.dispose()

    assert sorted(v for versions in applied for v in versions) == [version for version, _, _ in MIGRATIONS]
