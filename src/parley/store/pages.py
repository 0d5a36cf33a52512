"""Cursor pagination over an ordered key, shared by every list endpoint of the store.

`after`/`before` are object ids; `locate` turns one into its key. With only `before`, the page is the one
just before the cursor (walked backwards, then flipped), still in the requested order.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import ColumnElement, Row, Select
from sqlalchemy.ext.asyncio import AsyncConnection

from parley.store.base import PageQuery

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
