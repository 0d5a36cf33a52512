"""`list_page` (store/pages.py): the page a running response's input items are listed by (services/live_responses.py)
is the page the store lists once they are stored, for every limit, order and cursor."""

from __future__ import annotations

import itertools

import pytest
from tests.store.test_store_contract import PROJECT, message, response

from parley.errors import InvalidRequest
from parley.store.base import PageQuery
from parley.store.pages import list_page
from parley.store.sql import SqlStore


async def test_the_same_pages_as_the_store(store: SqlStore) -> None:
    items = [message(f"input {n}") for n in range(5)]
    stored = response([message("answer", role="assistant")])
    await store.save_response(PROJECT, stored, items)
    cursors = [None, *(item["id"] for item in items)]
    for limit, order, after, before in itertools.product((1, 2, 5, 20), ("asc", "desc"), cursors, cursors):
        page = PageQuery(limit=limit, order=order, after=after, before=before)  # type: ignore[arg-type]
        expected = await store.list_input_items(PROJECT, stored["id"], page)
        assert expected is not None
        assert list_page(items, page) == expected, page


def test_a_cursor_naming_no_item_is_the_stores_400() -> None:
    for param in ("after", "before"):
        with pytest.raises(InvalidRequest) as caught:
            list_page([message("x")], PageQuery(**{param: "msg_unknown"}))  # type: ignore[arg-type]
        assert caught.value.param == param
