"""Waiting in tests on something observable, never on time: `eventually` looks at a condition until it holds. Its
limit fails a test whose condition never comes (instead of hanging the suite); it is far above how long the thing
takes on the busiest machine, and is no claim on how fast anything is (performance is measured in bench/)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

LIMIT_S = 120.0


async def eventually(condition: Callable[[], bool], what: str, limit_s: float = LIMIT_S) -> None:
    """Return once `condition()` is true (looked at every 20 ms); AssertionError naming `what` after `limit_s`."""
    try:
        async with asyncio.timeout(limit_s):
            for _ in iter(int, 1):  # (not `while`: ruff's ASYNC110 would have an Event, which a list does not give)
                if condition():
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"never happened within {limit_s:g} s: {what}") from None
