"""The PromptStore contract on SQLite and PostgreSQL (the `store` fixture is parametrised)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from parley.errors import InvalidRequest
from parley.store.base import PageQuery
from parley.store.sql import SqlStore

PROJECT = "proj_a"
OTHER = "proj_b"


def body(n: int) -> dict[str, Any]:
    return {"instructions": f"v{n} {{{{x}}}}", "input": [{"role": "user", "content": "hi"}], "model": None,
            "metadata": {"n": str(n)}}


async def test_create_and_get_prompt(store: SqlStore) -> None:
    created = await store.create_prompt(PROJECT, body(1))
    assert created.id.startswith("pmpt_") and created.version == 1 and created.created_at > 0
    assert await store.get_prompt(PROJECT, created.id) == created
    assert await store.get_prompt(PROJECT, created.id, 1) == created
    assert await store.get_prompt(PROJECT, created.id, 2) is None
    assert await store.get_prompt(PROJECT, "pmpt_missing") is None


async def test_versions_increment_and_latest_wins(store: SqlStore) -> None:
    first = await store.create_prompt(PROJECT, body(1))
    second = await store.add_prompt_version(PROJECT, first.id, body(2))
    third = await store.add_prompt_version(PROJECT, first.id, body(3))
    assert second is not None and third is not None
    assert (second.id, second.version, third.version) == (first.id, 2, 3)
    latest = await store.get_prompt(PROJECT, first.id)
    assert latest is not None and latest.version == 3 and latest.body == body(3)
    old = await store.get_prompt(PROJECT, first.id, 2)
    assert old is not None and old.body == body(2)


async def test_add_version_to_unknown_prompt_is_none(store: SqlStore) -> None:
    assert await store.add_prompt_version(PROJECT, "pmpt_missing", body(2)) is None


async def test_concurrent_new_versions_get_distinct_numbers(store: SqlStore) -> None:
    first = await store.create_prompt(PROJECT, body(1))
    made = await asyncio.gather(*(store.add_prompt_version(PROJECT, first.id, body(n)) for n in range(2, 8)))
    assert sorted(r.version for r in made if r is not None) == list(range(2, 8))


async def test_prompts_are_project_scoped(store: SqlStore) -> None:
    mine = await store.create_prompt(PROJECT, body(1))
    assert await store.get_prompt(OTHER, mine.id) is None
    assert await store.add_prompt_version(OTHER, mine.id, body(2)) is None
    assert not await store.delete_prompt(OTHER, mine.id)
    assert (await store.list_prompts(OTHER, PageQuery())).data == []
    assert await store.get_prompt(PROJECT, mine.id) == mine


async def test_delete_removes_every_version(store: SqlStore) -> None:
    gone = await store.create_prompt(PROJECT, body(1))
    await store.add_prompt_version(PROJECT, gone.id, body(2))
    kept = await store.create_prompt(PROJECT, body(1))
    assert await store.delete_prompt(PROJECT, gone.id)
    assert await store.get_prompt(PROJECT, gone.id) is None
    assert await store.get_prompt(PROJECT, gone.id, 1) is None
    assert not await store.delete_prompt(PROJECT, gone.id)
    assert await store.get_prompt(PROJECT, kept.id) == kept


@pytest.fixture
async def five_prompts(store: SqlStore) -> list[str]:
    """Five prompts in creation order; the third has a second version made after all five exist."""
    ids = [(await store.create_prompt(PROJECT, body(1))).id for _ in range(5)]
    await store.add_prompt_version(PROJECT, ids[2], body(2))
    await store.create_prompt(OTHER, body(1))
    return ids


async def _page(store: SqlStore, page: PageQuery) -> tuple[list[str], bool]:
    result = await store.list_prompts(PROJECT, page)
    return [r.id for r in result.data], result.has_more


async def test_list_prompts_latest_versions_in_creation_order(store: SqlStore, five_prompts: list[str]) -> None:
    result = await store.list_prompts(PROJECT, PageQuery(order="asc"))
    assert [r.id for r in result.data] == five_prompts and not result.has_more
    assert [r.version for r in result.data] == [1, 1, 2, 1, 1]
    assert result.data[2].body == body(2)
    assert await _page(store, PageQuery()) == (five_prompts[::-1], False)


async def test_list_prompts_cursors(store: SqlStore, five_prompts: list[str]) -> None:
    ids = five_prompts
    assert await _page(store, PageQuery(limit=2, order="asc")) == (ids[:2], True)
    assert await _page(store, PageQuery(limit=2, order="asc", after=ids[1])) == (ids[2:4], True)
    assert await _page(store, PageQuery(limit=2, order="asc", after=ids[3])) == (ids[4:], False)
    assert await _page(store, PageQuery(limit=2, order="desc", after=ids[3])) == ([ids[2], ids[1]], True)
    assert await _page(store, PageQuery(limit=2, order="asc", before=ids[4])) == (ids[2:4], True)
    assert await _page(store, PageQuery(order="asc", after=ids[0], before=ids[3])) == (ids[1:3], False)


async def test_list_prompts_unknown_cursor(store: SqlStore, five_prompts: list[str]) -> None:
    for page, param in ((PageQuery(after="pmpt_nope"), "after"), (PageQuery(before="pmpt_nope"), "before")):
        with pytest.raises(InvalidRequest) as caught:
            await store.list_prompts(PROJECT, page)
        assert caught.value.param == param
