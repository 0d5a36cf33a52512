"""This process's live Python sessions, one per container at most: their locks, directories and uids, the
least-recently-used eviction when `max_sessions` are live, and the clean-up of what a crashed process left.

Each process keeps its working copies under `<work_dir>/<pid>-<random>/`, holding an exclusive flock on
`<that>.lock` for its whole life; at start-up, every sibling directory whose lock can be taken belonged to a
process that is gone and is removed (its sessions died with it: bubblewrap's --die-with-parent, the fallback's
PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from parley.sandbox import workdir
from parley.sandbox.detect import Sandbox
from parley.sandbox.launch import Limits, SessionSpec
from parley.sandbox.session import PythonSession
from parley.sandbox.workdir import Entry

log = logging.getLogger("parley.sandbox")


class PoolFull(Exception):
    """Every session slot is busy running a cell."""


@dataclass(slots=True)
class KnownFile:
    """A file of the working copy as last synced with the store."""

    file_id: str
    entry: Entry


@dataclass(slots=True)
class Slot:
    """One container's place in this process: its lock (one call at a time), its session and working copy."""

    container_id: str
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    session: PythonSession | None = None
    token: str | None = None  # the container's session_owner while this session is the container's
    index: int | None = None  # uid slot
    workdir: Path | None = None
    tmpdir: Path | None = None
    known: dict[str, KnownFile] = field(default_factory=dict)
    generation: int = -1  # the container's files_generation the working copy reflects
    uid: int | None = None

    @property
    def live(self) -> bool:
        return self.session is not None and self.session.alive


class SessionPool:
    def __init__(self, sandbox: Sandbox, work_dir: Path, max_sessions: int) -> None:
        self.sandbox = sandbox
        self.max_sessions = max_sessions
        self.instance = f"{os.getpid()}-{secrets.token_hex(4)}"
        work_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(work_dir, 0o711)  # other host users cannot list the containers' copies
        self.root = work_dir / self.instance
        self._lock_fd = os.open(work_dir / f"{self.instance}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.root.mkdir(mode=0o711)
        self._slots: dict[str, Slot] = {}
        self._free = list(range(max_sessions))
        self._counter = 0

    @staticmethod
    def clean_leftovers(work_dir: Path) -> int:
        """Remove the working copies of processes that are gone (their lock file is free); how many."""
        removed = 0
        if not work_dir.is_dir():
            return 0
        for lock in work_dir.glob("*.lock"):
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live process
            finally:
                os.close(fd)
            workdir.destroy(work_dir / lock.stem)
            lock.unlink(missing_ok=True)
            removed += 1
        return removed

    def slot(self, container_id: str) -> Slot:
        slot = self._slots.get(container_id)
        if slot is None:
            slot = self._slots[container_id] = Slot(container_id)
        return slot

    def live_containers(self) -> list[str]:
        return [cid for cid, slot in self._slots.items() if slot.workdir is not None]

    @contextlib.asynccontextmanager
    async def hold(self, container_id: str) -> AsyncIterator[Slot]:
        """The container's slot, locked (calls of one container run one at a time)."""
        slot = self.slot(container_id)
        try:
            async with slot.lock:
                yield slot
        finally:
            # A container that has no working copy here (only its files were touched) is not kept.
            if slot.workdir is None and slot.index is None and not slot.lock.locked() and \
                    self._slots.get(container_id) is slot:
                del self._slots[container_id]

    async def start(self, slot: Slot, limits: Limits, *, max_log_bytes: int, timeout_s: float) -> None:
        """A new session in a new, empty working copy (the caller holds the slot and fills the copy first via
        `prepare`)."""
        assert slot.workdir is not None and slot.tmpdir is not None
        spec = SessionSpec(slot.workdir, slot.tmpdir, slot.uid, limits, max_log_bytes=max_log_bytes)
        slot.session = await PythonSession.start(
            self.sandbox.command(spec), slot.workdir, slot.uid, kill_by_uid=self.sandbox.kills_by_uid,
            timeout_s=timeout_s, max_line_bytes=max_log_bytes * 8 + 16 * 1024 * 1024,
        )
        if self.sandbox.kind != "bubblewrap":  # bubblewrap's /tmp is a tmpfs of its own size
            slot.session.watched.append(slot.tmpdir)
        self._counter += 1
        slot.token = f"{self.instance}:{self._counter}"

    async def prepare(self, slot: Slot) -> None:
        """A fresh, empty working copy for the slot (the old one, if any, is removed; its session killed)."""
        await self.stop(slot, keep_index=True)
        if slot.index is None:
            slot.index = await self._take_index(slot)
        base = self.sandbox.uid_base
        slot.uid = base + slot.index if base is not None else None
        name = f"{slot.container_id}-{secrets.token_hex(3)}"
        slot.workdir, slot.tmpdir = self.root / name, self.root / f"{name}.tmp"
        await asyncio.to_thread(workdir.prepare, slot.workdir, slot.uid)
        await asyncio.to_thread(workdir.prepare, slot.tmpdir, slot.uid)
        slot.known = {}
        slot.generation = -1

    async def _take_index(self, asking: Slot) -> int:
        if not self._free:
            victims = [s for s in self._slots.values()
                       if s is not asking and s.index is not None and not s.lock.locked()]
            if not victims:
                raise PoolFull("every code session of this server is busy; try again shortly")
            oldest = min(victims, key=lambda s: s.session.last_used if s.session is not None else 0.0)
            log.info("stopping the idle session of %s to make room", oldest.container_id)
            await self.drop(oldest.container_id)
        return self._free.pop(0)

    async def stop(self, slot: Slot, *, keep_index: bool = False) -> None:
        """Kill the slot's session and remove its working copy."""
        if slot.session is not None:
            await slot.session.kill()
            slot.session = None
        slot.token = None
        for directory in (slot.workdir, slot.tmpdir):
            if directory is not None:
                await asyncio.to_thread(workdir.destroy, directory)
        slot.workdir = slot.tmpdir = None
        slot.known = {}
        slot.generation = -1
        if not keep_index and slot.index is not None:
            self._free.append(slot.index)
            slot.index = None

    async def drop(self, container_id: str) -> None:
        """Forget a container here (deleted, expired, evicted)."""
        slot = self._slots.pop(container_id, None)
        if slot is not None:
            await self.stop(slot)

    async def close(self) -> None:
        for container_id in list(self._slots):
            await self.drop(container_id)
        await asyncio.to_thread(workdir.destroy, self.root)
        (self.root.parent / f"{self.instance}.lock").unlink(missing_ok=True)
        os.close(self._lock_fd)
