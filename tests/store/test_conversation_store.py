"""The ConversationStore contract, on SQLite and PostgreSQL (the `store` fixture is parametrised)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from parley.errors import InvalidRequest
from parley.ids import new_id
from parley.store.base import Item, PageQuery
from parley.store.sql import SqlStore

PROJECT = "proj_a"
OTHER = "proj_b"


def message(text_: str, role: str = "user") -> Item:
    kind = "input_text" if role == "user" else "output_text"
    return {"id": new_id("msg"), "type": "message", "role": role, "status": "completed",
            "content": [{"type": kind, "text": text_}]}


@contextmanager
def count_statements(store: SqlStore) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(store.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", record)


async def test_create_get_update_delete(store: SqlStore) -> None:
    first = [message("hello"), message("hi", role="assistant")]
    record = await store.create_conversation(PROJECT, {"topic": "demo"}, first)
    assert record.id.startswith("conv_") and record.metadata == {"topic": "demo"}
    assert await store.get_conversation(PROJECT, record.id) == record
    assert await store.load_conversation(PROJECT, record.id) == first

    updated = await store.update_conversation(PROJECT, record.id, {"topic": "changed"})
    assert updated is not None and updated.metadata == {"topic": "changed"}
    assert updated.created_at == record.created_at
    assert (await store.get_conversation(PROJECT, record.id)) == updated

    assert await store.delete_conversation(PROJECT, record.id) is True
    assert await store.get_conversation(PROJECT, record.id) is None
    assert await store.load_conversation(PROJECT, record.id) is None
    assert await store.delete_conversation(PROJECT, record.id) is False
    assert await store.append_conversation_items(PROJECT, record.id, [message("late")]) is False
    assert await store.update_conversation(PROJECT, record.id, {}) is None


async def test_other_projects_see_nothing(store: SqlStore) -> None:
    item = message("private")
    record = await store.create_conversation(PROJECT, {}, [item])
    assert await store.get_conversation(OTHER, record.id) is None
    assert await store.load_conversation(OTHER, record.id) is None
    assert await store.list_conversation_items(OTHER, record.id, PageQuery()) is None
    assert await store.get_conversation_item(OTHER, record.id, item["id"]) is None
    assert await store.append_conversation_items(OTHER, record.id, [message("intruder")]) is False
    assert await store.update_conversation(OTHER, record.id, {"x": "y"}) is None
    assert await store.delete_conversation_item(OTHER, record.id, item["id"]) is False
    assert await store.delete_conversation(OTHER, record.id) is False
    assert await store.load_conversation(PROJECT, record.id) == [item]


async def test_append_keeps_order_and_load_is_one_query(store: SqlStore) -> None:
    record = await store.create_conversation(PROJECT, {}, [])
    assert await store.load_conversation(PROJECT, record.id) == []
    expected: list[Item] = []
    for turn in range(12):  # 12+ items: the order must be numeric, not textual
        batch = [message(f"q{turn}"), message(f"a{turn}", role="assistant")]
        assert await store.append_conversation_items(PROJECT, record.id, batch) is True
        expected += batch
    with count_statements(store) as statements:
        loaded = await store.load_conversation(PROJECT, record.id)
    assert loaded == expected
    assert len(statements) == 1


async def test_items_pages_and_cursors(store: SqlStore) -> None:
    items = [message(f"m{n}") for n in range(7)]
    record = await store.create_conversation(PROJECT, {}, items)
    ids = [i["id"] for i in items]

    desc = await store.list_conversation_items(PROJECT, record.id, PageQuery(limit=3))
    assert desc is not None and [i["id"] for i in desc.data] == ids[::-1][:3] and desc.has_more
    after = await store.list_conversation_items(PROJECT, record.id, PageQuery(limit=3, after=ids[4]))
    assert after is not None and [i["id"] for i in after.data] == [ids[3], ids[2], ids[1]] and after.has_more
    asc = await store.list_conversation_items(PROJECT, record.id, PageQuery(limit=5, order="asc", after=ids[2]))
    assert asc is not None and [i["id"] for i in asc.data] == ids[3:] and not asc.has_more
    before = await store.list_conversation_items(PROJECT, record.id, PageQuery(limit=2, order="asc", before=ids[5]))
    assert before is not None and [i["id"] for i in before.data] == ids[3:5]
    with pytest.raises(InvalidRequest) as err:
        await store.list_conversation_items(PROJECT, record.id, PageQuery(after="msg_unknown"))
    assert err.value.param == "after"


async def test_get_and_delete_item(store: SqlStore) -> None:
    items = [message("keep"), message("drop"), message("keep too")]
    record = await store.create_conversation(PROJECT, {}, items)
    assert await store.get_conversation_item(PROJECT, record.id, items[1]["id"]) == items[1]
    assert await store.delete_conversation_item(PROJECT, record.id, items[1]["id"]) is True
    assert await store.get_conversation_item(PROJECT, record.id, items[1]["id"]) is None
    assert await store.delete_conversation_item(PROJECT, record.id, items[1]["id"]) is False
    assert await store.load_conversation(PROJECT, record.id) == [items[0], items[2]]
    # Positions keep counting after a deletion: a new item goes last.
    late = message("late")
    await store.append_conversation_items(PROJECT, record.id, [late])
    assert await store.load_conversation(PROJECT, record.id) == [items[0], items[2], late]


async def test_concurrent_appends_never_interleave(store: SqlStore, store_url: str) -> None:
    # Two stores on one database = two writers and two connection pools, as two replicas would have.
    other = await SqlStore.open(store_url)
    try:
        record = await store.create_conversation(PROJECT, {}, [message("start")])
        batches = [[message(f"turn {n} item {k}") for k in range(4)] for n in range(20)]
        results = await asyncio.gather(*(
            (store if n % 2 else other).append_conversation_items(PROJECT, record.id, batch)
            for n, batch in enumerate(batches)
        ))
        assert results == [True] * 20
        loaded = await store.load_conversation(PROJECT, record.id)
    finally:
        await other.close()
    assert loaded is not None and len(loaded) == 1 + 4 * 20
    ids = [i["id"] for i in loaded[1:]]
    for batch in batches:
        start = ids.index(batch[0]["id"])
        assert ids[start:start + 4] == [i["id"] for i in batch]  # contiguous, in its own order
