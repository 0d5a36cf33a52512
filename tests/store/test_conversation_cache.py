"""The conversation cache (store/conversation_cache.py): the same items as reading whole conversations, on SQLite
and PostgreSQL, with a second caching store on the same database standing for another process that appends,
deletes items and deletes conversations."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from sqlalchemy import delete, insert, update
from tests.store.conftest import MB
from tests.store.test_conversation_store import PROJECT, count_statements, message

from parley.store import migrations, tables
from parley.store.base import Item
from parley.store.migrations import migrate
from parley.store.sql import SqlStore, make_engine


async def turn(store: SqlStore, conversation_id: str, n: int) -> list[Item]:
    """What a turn on a conversation does: read it (as build_call does), then append its input and answer."""
    history = await store.load_conversation(PROJECT, conversation_id)
    assert history is not None
    assert await store.append_conversation_items(PROJECT, conversation_id, [
        message(f"question {n}"), message(f"answer {n}", role="assistant")])
    return history


async def same(cached: SqlStore, store: SqlStore, conversation_id: str) -> list[Item] | None:
    """The cached store's items, asserted equal to a whole read's."""
    loaded = await cached.load_conversation(PROJECT, conversation_id)
    assert loaded == await store.load_conversation(PROJECT, conversation_id)
    return loaded


async def test_long_conversation_same_items_and_same_objects(store: SqlStore, cached: SqlStore) -> None:
    # `store` has no cache: every read is whole. Both read the one database.
    assert store.conversation_cache is None and cached.conversation_cache is not None
    record = await cached.create_conversation(PROJECT, {}, [message("start")])
    before: list[Item] = []
    for n in range(30):
        expected = await store.load_conversation(PROJECT, record.id)
        history = await turn(cached, record.id, n)
        assert history == expected
        assert len(history) == 1 + 2 * n
        # The items read on the previous turn are handed out again as the same objects (the prefix memos' key).
        assert all(a is b for a, b in zip(before, history, strict=False)) and history[:len(before)] == before
        before = history
    assert await same(cached, store, record.id) is not None
    assert cached.conversation_cache.stats.extended >= 30  # each turn read only what was appended since


async def test_a_turn_is_one_query(cached: SqlStore) -> None:
    record = await cached.create_conversation(PROJECT, {}, [])
    for n in range(5):
        await turn(cached, record.id, n)
    with count_statements(cached) as statements:
        loaded = await cached.load_conversation(PROJECT, record.id)
    assert loaded is not None and len(loaded) == 10 and len(statements) == 1


async def test_appends_and_turns_on_another_process(cached: SqlStore, other: SqlStore, store: SqlStore) -> None:
    record = await other.create_conversation(PROJECT, {}, [message("start")])
    for n in range(8):
        await turn(cached if n % 2 else other, record.id, n)
        if n % 3 == 0:  # items added through the Conversations API, on the other process
            assert await other.append_conversation_items(PROJECT, record.id, [message(f"added {n}")])
        for reader in (cached, other):
            assert await same(reader, store, record.id) is not None


async def test_items_deleted_on_another_process(cached: SqlStore, other: SqlStore, store: SqlStore) -> None:
    record = await cached.create_conversation(PROJECT, {}, [message("start")])
    for n in range(5):
        await turn(cached, record.id, n)
    loaded = await same(cached, store, record.id)
    assert loaded is not None and len(loaded) == 11
    assert await other.delete_conversation_item(PROJECT, record.id, loaded[3]["id"])
    after = await same(cached, store, record.id)
    assert after is not None and len(after) == 10 and loaded[3] not in after
    # A deletion and an append between two reads: still the conversation as it is.
    assert await other.delete_conversation_item(PROJECT, record.id, loaded[0]["id"])
    await turn(other, record.id, 5)
    after = await same(cached, store, record.id)
    assert after is not None and len(after) == 11 and after[0] == loaded[1]
    # A deletion of the last item read, then appends that reuse no position.
    assert await other.delete_conversation_item(PROJECT, record.id, after[-1]["id"])
    assert await other.append_conversation_items(PROJECT, record.id, [message("late")])
    final = await same(cached, store, record.id)
    assert final is not None and final[-1]["content"][0]["text"] == "late" and after[-1] not in final
    # Deleting an item that is not there changes nothing (and a deletion on this process is seen too).
    assert not await other.delete_conversation_item(PROJECT, record.id, after[-1]["id"])
    assert await cached.delete_conversation_item(PROJECT, record.id, final[-1]["id"])
    assert await same(cached, store, record.id) == final[:-1]


async def test_deleted_conversation_is_not_served(cached: SqlStore, other: SqlStore) -> None:
    record = await cached.create_conversation(PROJECT, {}, [message("start")])
    await turn(cached, record.id, 0)
    assert await cached.load_conversation(PROJECT, record.id) is not None
    assert cached.conversation_cache is not None and len(cached.conversation_cache) == 1
    assert await other.delete_conversation(PROJECT, record.id)
    assert await cached.load_conversation(PROJECT, record.id) is None
    assert len(cached.conversation_cache) == 0
    assert await cached.load_conversation("proj_other", record.id) is None


async def test_concurrent_turns_see_consistent_snapshots(cached: SqlStore, other: SqlStore, store: SqlStore) -> None:
    """Turns, appends and reads on one conversation at once, from two processes: every read is the
    conversation as it was at some moment (appends only: a prefix of the final conversation), and afterwards
    both caches serve what a whole read does."""
    record = await cached.create_conversation(PROJECT, {}, [message("start")])
    reads = await asyncio.gather(*(
        turn(cached if n % 3 else other, record.id, n) if n % 2 else
        (cached if n % 4 else other).load_conversation(PROJECT, record.id)
        for n in range(40)
    ))
    final = await same(cached, store, record.id)
    assert final is not None and len(final) == 1 + 2 * 20
    assert await same(other, store, record.id) == final
    for read in reads:
        assert read is not None and read == final[:len(read)]
    # Concurrent turns on one process, from one cached state: each sees the conversation as it was when it read
    # it, and all their appends are read afterwards.
    histories = await asyncio.gather(*(turn(cached, record.id, 100 + n) for n in range(6)))
    loaded = await same(cached, store, record.id)
    assert loaded is not None and len(loaded) == len(final) + 12
    for history in histories:
        assert len(history) >= len(final) and history == loaded[:len(history)]


async def test_bounded_in_bytes(store_url: str, store: SqlStore) -> None:
    small = await SqlStore.open(store_url, chain_cache_bytes=3000)
    try:
        cache = small.conversation_cache
        assert cache is not None
        ids = []
        for c in range(6):
            record = await small.create_conversation(PROJECT, {}, [message(f"conversation {c}")])
            ids.append(record.id)
            for n in range(3):
                await turn(small, record.id, n)
            await small.load_conversation(PROJECT, record.id)
            assert 0 < cache.bytes <= 3000
        assert len(cache) < 6
        for conversation_id in ids:  # evicted ones are read whole again, the same
            assert await same(small, store, conversation_id) is not None
        big = await small.create_conversation(PROJECT, {}, [message("x" * 4000)])
        assert await same(small, store, big.id) is not None  # larger than the bound: served, not kept
        assert cache.bytes <= 3000
    finally:
        await small.close()


async def test_counter_behind_the_cache_is_read_whole(cached: SqlStore, store: SqlStore) -> None:
    """Never on a live database (the counters only grow), but if the rows go back (a restore under a running
    process), what the cache kept is not trusted."""
    record = await cached.create_conversation(PROJECT, {}, [message("start")])
    for n in range(3):
        await turn(cached, record.id, n)
    assert await same(cached, store, record.id) is not None
    c, ci = tables.conversations, tables.conversation_items
    async with store.engine.begin() as conn:
        await conn.execute(delete(ci).where(ci.c.conversation_id == record.id, ci.c.position >= 3))
        await conn.execute(update(c).where(c.c.id == record.id).values(next_position=3))
    behind = await same(cached, store, record.id)
    assert behind is not None and len(behind) == 3
    await turn(store, record.id, 9)
    after = await same(cached, store, record.id)
    assert after is not None and after[:3] == behind and len(after) == 5


async def test_conversations_of_an_older_database(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Migration 13 gives existing conversations a deletion count of 0; the cache then serves them like new ones."""
    monkeypatch.setattr(migrations, "MIGRATIONS", [m for m in migrations.MIGRATIONS if m[0] < 13])
    engine = make_engine(sqlite_url)
    items = [message(f"old {n}") for n in range(4)]
    try:
        await migrate(engine)
        async with engine.begin() as conn:  # a conversation as migration 3 made it: no item_deletions yet
            await conn.execute(insert(tables.conversations).values(
                id="conv_old", project_id=PROJECT, created_at=0, metadata="{}", next_position=len(items)))
            await conn.execute(insert(tables.conversation_items), [
                {"project_id": PROJECT, "conversation_id": "conv_old", "position": n, "item_id": item["id"],
                 "type": "message", "data": orjson.dumps(item).decode()} for n, item in enumerate(items)])
        monkeypatch.undo()
        assert 13 in await migrate(engine)
    finally:
        await engine.dispose()
    cached = await SqlStore.open(sqlite_url, chain_cache_bytes=MB)
    try:
        assert await cached.load_conversation(PROJECT, "conv_old") == items
        await turn(cached, "conv_old", 0)
        assert await cached.delete_conversation_item(PROJECT, "conv_old", items[1]["id"])
        loaded = await cached.load_conversation(PROJECT, "conv_old")
        assert loaded is not None and len(loaded) == 5 and items[1] not in loaded
    finally:
        await cached.close()
