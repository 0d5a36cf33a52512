"""The chain cache (store/chain_cache.py): the same contexts as reading whole chains, on SQLite and PostgreSQL,
with a second store on the same database standing for another process."""

from __future__ import annotations

import asyncio

from tests.store.test_store_contract import PROJECT, count_statements, message, response

from parley.store.sql import SqlStore


async def turn(store: SqlStore, previous: str | None, n: int, status: str = "completed") -> str:
    """What a turn does: read its chain (as build_call does), then store the new response."""
    if previous is not None:
        assert await store.load_context(PROJECT, previous) is not None
    resp = response([message(f"answer {n}", role="assistant")], previous_response_id=previous, status=status)
    await store.save_response(PROJECT, resp, [message(f"question {n}")])
    return str(resp["id"])


async def test_long_chain_same_context_with_cache_on_and_off(store: SqlStore, cached: SqlStore) -> None:
    # `store` has no cache: every turn reads the whole chain. Both read the one database.
    ids: list[str] = []
    previous = None
    for n in range(30):
        previous = await turn(cached, previous, n)
        ids.append(previous)
    for rid in ids[::-1] + ids:
        assert await cached.load_context(PROJECT, rid) == await store.load_context(PROJECT, rid)
    assert cached.chains is not None and store.chains is None
    assert cached.chains.stats.extended >= 29  # each turn read one response, not its chain


async def test_a_turn_reads_one_response_not_the_chain(cached: SqlStore) -> None:
    previous = None
    for n in range(5):
        previous = await turn(cached, previous, n)
    assert previous is not None
    with count_statements(cached) as statements:
        context = await cached.load_context(PROJECT, previous)
    assert context is not None and len(context) == 10
    assert len(statements) == 1 and "WITH RECURSIVE" not in statements[0]


async def test_chain_continued_on_another_process(cached: SqlStore, other: SqlStore, store: SqlStore) -> None:
    previous = None
    for n in range(6):  # the turns alternate between the two processes
        previous = await turn(cached if n % 2 else other, previous, n)
    assert previous is not None
    for reader in (cached, other):
        assert await reader.load_context(PROJECT, previous) == await store.load_context(PROJECT, previous)


async def test_deleted_response_on_another_process_is_not_served(cached: SqlStore, other: SqlStore,
                                                                store: SqlStore) -> None:
    ids: list[str] = []
    previous = None
    for n in range(5):
        previous = await turn(cached, previous, n)
        ids.append(previous)
    await cached.load_context(PROJECT, ids[-1])  # cached whole
    assert await other.delete_response(PROJECT, ids[1])
    # The chain now stops at the deleted response, as it does when read whole.
    expected = await store.load_context(PROJECT, ids[-1])
    assert expected is not None and len(expected) == 6
    assert await cached.load_context(PROJECT, ids[-1]) == expected
    # Another process deletes an ancestor, then continues the chain: the cached parent must not be reused.
    assert await other.delete_response(PROJECT, ids[2])
    head = await turn(other, ids[-1], 5)
    expected = await store.load_context(PROJECT, head)
    assert expected is not None and len(expected) == 6
    assert await cached.load_context(PROJECT, head) == expected
    assert await other.delete_response(PROJECT, head)
    assert await cached.load_context(PROJECT, head) is None


async def test_unfinished_response_is_not_cached(cached: SqlStore) -> None:
    rid = await turn(cached, None, 0, status="in_progress")
    assert await cached.load_context(PROJECT, rid) is not None
    assert cached.chains is not None and len(cached.chains) == 0


async def test_bounded_in_bytes(store_url: str, store: SqlStore) -> None:
    small = await SqlStore.open(store_url, chain_cache_bytes=4000)
    try:
        assert small.chains is not None
        heads: list[str] = []
        for chain in range(6):  # six chains branching off nothing, three turns each
            previous = None
            for n in range(3):
                previous = await turn(small, previous, chain * 10 + n)
            assert previous is not None
            heads.append(previous)
            await small.load_context(PROJECT, previous)
            assert 0 < small.chains.bytes <= 4000
        for head in heads:  # evicted chains are read whole again, the same
            assert await small.load_context(PROJECT, head) == await store.load_context(PROJECT, head)
    finally:
        await small.close()


async def test_concurrent_turns_on_branches(cached: SqlStore, store: SqlStore) -> None:
    root = await turn(cached, None, 0)
    branches = await asyncio.gather(*(turn(cached, root, n) for n in range(1, 9)))
    nexts = await asyncio.gather(*(turn(cached, rid, 100 + n) for n, rid in enumerate(branches)))
    contexts = await asyncio.gather(*(cached.load_context(PROJECT, rid) for rid in nexts))
    for rid, context in zip(nexts, contexts, strict=True):
        assert context == await store.load_context(PROJECT, rid)
