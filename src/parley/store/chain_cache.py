"""A process's cache of recently continued `previous_response_id` chains, so turn N of a long chain reads only
what turn N-1 did not have: the one response it continues from, in one query, hung onto its parent's cached
chain.

A node is one stored response's items (its input, then its output) and the node it continued from; nodes are
shared between a chain and its continuations, so a chain of N turns costs N nodes once. Only finished responses
are cached (their items never change). What could change behind the cache is a deletion, by this process or
another: every query that serves a chain also reads the database's deletion counter (`response_deletions`,
bumped in the deleting transaction), and when it moved the whole cache is forgotten. A response made on another
process is simply not cached yet: its row is read like any other. `store: false` responses are never stored,
so never here.

Bounded by `max_bytes` of item JSON (what the database returned): each entry is charged its whole chain, so
the bound holds however chains share nodes. When a chain is continued, the entry of the response it continued
from is dropped (its items stay reachable through the continuation), so a linear chain holds one entry. An entry
also keeps its chain's items flattened (a tuple of references, 8 bytes an item), so serving it is one copy, not a
walk over every node; continuing it extends the parent's tuple.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

Item = dict[str, Any]

# Statuses after which a response's items never change (a queued or in-progress background response's do).
_FINAL = frozenset({"completed", "incomplete", "failed", "cancelled"})

_TAIL_SQL = text(
    """
    SELECT r.status, r.previous_response_id, COALESCE((SELECT n FROM response_deletions WHERE id = 1), 0), i.data
    FROM responses r LEFT JOIN items i ON i.response_id = r.id
    WHERE r.id = :rid AND r.project_id = :pid
    ORDER BY i.kind, i.position
    """
)
DELETIONS_SQL = text("SELECT COALESCE((SELECT n FROM response_deletions WHERE id = 1), 0)")


@dataclass(frozen=True, slots=True)
class ChainNode:
    project_id: str
    items: tuple[Item, ...]
    parent: ChainNode | None
    size: int  # bytes of item JSON in the whole chain up to here

    def context(self) -> list[Item]:
        """The chain's items, oldest first."""
        parts: list[tuple[Item, ...]] = []
        node: ChainNode | None = self
        while node is not None:
            parts.append(node.items)
            node = node.parent
        return [item for part in reversed(parts) for item in part]


@dataclass(frozen=True, slots=True)
class _Entry:
    node: ChainNode
    items: tuple[Item, ...]  # node.context(), kept


@dataclass(slots=True)
class ChainCacheStats:
    hits: int = 0  # the response itself was cached
    extended: int = 0  # its parent was: one response read
    misses: int = 0  # the whole chain was read


class ChainCache:
    def __init__(self, engine: AsyncEngine, max_bytes: int) -> None:
        self._engine = engine
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._deletions: int | None = None
        self.stats = ChainCacheStats()

    @property
    def bytes(self) -> int:
        """Bytes charged to the entries now held (an upper bound on the item JSON they keep alive)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    async def load(self, project_id: str, response_id: str) -> tuple[list[Item] | None, bool]:
        """The chain's items from the cache or with one query, and True; or (None, False): the caller reads the
        whole chain (the response's parent is not cached)."""
        entry = self._entries.get(response_id)
        if entry is not None and entry.node.project_id == project_id:
            async with self._engine.connect() as conn:
                deletions = (await conn.execute(DELETIONS_SQL)).scalar_one()
            if self._sync(deletions) is True and response_id in self._entries:
                self._entries.move_to_end(response_id)
                self.stats.hits += 1
                return list(entry.items), True
        async with self._engine.connect() as conn:
            rows = (await conn.execute(_TAIL_SQL, {"rid": response_id, "pid": project_id})).all()
        if not rows:
            return None, True
        status, previous_id, deletions, _ = rows[0]
        fresh = self._sync(deletions) is not None
        parent = None
        if previous_id is not None:
            parent = self._entries.get(previous_id)
            if parent is None or parent.node.project_id != project_id:
                self.stats.misses += 1
                return None, False
        data = [row[3] for row in rows if row[3] is not None]
        items = tuple(orjson.loads(d) for d in data)
        size = sum(len(d) for d in data) + (parent.node.size if parent is not None else 0)
        node = ChainNode(project_id, items, parent.node if parent is not None else None, size)
        entry = _Entry(node, parent.items + items if parent is not None else items)
        self.stats.extended += 1
        if status in _FINAL and fresh:
            if previous_id is not None:
                self._drop(previous_id)  # reachable through its continuation now
            self._put(response_id, entry)
        return list(entry.items), True

    def remember(self, project_id: str, response_id: str, items: list[Item], data_size: int, deletions: int,
                 status: str) -> None:
        """A whole chain just read from the database (at counter `deletions`), as the root of later turns."""
        if self._sync(deletions) is not None and status in _FINAL:
            self._put(response_id, _Entry(ChainNode(project_id, tuple(items), None, data_size), tuple(items)))

    def _sync(self, deletions: int) -> bool | None:
        """Forget everything if a response was deleted since the cache was filled: True if none was, False if
        the cache was just emptied, None if the query saw an older counter than the cache has (a read that
        started before a deletion another finished first: nothing from it is cached)."""
        if self._deletions == deletions:
            return True
        if self._deletions is not None and deletions < self._deletions:
            return None
        self._entries.clear()
        self._bytes = 0
        self._deletions = deletions
        return False

    def _put(self, response_id: str, entry: _Entry) -> None:
        if entry.node.size > self.max_bytes:
            return
        self._drop(response_id)
        self._entries[response_id] = entry
        self._bytes += entry.node.size
        while self._bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self._bytes -= old.node.size

    def _drop(self, response_id: str) -> None:
        old = self._entries.pop(response_id, None)
        if old is not None:
            self._bytes -= old.node.size
