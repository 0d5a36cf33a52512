"""A process's cache of recently continued conversations' items, so a conversation's next turn reads only the
items appended since its last one (the way store/chain_cache.py serves a chain's next turn), and hands out the
same item objects every turn, so the prefix memos (providers/prefix_memo.py) find them.

A conversation changes in two ways only, both counted on its row: an append bumps `next_position` (the position
its next item gets; an append reserves its range by bumping it, in its own transaction) and an item deletion bumps
`item_deletions` (migration 13, in the deleting transaction). An entry remembers both as they were when its items
were read, in the same statement. The one query a turn runs anyway (the conversation's row, to know it exists)
therefore reads its version too, and returns only the items at or after the entry's `next_position`, or, when an
item was deleted since, every item (`CASE` in the join): one statement, whatever happened, on any process.
Positions only grow and an append's items are written with the counter's bump, so the items at positions before
the entry's `next_position` are exactly the entry's, unless one was deleted. A deleted conversation has no row:
its entry is dropped. Concurrent reads in one process may finish out of order: an entry is only replaced by a read
of a newer version (both counters only grow).

Bounded by `max_bytes` of item JSON (what the database returned), least recently continued out.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

Item = dict[str, Any]

# The conversation's version and the items past `:start`, or all of them if one was deleted since `:deletions`
# (`:deletions` = -1: read everything) or its position counter is behind the entry's (never on a live database).
# One row with a NULL item when there is nothing to read; none when the conversation does not exist (in this
# project).
LOAD_SQL = text(
    """
    SELECT c.next_position, c.item_deletions, ci.data
    FROM conversations c
    LEFT JOIN conversation_items ci ON ci.conversation_id = c.id
        AND ci.position >= CASE WHEN c.item_deletions = :deletions AND c.next_position >= :start
                                THEN :start ELSE 0 END
    WHERE c.id = :cid AND c.project_id = :pid
    ORDER BY ci.position
    """
)


@dataclass(frozen=True, slots=True)
class _Entry:
    project_id: str
    items: tuple[Item, ...]
    next_position: int
    deletions: int
    size: int  # bytes of item JSON

    def older_than(self, next_position: int, deletions: int) -> bool:
        return self.deletions < deletions or (self.deletions == deletions and self.next_position < next_position)


@dataclass(slots=True)
class ConversationCacheStats:
    extended: int = 0  # served from an entry and the items appended since (maybe none)
    misses: int = 0  # every item read (not cached, or an item was deleted since)


class ConversationCache:
    def __init__(self, engine: AsyncEngine, max_bytes: int) -> None:
        self._engine = engine
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self.stats = ConversationCacheStats()

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    async def load(self, project_id: str, conversation_id: str) -> list[Item] | None:
        """The conversation's items, oldest first, in one query; None if it does not exist."""
        entry = self._entries.get(conversation_id)
        if entry is not None and entry.project_id != project_id:
            entry = None
        params = {"cid": conversation_id, "pid": project_id,
                  "start": entry.next_position if entry is not None else 0,
                  "deletions": entry.deletions if entry is not None else -1}
        async with self._engine.connect() as conn:
            rows = (await conn.execute(LOAD_SQL, params)).all()
        if not rows:
            if entry is not None:
                self._drop(conversation_id)
            return None
        next_position, deletions = int(rows[0][0]), int(rows[0][1])
        data = [row[2] for row in rows if row[2] is not None]
        new = tuple(orjson.loads(d) for d in data)
        size = sum(len(d) for d in data)
        if entry is not None and entry.deletions == deletions and next_position >= entry.next_position:
            items, size = entry.items + new if new else entry.items, entry.size + size
            self.stats.extended += 1
        else:
            items = new
            self.stats.misses += 1
            if entry is not None and (deletions < entry.deletions or next_position < entry.next_position):
                # Behind what this process read before (the entry was read before this query began): not a live
                # database's history, so nothing kept is trusted.
                self._drop(conversation_id)
                return list(items)
        current = self._entries.get(conversation_id)
        if current is None or current.older_than(next_position, deletions):
            self._put(conversation_id, _Entry(project_id, items, next_position, deletions, size))
        elif current.next_position == next_position and current.deletions == deletions:
            self._entries.move_to_end(conversation_id)
        return list(items)

    def _put(self, conversation_id: str, entry: _Entry) -> None:
        self._drop(conversation_id)
        if entry.size > self.max_bytes:
            return
        self._entries[conversation_id] = entry
        self._bytes += entry.size
        while self._bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self._bytes -= old.size

    def _drop(self, conversation_id: str) -> None:
        old = self._entries.pop(conversation_id, None)
        if old is not None:
            self._bytes -= old.size
