"""A WebSocket connection's memory of its recent responses (WebSocket mode's connection-local state).

A `previous_response_id` naming a response this connection remembers continues from memory, with no database
read; `store: false` chains live only here, so on another connection they are `previous_response_not_found`.
Anything else is loaded from storage (a stored chain continues on any connection and any replica). A response
remembers only its own items and what it continued from, so a long chain costs one entry per response, and
only the `limit` most recent responses can be continued from (their ancestors stay reachable through them).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

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

    def context(self) -> list[Item]:
        """The chain's items, oldest first: what the store's `load_context` gives for it."""
        parts: list[tuple[Item, ...]] = []
        node: Remembered | None = self
        while node is not None:
            parts.append(node.items)
            node = node.parent
        return [item for part in reversed(parts) for item in part]


def not_found(response_id: str) -> InvalidRequest:
    """WebSocket mode's error for a chain it cannot continue (OpenAI's code, status 400)."""
    return InvalidRequest(f"Previous response with id '{response_id}' not found.", param="previous_response_id",
                          code="previous_response_not_found")


class ConnectionMemory:
    """The recent responses of one connection, least recently used forgotten first."""

    def __init__(self, store: ContextSource, limit: int) -> None:
        self.store = store
        self._limit = limit
        self._recent: OrderedDict[str, Remembered] = OrderedDict()

    def get(self, project_id: str, response_id: str) -> Remembered | None:
        node = self._recent.get(response_id)
        if node is None or node.project_id != project_id:
            return None
        self._recent.move_to_end(response_id)
        return node

    def __contains__(self, response_id: str) -> bool:
        return response_id in self._recent

    def remember(self, response_id: str, node: Remembered) -> None:
        self._recent[response_id] = node
        self._recent.move_to_end(response_id)
        while len(self._recent) > self._limit:
            self._recent.popitem(last=False)

    def forget(self, response_id: str) -> None:
        """A continuation of `response_id` failed: its state is not reused (storage still has it if stored)."""
        self._recent.pop(response_id, None)

    def source(self) -> MemorySource:
        return MemorySource(self)


class MemorySource:
    """The context source of one `response.create`: memory first, then storage. It keeps what it continued
    from, so the new response can be remembered after it."""

    def __init__(self, memory: ConnectionMemory) -> None:
        self._memory = memory
        self.parent: Remembered | None = None

    async def load_context(self, project_id: str, response_id: str) -> list[Item] | None:
        node = self._memory.get(project_id, response_id)
        if node is None:
            loaded = await self._memory.store.load_context(project_id, response_id)
            if loaded is None:
                raise not_found(response_id)
            node = Remembered(project_id, tuple(loaded), None)
        self.parent = node
        return node.context()

    def remember(self, response_id: str, project_id: str, items: list[Item]) -> None:
        """The response just finished with `items` (its input, then its output) on top of what it continued from."""
        self._memory.remember(response_id, Remembered(project_id, tuple(items), self.parent))
