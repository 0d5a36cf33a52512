"""SqlStore.list_responses on SQLite and PostgreSQL (the `store` fixture is parametrised): the metadata filter is
SQL on each dialect's JSON, same-second responses page by id, and another project's responses never appear."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from parley.errors import InvalidRequest
from parley.store.base import PageQuery, ResponseFilter
from parley.store.sql import SqlStore

sys.path.insert(0, str(Path(__file__).parent))
from test_store_contract import OTHER, PROJECT, message, response


async def test_list_filters_pages_and_isolates(store: SqlStore) -> None:
    saved = []
    for i, (model, team, status) in enumerate([("m1", "a", "completed"), ("m1", "b", "failed"),
                                               ("m2", "a", "completed"), ("m1", "a", "completed")]):
        body = response([message(f"answer {i}", role="assistant")], model=model, status=status,
                        metadata={"team": team, "n": str(i)}, created_at=1_760_000_000 + i // 2)
        await store.save_response(PROJECT, body, [message(f"question {i}")])
        saved.append(body)
    await store.save_response(OTHER, response([], model="m1", metadata={"team": "a"}), [])

    async def ids(where: ResponseFilter | None = None, page: PageQuery | None = None) -> list[str]:
        listed = await store.list_responses(PROJECT, where or ResponseFilter(), page or PageQuery())
        return [r["id"] for r in listed.data]

    newest = sorted(saved, key=lambda r: (r["created_at"], r["id"]), reverse=True)
    assert await ids() == [r["id"] for r in newest]
    listed = (await store.list_responses(PROJECT, ResponseFilter(), PageQuery())).data
    assert all("output" not in r for r in listed) and listed[0]["usage"]["total_tokens"] == 8
    assert set(await ids(ResponseFilter(model="m1"))) == {saved[0]["id"], saved[1]["id"], saved[3]["id"]}
    assert set(await ids(ResponseFilter(metadata={"team": "a"}))) == {saved[0]["id"], saved[2]["id"],
                                                                       saved[3]["id"]}
    assert await ids(ResponseFilter(model="m1", metadata={"team": "a", "n": "3"})) == [saved[3]["id"]]
    assert await ids(ResponseFilter(status="failed")) == [saved[1]["id"]]
    assert set(await ids(ResponseFilter(created_after=1_760_000_001))) == {saved[2]["id"], saved[3]["id"]}
    assert set(await ids(ResponseFilter(created_before=1_760_000_001))) == {saved[0]["id"], saved[1]["id"]}
    # Pages walk (created_at, id) both ways, ties included.
    order = [r["id"] for r in newest]
    first = await store.list_responses(PROJECT, ResponseFilter(), PageQuery(limit=2))
    assert [r["id"] for r in first.data] == order[:2] and first.has_more
    assert await ids(page=PageQuery(limit=2, after=order[1])) == order[2:]
    assert await ids(page=PageQuery(limit=1, after=order[0])) == order[1:2]
    assert await ids(page=PageQuery(limit=2, before=order[3])) == order[1:3]
    assert await ids(page=PageQuery(order="asc")) == order[::-1]
    assert await ids(page=PageQuery(order="asc", after=order[2])) == order[1::-1]
    # Another project's responses are neither listed nor usable as a cursor.
    other = (await store.list_responses(OTHER, ResponseFilter(), PageQuery())).data
    assert len(other) == 1 and other[0]["id"] not in order
    with pytest.raises(InvalidRequest) as refused:
        await store.list_responses(OTHER, ResponseFilter(), PageQuery(after=order[0]))
    assert refused.value.param == "after"
