"""The model turn of a response that generates nothing (WebSocket mode's `generate: false`).

It stands where the upstream stream would: it finishes at once with no output and no usage, so such a
response still goes through the one stream builder (its events, numbered from 0) and the one storage path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from parley.providers.base import Finish, ModelEvent


class EmptyTurn:
    """A ModelStream that ends its turn at once."""

    def __aiter__(self) -> AsyncIterator[list[ModelEvent]]:
        return self._events()

    async def _events(self) -> AsyncIterator[list[ModelEvent]]:
        yield [Finish("stop")]

    async def aclose(self) -> None:
        return None
