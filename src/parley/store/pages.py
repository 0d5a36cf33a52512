"""Cursor pagination over an ordered key, shared by every list endpoint of the store.

`after`/`before` are object ids; `locate` turns one into its key. With only `before`, the page is the one
just before the cursor (walked backwards, then flipped), still in the requested order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import ColumnElement, Row, Select
from sqlalchemy.ext.asyncio import AsyncConnection

from parley.errors import InvalidRequest
from parley.store.base import Page, PageQuery

Item = dict[str, Any]
Locate = Callable[[str, str], Awaitable[int]]  # (cursor id, param name) -> key; raises InvalidRequest


async def keyset_page(
    conn: AsyncConnection, query: Select[Any], key: ColumnElement[Any], page: PageQuery, locate: Locate
) -> tuple[list[Row[Any]], bool]:
    """(rows of the page, has_more)."""
    ascending = page.order == "asc"
    for cursor, forward, param in ((page.after, True, "after"), (page.before, False, "before")):
        if cursor is None:
            continue
        position = await locate(cursor, param)
        query = query.where(key > position if ascending == forward else key < position)
    backwards = page.before is not None and page.after is None
    order = key.asc() if ascending != backwards else key.desc()
    rows = list((await conn.execute(query.order_by(order).limit(page.limit + 1))).all())
    page_rows = rows[: page.limit]
    if backwards:
        page_rows.reverse()
    return page_rows, len(rows) > page.limit


def list_page(items: list[Item], page: PageQuery) -> Page:
    """The same page over items held in memory, keyed by their place in the list (a running response's input items,
    which the store lists by position): a cursor that names no item is the 400 the store gives."""
    positions: dict[str, int] = {}
    for position, item in enumerate(items):
        positions.setdefault(item["id"], position)
    low, high = -1, len(items)  # the keys the cursors leave, exclusive
    ascending = page.order == "asc"
    for cursor, forward, param in ((page.after, True, "after"), (page.before, False, "before")):
        if cursor is None:
            continue
        at = positions.get(cursor)
        if at is None:
            raise InvalidRequest(f"No input item with id '{cursor}' in this response.", param=param)
        if ascending == forward:
            low = max(low, at)
        else:
            high = min(high, at)
    window = items[low + 1:high] if low + 1 < high else []
    backwards = page.before is not None and page.after is None
    if ascending == backwards:
        window = window[::-1]  # walked from the high end
    taken = window[: page.limit]
    if backwards:
        taken.reverse()
    return Page(taken, len(window) > page.limit)
