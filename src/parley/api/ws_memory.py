"""A WebSocket connection's memory of its recent responses (WebSocket mode's connection-local state).

A `previous_response_id` naming a response this connection remembers continues from memory, with no database
read; `store: false` chains live only here, so on another connection they are `previous_response_not_found`.
Anything else is loaded from storage (a stored chain continues on any connection and any replica). A response
remembers only its own items and what it continued from, so a long chain costs one entry per response, and
only the `limit` most recent responses can be continued from (their ancestors stay reachable through them).

A stored response may be deleted meanwhile, here or on another process. Continuing a remembered chain that has
stored responses in it reads the store's deletion counter (the one the chain cache reads, bumped in every
deleting transaction); when it moved since those responses were last known to exist, they are looked up once
(one query) and a chain with a deleted one is forgotten and loaded from storage instead, which answers as it
does for any deleted response. A `store: false` chain is never read from the database.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from parley.errors import InvalidRequest
from parley.providers.base import Item
from parley.services.responses import ContextSource


@dataclass(frozen=True, slots=True)
class Remembered:
    """One response's items (its input, then its output) after what it continued from; or, with no parent, a
    whole chain as loaded from storage."""

    project_id: str
    items: tuple[Item, ...]
    parent: Remembered | None
    response_id: str
    stored: bool  # in the database (it may be deleted there)

    def chain(self) -> Iterator[Remembered]:
        """This node, then what it continued from, newest first."""
        node: Remembered | None = self
        while node is not None:
            yield node
            node = node.parent

    def context(self) -> list[Item]:
        """The chain's items, oldest first: what the store's `load_context` gives for it."""
        return [item for node in reversed(list(self.chain())) for item in node.items]


class MemoryStore(ContextSource, Protocol):
    """What the memory reads from storage: chains it does not have, and whether stored ones were deleted."""

    async def deletion_count(self) -> int: ...

    async def existing_responses(self, project_id: str, response_ids: Sequence[str]) -> set[str]: ...


def not_found(response_id: str) -> InvalidRequest:
    """WebSocket mode's error for a chain it cannot continue (OpenAI's code, status 400)."""
    return InvalidRequest(f"Previous response with id '{response_id}' not found.", param="previous_response_id",
                          code="previous_response_not_found")


class ConnectionMemory:
    """The recent responses of one connection, least recently used forgotten first."""

    def __init__(self, store: MemoryStore, limit: int) -> None:
        self.store = store
        self._limit = limit
        self._recent: OrderedDict[str, Remembered] = OrderedDict()
        self.deletions_seen = -1  # the store's deletion counter as last read (-1: not read yet)
        self._verified: dict[str, int] = {}  # stored response -> the counter at which it was known to exist

    async def get(self, project_id: str, response_id: str) -> Remembered | None:
        """The remembered chain, its stored responses checked against deletions; None: load it from storage."""
        node = self._recent.get(response_id)
        if node is None or node.project_id != project_id:
            return None
        stored = [n.response_id for n in node.chain() if n.stored]
        if stored:
            count = self.deletions_seen = max(self.deletions_seen, await self.store.deletion_count())
            unsure = [rid for rid in stored if self._verified.get(rid) != count]
            if unsure:
                existing = await self.store.existing_responses(project_id, unsure)
                if len(existing) < len(unsure):  # one was deleted: storage answers for this chain now
                    for rid in [response_id, *unsure]:
                        self.forget(rid)
                    return None
                self._verified.update(dict.fromkeys(unsure, count))
        if response_id in self._recent:  # another lane may have forgotten (or evicted) it during the awaits above
            self._recent.move_to_end(response_id)
        return node

    def verified(self, node: Remembered) -> None:
        """A stored node just made or loaded exists as of the counter read before it (conservative: a deletion
        in between only costs a lookup)."""
        if node.stored:
            self._verified[node.response_id] = self.deletions_seen

    def __contains__(self, response_id: str) -> bool:
        return response_id in self._recent

    def remember(self, response_id: str, node: Remembered) -> None:
        self._recent[response_id] = node
        self._recent.move_to_end(response_id)
        self.verified(node)
        while len(self._recent) > self._limit:
            old, _ = self._recent.popitem(last=False)
            self._verified.pop(old, None)  # an ancestor still reachable is looked up again if need be

    def forget(self, response_id: str) -> None:
        """A continuation of `response_id` failed, or it was deleted: its state is not reused (storage still has
        it if stored)."""
        self._recent.pop(response_id, None)
        self._verified.pop(response_id, None)

    def source(self) -> MemorySource:
        return MemorySource(self)


class MemorySource:
    """The context source of one `response.create`: memory first, then storage. It keeps what it continued
    from, so the new response can be remembered after it."""

    def __init__(self, memory: ConnectionMemory) -> None:
        self._memory = memory
        self.parent: Remembered | None = None

    async def load_context(self, project_id: str, response_id: str) -> list[Item] | None:
        node = await self._memory.get(project_id, response_id)
        if node is None:
            loaded = await self._memory.store.load_context(project_id, response_id)
            if loaded is None:
                raise not_found(response_id)
            node = Remembered(project_id, tuple(loaded), None, response_id, stored=True)
            self._memory.verified(node)
        self.parent = node
        return node.context()

    def remember(self, response_id: str, project_id: str, items: list[Item], stored: bool) -> None:
        """The response just finished with `items` (its input, then its output) on top of what it continued from."""
        self._memory.remember(response_id, Remembered(project_id, tuple(items), self.parent, response_id, stored))
