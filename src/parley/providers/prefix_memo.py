"""Work done over a model context's items, kept so that the same context grown at its end (the next turn of a
`previous_response_id` chain, the next model turn of a tool loop) is worked on only for its new items.

Turn N of a chain sends turn N-1's items again with turn N-1's output and turn N's input after them. An entry is
found by the identity of the list's first item (the chain cache hands out the same item objects turn after turn,
store/chain_cache.py) and used only when the entry's items are a prefix of the new list, compared with `==`: by
identity for the objects both share, by value for the others (an item read again from the database, or a file
part resolved again). Every user's work is a pure function of the items' values, so an equal prefix gives the
same result whatever process, cache state or deletion produced the list: nothing here can go stale.

Bounded by the bytes of item JSON its entries keep reachable (they hold the items); least recently used first
out. The size is measured on the new items only, so it costs no more than the work it saves.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

Item = dict[str, Any]
S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class PrefixHit(Generic[S]):
    """A remembered state covering `items[:start]`, and the JSON bytes of those items."""

    start: int
    state: S
    size: int


@dataclass(frozen=True, slots=True)
class _Entry(Generic[S]):
    items: list[Item]
    state: S
    size: int


class PrefixMemo(Generic[S]):
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[int, _Entry[S]] = OrderedDict()
        self._bytes = 0

    @property
    def bytes(self) -> int:
        """JSON bytes of the items the entries hold."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, items: Sequence[Item]) -> PrefixHit[S] | None:
        """The state remembered for the longest known prefix of `items`, if any."""
        if not items or not self._entries:
            return None
        entry = self._entries.get(id(items[0]))
        if entry is None:
            return None
        start = len(entry.items)
        # The entry holds its first item, so no other live object has its id; `is` is a belt-and-braces check.
        if start > len(items) or entry.items[0] is not items[0]:
            return None
        prefix = items[:start]
        if (prefix if isinstance(prefix, list) else list(prefix)) != entry.items:
            return None
        self._entries.move_to_end(id(items[0]))
        return PrefixHit(start, entry.state, entry.size)

    def put(self, items: Sequence[Item], state: S, hit: PrefixHit[S] | None) -> int:
        """Remember `state` as covering all of `items` (found with `hit`); returns the items' JSON bytes (an upper
        bound: measured on the new items only, brackets and commas included)."""
        start, size = (hit.start, hit.size) if hit is not None else (0, 0)
        if hit is not None and start == len(items):
            return size  # nothing new: the entry found is this one
        if start < len(items):
            size += len(orjson.dumps(list(items[start:])))
        if not items or self.max_bytes <= 0:
            return size
        key = id(items[0])
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.size
        if size <= self.max_bytes:
            self._entries[key] = _Entry(list(items), state, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.size
        return size
