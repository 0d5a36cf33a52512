"""Steering: input a client adds to a running response (WebSocket mode's `response.steer`).

Steering can be committed only where the model is asked again within the response: after a turn that called
built-in tools, the next turn's context is the previous call + that turn's output + the tool results
(engine/turns.py), and accepted steering input joins it there, after the tool results. A response with no
further model turn (no built-in tool, or its last turn running) cannot take it: what is pending when the run
ends is returned uncommitted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from parley.providers.base import Item


@dataclass(frozen=True, slots=True)
class SteerInput:
    """One accepted submission: its id, its items as stored (with the response's input) and as the model
    gets them (files resolved), and the input as the client sent it (returned as it was if never committed)."""

    steer_id: str
    stored: list[Item]
    model: list[Item]
    sent: str | list[Item]


@dataclass(slots=True)
class Steering:
    """The inbox of one running response. `on_commit` is told which items joined the response (they are
    stored with its input items, after the request's own)."""

    on_commit: Callable[[list[Item]], None]
    limit: int = 8  # pending submissions at once (more: too_many_pending_steers)
    pending: list[SteerInput] = field(default_factory=list)
    open: bool = True

    def offer(self, steer: SteerInput) -> bool:
        """Queue `steer` for the next model turn; False if too many are pending."""
        if len(self.pending) >= self.limit:
            return False
        self.pending.append(steer)
        return True

    def commit(self) -> list[Item]:
        """The model items of every pending submission, for the turn being opened (in submission order)."""
        taken, self.pending = self.pending, []
        model: list[Item] = []
        for steer in taken:
            self.on_commit(steer.stored)
            model += steer.model
        return model

    def close(self) -> list[SteerInput]:
        """The response takes no more input: what was never committed."""
        self.open = False
        left, self.pending = self.pending, []
        return left
