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

Only contexts whose item objects can come back are kept (`put(keep=True)`, the caller knows: ModelCall.continuable).
Another context (a fresh HTTP request: its next turn reads its items back from the database as new objects) is
held in one transient slot instead, where the same response's later steps still find it (its second measure, its
upstream translation) until the next such context replaces it: kept in the LRU, it would never be found again and
would only hold memory, and keep the garbage collector walking it, until pushed out (bench/README.md, "Parley's
CPU per request").
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
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
    key: tuple[int, int] | None  # of the entry it was found in (None: the transient slot)


@dataclass(frozen=True, slots=True)
class _Entry(Generic[S]):
    items: list[Item]
    state: S
    size: int


class PrefixMemo(Generic[S]):
    # Entries kept per first item: chains forked from one response (many users continuing one prompt) each keep
    # theirs instead of pushing each other out.
    BRANCHES = 8

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        # By the ids of their first and last items (they hold both, so the ids are theirs alone): forks of one chain
        # share the first and differ in the last.
        self._entries: OrderedDict[tuple[int, int], _Entry[S]] = OrderedDict()
        self._by_first: dict[int, list[tuple[int, int]]] = {}
        self._bytes = 0
        self._transient: _Entry[S] | None = None  # the last context put with keep=False

    @property
    def bytes(self) -> int:
        """JSON bytes of the items the entries hold."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, items: Sequence[Item], fits: Callable[[S], bool] | None = None) -> PrefixHit[S] | None:
        """The state remembered for the longest known prefix of `items`, if any. `fits`: whether a state applies
        to this call (made for its instructions, its model); one that does not is forgotten, and None returned:
        the caller's translation replaces it."""
        hit = self._find(items)
        if hit is not None and fits is not None and not fits(hit.state):
            self.drop(hit)
            return None
        return hit

    def _find(self, items: Sequence[Item]) -> PrefixHit[S] | None:
        if not items:
            return None
        best: tuple[tuple[int, int], _Entry[S]] | None = None
        for key in self._by_first.get(id(items[0]), ()):
            entry = self._entries[key]
            start = len(entry.items)
            # An entry holds its first item, so no other live object has its id; `is` is a belt-and-braces check.
            if start > len(items) or entry.items[0] is not items[0]:
                continue
            if best is not None and start <= len(best[1].items):
                continue
            prefix = items[:start]
            if (prefix if isinstance(prefix, list) else list(prefix)) == entry.items:
                best = key, entry
        if best is None:
            return self._find_transient(items)
        self._entries.move_to_end(best[0])
        siblings = self._by_first[best[0][0]]  # least recently used first, as the entries
        siblings.remove(best[0])
        siblings.append(best[0])
        return PrefixHit(len(best[1].items), best[1].state, best[1].size, best[0])

    def _find_transient(self, items: Sequence[Item]) -> PrefixHit[S] | None:
        entry = self._transient
        if entry is None or entry.items[0] is not items[0] or len(entry.items) > len(items):
            return None
        prefix = items[:len(entry.items)]
        if (prefix if isinstance(prefix, list) else list(prefix)) != entry.items:
            return None
        return PrefixHit(len(entry.items), entry.state, entry.size, None)

    def put(self, items: Sequence[Item], state: S, hit: PrefixHit[S] | None, keep: bool = True) -> int:
        """Remember `state` as covering all of `items` (found with `hit`, whose entry it replaces: a linear chain
        keeps one entry); returns the items' JSON bytes (an upper bound: measured on the new items only, brackets
        and commas included). `keep=False`: a context whose item objects no later call will start with; it takes
        the transient slot, not an entry."""
        start, size = (hit.start, hit.size) if hit is not None else (0, 0)
        if hit is not None and start == len(items) and (hit.key is not None or not keep):
            return size  # nothing new: the entry found is this one
        if start < len(items):
            size += len(orjson.dumps(list(items[start:])))
        if not items or self.max_bytes <= 0:
            return size
        if not keep:
            self._transient = _Entry(list(items), state, size) if size <= self.max_bytes else None
            return size
        first = id(items[0])
        if hit is not None and hit.key is not None:
            self._remove(hit.key)
        key = (first, id(items[-1]))
        self._remove(key)
        if size > self.max_bytes:
            return size
        self._entries[key] = _Entry(list(items), state, size)
        self._bytes += size
        siblings = self._by_first.setdefault(first, [])
        siblings.append(key)
        if len(siblings) > self.BRANCHES:
            self._remove(siblings[0])
        while self._bytes > self.max_bytes:
            self._remove(next(iter(self._entries)))
        return size

    def drop(self, hit: PrefixHit[S]) -> None:
        """Forget the entry `hit` was found in (its state does not apply: the caller works afresh and puts its own)."""
        if hit.key is None:
            self._transient = None
        else:
            self._remove(hit.key)

    def _remove(self, key: tuple[int, int]) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._bytes -= entry.size
        siblings = self._by_first[key[0]]
        siblings.remove(key)
        if not siblings:
            del self._by_first[key[0]]
