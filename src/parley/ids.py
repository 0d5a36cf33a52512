"""Opaque object ids with the conventional OpenAI prefixes (resp_, msg_, fc_, call_, ...)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator


class RandomHex:
    """Random hex digits from the operating system's CSPRNG (what `secrets` reads), fetched 4 KiB at a time.

    `os.urandom` releases the GIL around its system call, so each call on the event loop is a point where the SQLite
    writer thread takes the GIL and the loop waits to get it back: four of them per request (three ids and the
    request id) cost ~8 µs per request under load, where one call per ~120 ids costs nothing measurable. Each
    34-digit piece is handed out once (a list iterator's `next` holds the GIL, so threads cannot share one); a
    forked child starts with pieces of its own. The process-wide buffer is this module's only state."""

    PIECE = 34  # hex digits: 136 bits
    _BATCH = 120  # pieces per read (4,080 bytes)

    def __init__(self) -> None:
        self._pieces: Iterator[str] = iter(())

    def reset(self) -> None:
        self._pieces = iter(())

    def take(self) -> str:
        try:
            return next(self._pieces)
        except StopIteration:
            digits = os.urandom(self.PIECE // 2 * self._BATCH).hex()
            self._pieces = pieces = iter([digits[i:i + self.PIECE] for i in range(0, len(digits), self.PIECE)])
            return next(pieces)


_RANDOM = RandomHex()
os.register_at_fork(after_in_child=_RANDOM.reset)


def random_hex(digits: int) -> str:
    """`digits` (at most 34) random hex digits, from the OS's CSPRNG."""
    return _RANDOM.take()[:digits]


def new_id(prefix: str, separator: str = "_") -> str:
    """`prefix_` + 14 hex digits of the creation time in µs + 34 random hex digits (136 bits). The separator
    may be another (OpenAI's file ids are `file-...`).

    Unguessable, and roughly increasing like OpenAI's own ids (theirs start with the time in seconds).
    Increasing keys append at the right edge of the database's B-tree indexes instead of landing on a
    random page: storing a response costs about a third of the CPU it does with fully random ids, with
    far fewer pages written to the WAL (bench/README.md).
    """
    return f"{prefix}{separator}{time.time_ns() // 1000:014x}{_RANDOM.take()}"


def id_time_us(object_id: str) -> int | None:
    """The creation time (µs since the epoch) an id made by `new_id` starts with; None for other ids."""
    head = object_id[-48:-34]
    try:
        return int(head, 16) if len(head) == 14 else None
    except ValueError:
        return None
