"""The containers use case: the Containers API (containers and their files, per project) and running code in a
container's persistent Python session for the code_interpreter tool, or shell commands for the container `shell`
tool (`shell`: their output comes back in frames while they run, sandbox/inside/driver.py).

The store is the truth: container rows, file rows, and the files' bytes in blob storage (the data dir with
SQLite, the database with PostgreSQL). A process that runs code keeps a working copy of the container's files
(sandbox/pool.py) for its session, synced back to the store after every call: files the code wrote, changed or
removed become container files (source `assistant`). A session lives in one process. On another process (or
after a restart, a timeout, an eviction) the next call starts a new session from the stored files and the model
is told its variables are gone; files written through the API on any process reach a live session's copy
before its next call (`files_generation`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parley.config import CodeInterpreterConfig
from parley.errors import InvalidRequest, NotFound, ParleyError, PayloadTooLarge
from parley.ids import new_id
from parley.sandbox import workdir
from parley.sandbox.detect import Sandbox, detect
from parley.sandbox.launch import Limits, Runtime
from parley.sandbox.pool import KnownFile, PoolFull, SessionPool, Slot
from parley.sandbox.session import CellResult, PythonSession, Quota, SessionFailed, ShellFrame, ShellRequest
from parley.schema.containers import MEMORY_BYTES, CreateContainerRequest
from parley.services.files import FilesService
from parley.store.base import ContainerFileRecord, ContainerRecord, ContainerStore, PageQuery
from parley.store.blobs import BlobMissing, BlobStorage

log = logging.getLogger("parley.containers")
DATA_ROOT = "/mnt/data/"
_MEMORY_ORDER = ["1g", "4g", "16g", "64g"]
SHELL_GRACE_S = 5.0  # how long past a shell call's deadline its answer may take (the driver kills at the deadline)
RESTARTED = ("Note: this call ran in a new Python session; variables, imports and functions from earlier calls "
             "are gone (the files in /mnt/data were kept).")


class CodeUnavailable(ParleyError):
    """No sandbox works on this host, or every session slot is busy: the call cannot run."""

    def __init__(self, message: str) -> None:
        super().__init__(message, None, "code_interpreter_unavailable", 503, "server_error")


def container_object(record: ContainerRecord, now: float) -> dict[str, Any]:
    """The wire container (api-surface.md §1.6)."""
    return {
        "id": record.id, "object": "container", "created_at": record.created_at, "name": record.name,
        "status": status_of(record, now), "last_active_at": record.last_active_at,
        "expires_after": {"anchor": "last_active_at", "minutes": record.expires_minutes},
        "memory_limit": record.memory_limit, "network_policy": {"type": "disabled"},
    }


def status_of(record: ContainerRecord, now: float) -> str:
    if record.status == "running" and record.last_active_at + record.expires_minutes * 60 <= now:
        return "expired"  # the sweeper has not got to it yet
    return record.status


def container_file_object(record: ContainerFileRecord) -> dict[str, Any]:
    return {"id": record.id, "object": "container.file", "container_id": record.container_id,
            "created_at": record.created_at, "bytes": record.bytes, "path": record.path, "source": record.source}


def upload_path(filename: str) -> str:
    """Where an uploaded (or copied) file lands: /mnt/data/<its base name>."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    try:
        workdir.split(name)
    except workdir.UnsafePath:
        raise InvalidRequest(f"The file name {filename[:100]!r} cannot be used in a container.",
                             param="file") from None
    return DATA_ROOT + name


@dataclass(slots=True)
class RunOutcome:
    """One call's result, the files it wrote or changed (now container files), and notes for the model."""

    container_id: str
    result: CellResult
    files: list[ContainerFileRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class ContainersService:
    def __init__(self, store: ContainerStore, blobs: BlobStorage, files: FilesService, config: CodeInterpreterConfig,
                 work_dir: Path, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._blobs = blobs
        self._files = files
        self._config = config
        self._work_dir = work_dir
        self._clock = clock
        self._pool: SessionPool | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._detecting: asyncio.Task[Sandbox] | None = None
        self.sandbox = Sandbox(None, Runtime.of(config.python), "not detected yet")

    async def detect(self, private: list[Path]) -> Sandbox:
        """Find the sandbox this host allows (sandbox/detect.py) and set up this process's session pool; a
        crashed process's leftovers are removed first."""
        cfg = self._config
        removed = await asyncio.to_thread(SessionPool.clean_leftovers, self._work_dir)
        if removed:
            log.info("removed the container copies of %d process(es) that are gone", removed)
        sandbox = await detect(cfg.sandbox, bwrap=cfg.bwrap_path, python=cfg.python, uid_base=cfg.sandbox_uid_base,
                               private=private)
        self.sandbox = sandbox
        if sandbox.available:
            self._pool = SessionPool(sandbox, self._work_dir, cfg.max_sessions)
            log.info("code_interpreter sandbox: %s", sandbox.describe())
        else:
            log.warning("code_interpreter is unavailable: no sandbox works on this host (%s); set "
                        "[code_interpreter] sandbox = \"insecure-no-sandbox\" only on a machine you do not share",
                        sandbox.reason)
        return sandbox

    def start_detection(self, private: list[Path]) -> None:
        """Detect in the background (start-up stays fast); `ready()` waits for it."""
        self._detecting = asyncio.create_task(self.detect(private), name="parley-sandbox-detect")

    async def ready(self) -> Sandbox:
        if self._detecting is not None:
            return await asyncio.shield(self._detecting)
        return self.sandbox

    # -- containers --------------------------------------------------------------------------------

    async def create(self, project_id: str, body: CreateContainerRequest) -> ContainerRecord:
        memory = body.memory_limit or "1g"
        if _MEMORY_ORDER.index(memory) > _MEMORY_ORDER.index(self._config.max_memory_limit):
            raise InvalidRequest(f"memory_limit {memory} is above this server's maximum of "
                                 f"{self._config.max_memory_limit}.", param="memory_limit")
        now = int(self._clock())
        cfg = self._config
        if await self._store.count_containers(project_id, now) >= cfg.max_containers_per_project:
            raise InvalidRequest(f"This project has {cfg.max_containers_per_project} running containers, the "
                                 "most allowed; delete one or let one expire.", code="container_limit_reached")
        if await self._store.count_containers(None, now) >= cfg.max_containers:
            raise InvalidRequest("This server runs as many containers as it allows; try again later.",
                                 code="container_limit_reached")
        minutes = body.expires_after.minutes if body.expires_after else cfg.default_expiry_minutes
        record = ContainerRecord(new_id("cntr"), project_id, body.name, now, now, minutes, memory)
        # The files' bytes first (pending), then the container with their rows in one transaction: a crash never
        # leaves a container without the files it was created with, and its bytes are swept.
        files: dict[str, ContainerFileRecord] = {}  # by path: a later file of the same name replaces an earlier one
        try:
            for index, file_id in enumerate(body.file_ids or ()):
                param = f"file_ids[{index}]"
                file = await self._files.get(project_id, file_id, param=param)
                data = await self._files.read_bytes(project_id, file_id, cfg.max_file_bytes, param=param)
                copied = ContainerFileRecord(new_id("cfile"), record.id, project_id, upload_path(file.filename),
                                             len(data), "user", now)
                await self._write_blob(copied.id, data)
                replaced = files.pop(copied.path, None)
                files[copied.path] = copied
                if replaced is not None:
                    await self._forget_blobs([replaced.id])
            await self._store.insert_container(record, list(files.values()))
        except BaseException:
            await self._forget_blobs([f.id for f in files.values()])
            raise
        return record

    async def create_auto(self, project_id: str, file_ids: list[str], memory_limit: str | None) -> str:
        """A container for a response's `code_interpreter` tool with `container: {"type": "auto"}`."""
        body = CreateContainerRequest(name="code_interpreter (auto)", file_ids=file_ids or None,
                                      memory_limit=memory_limit)
        return (await self.create(project_id, body)).id

    async def get(self, project_id: str, container_id: str) -> ContainerRecord:
        record = await self._store.get_container(project_id, container_id)
        if record is None:
            raise NotFound(f"No container found with id '{container_id}'.", param="container_id")
        return record

    async def running(self, project_id: str, container_id: str, param: str = "container_id") -> ContainerRecord:
        """The container, if it can run code (404 if unknown, 400 if expired)."""
        record = await self._store.get_container(project_id, container_id)
        if record is None:
            raise NotFound(f"No container found with id '{container_id}'.", param=param)
        if status_of(record, self._clock()) != "running":
            raise InvalidRequest(f"Container '{container_id}' has expired; create a new one.", param=param,
                                 code="container_expired")
        return record

    async def list_containers(self, project_id: str, name: str | None,
                              page: PageQuery) -> tuple[list[ContainerRecord], bool]:
        return await self._store.list_containers(project_id, name, page)

    async def delete(self, project_id: str, container_id: str) -> None:
        file_ids = await self._store.delete_container(project_id, container_id)
        if file_ids is None:
            raise NotFound(f"No container found with id '{container_id}'.", param="container_id")
        await self._forget(container_id, file_ids)

    async def _write_blob(self, key: str, data: bytes) -> None:
        """A container file's bytes, pending until the transaction that inserts its row (the sweeper removes them
        `orphan_grace_s` later if that never commits: the process died)."""
        await self._store.pend_blobs([key], int(self._clock() + self._config.orphan_grace_s))
        await self._blobs.write(key, _once(data))

    async def _forget_blobs(self, keys: list[str]) -> None:
        """Remove bytes whose rows are gone (or never came), then their pending entries. Interrupted, the entries
        stay and the sweeper finishes."""
        for key in keys:
            await self._blobs.delete(key)
        await self._store.drop_pending_blobs(keys)

    async def _forget(self, container_id: str, file_ids: list[str]) -> None:
        await self._forget_blobs(file_ids)
        if self._pool is not None:
            async with self._pool.hold(container_id):
                await self._pool.drop(container_id)

    def now(self) -> float:
        return self._clock()

    @property
    def config(self) -> CodeInterpreterConfig:
        return self._config

    # -- files -------------------------------------------------------------------------------------

    async def add_file(self, project_id: str, container_id: str, path: str, data: bytes,
                       source: str = "user") -> ContainerFileRecord:
        """Store a file (replacing one at the same path) and place it in a live session's working copy."""
        await self.running(project_id, container_id)
        if len(data) > self._config.max_file_bytes:
            raise PayloadTooLarge(f"A container file may have at most {self._config.max_file_bytes} bytes.")
        record = ContainerFileRecord(new_id("cfile"), container_id, project_id, path, len(data), source,
                                     int(self._clock()))
        await self._write_blob(record.id, data)
        try:
            generation, replaced = await self._store.change_container_files(container_id, [record], [])
        except BaseException:
            await self._forget_blobs([record.id])
            raise
        await self._forget_blobs(replaced)
        await self._store.touch_container(container_id, int(self._clock()), None)
        if self._pool is not None:
            async with self._pool.hold(container_id) as slot:
                if slot.workdir is not None:
                    relative = path.removeprefix(DATA_ROOT)
                    entry = await asyncio.to_thread(workdir.write_file, slot.workdir, relative, data, slot.uid)
                    slot.known[relative] = KnownFile(record.id, entry)
                    slot.generation = generation if generation == slot.generation + 1 else -1
        return record

    async def copy_file(self, project_id: str, container_id: str, file_id: str,
                        param: str = "file_id") -> ContainerFileRecord:
        """A File (`/v1/files`) copied into the container under its file name."""
        file = await self._files.get(project_id, file_id, param=param)
        data = await self._files.read_bytes(project_id, file_id, self._config.max_file_bytes, param=param)
        return await self.add_file(project_id, container_id, upload_path(file.filename), data)

    async def ensure_files(self, project_id: str, container_id: str, file_ids: list[str]) -> None:
        """Copy in the Files whose path (/mnt/data/<filename>) the container does not have yet."""
        present = {row.path for row in await self._store.all_container_files(container_id)}
        for file_id in file_ids:
            file = await self._files.get(project_id, file_id, param="file_ids")
            if upload_path(file.filename) not in present:
                await self.copy_file(project_id, container_id, file_id, param="file_ids")

    async def list_files(self, project_id: str, container_id: str,
                         page: PageQuery) -> tuple[list[ContainerFileRecord], bool]:
        await self.get(project_id, container_id)
        return await self._store.list_container_files(project_id, container_id, page)

    async def get_file(self, project_id: str, container_id: str, file_id: str) -> ContainerFileRecord:
        await self.get(project_id, container_id)
        record = await self._store.get_container_file(project_id, container_id, file_id)
        if record is None:
            raise NotFound(f"No file found with id '{file_id}' in container '{container_id}'.", param="file_id")
        return record

    async def open_file(self, project_id: str, container_id: str, file_id: str) -> AsyncIterator[bytes]:
        await self.get_file(project_id, container_id, file_id)
        pieces = self._blobs.read(file_id)
        try:
            first = await anext(pieces, b"")
        except BlobMissing:
            raise NotFound(f"The content of '{file_id}' is gone.", param="file_id") from None
        return _prepend(first, pieces)

    async def delete_file(self, project_id: str, container_id: str, file_id: str) -> None:
        record = await self.get_file(project_id, container_id, file_id)
        generation, _ = await self._store.change_container_files(container_id, [], [file_id])
        await self._forget_blobs([file_id])
        if self._pool is not None:
            async with self._pool.hold(container_id) as slot:
                if slot.workdir is not None:
                    relative = record.path.removeprefix(DATA_ROOT)
                    await asyncio.to_thread(workdir.remove_file, slot.workdir, relative)
                    slot.known.pop(relative, None)
                    slot.generation = generation if generation == slot.generation + 1 else -1

    # -- running code ------------------------------------------------------------------------------

    async def run(self, project_id: str, container_id: str, code: str) -> RunOutcome:
        """Run `code` in the container's session (started, or restarted from the stored files, as needed)."""
        timeout_s = self._config.cell_timeout_s
        return await self._in_session(project_id, container_id,
                                      lambda session, quota: session.run(code, timeout_s, quota))

    async def shell(self, project_id: str, container_id: str, request: ShellRequest,
                    on_frame: Callable[[ShellFrame], None]) -> RunOutcome:
        """Run shell commands in the container's session, their output to `on_frame` as it comes. The session
        waits `SHELL_GRACE_S` past the commands' deadline for the driver's answer before it is killed."""
        timeout_s = request.deadline_s + SHELL_GRACE_S
        return await self._in_session(project_id, container_id,
                                      lambda session, quota: session.shell(request, timeout_s, quota, on_frame))

    async def _in_session(self, project_id: str, container_id: str,
                          act: Callable[[PythonSession, Quota], Awaitable[CellResult]]) -> RunOutcome:
        await self.ready()
        pool = self._pool
        if pool is None or not self.sandbox.available:
            raise CodeUnavailable(f"Code cannot run on this server: {self.sandbox.reason}.")
        cfg = self._config
        async with pool.hold(container_id) as slot:
            container = await self.running(project_id, container_id)
            outcome = RunOutcome(container_id, CellResult(False))
            if not slot.live or container.session_owner != slot.token:
                await self._start(slot, container)
                if container.session_owner is not None:
                    outcome.notes.append(RESTARTED)
            else:
                if container.files_generation != slot.generation:
                    await self._reconcile(slot, container)
                await self._store.touch_container(container_id, int(self._clock()), None)
            assert slot.session is not None and slot.workdir is not None
            quota = Quota(cfg.disk_quota_bytes, cfg.max_files)
            outcome.result = await act(slot.session, quota)
            if outcome.result.ended == "disk":  # the copy is over quota: dropped, the stored files stay
                await pool.stop(slot, keep_index=True)
                return outcome
            outcome.files = await self._sync(slot, container)
            if outcome.result.ended is not None:
                await pool.stop(slot, keep_index=True)
            return outcome

    async def _start(self, slot: Slot, container: ContainerRecord) -> None:
        assert self._pool is not None
        cfg = self._config
        try:
            await self._pool.prepare(slot)
            await self._reconcile(slot, container)
            limits = Limits(MEMORY_BYTES[container.memory_limit], cfg.session_cpu_s, cfg.max_processes,
                            cfg.max_file_bytes, tmp_bytes=cfg.tmp_bytes)
            await self._pool.start(slot, limits, max_log_bytes=cfg.max_output_chars * 4,
                                   timeout_s=cfg.start_timeout_s)
        except PoolFull as err:
            raise CodeUnavailable(str(err)) from None
        except SessionFailed as err:
            await self._pool.stop(slot, keep_index=True)
            log.error("a code session for %s could not start: %s", container.id, err)
            raise CodeUnavailable(f"The code session could not start ({err}).") from None
        await self._store.touch_container(container.id, int(self._clock()), slot.token)

    async def _reconcile(self, slot: Slot, container: ContainerRecord) -> None:
        """Make the working copy hold exactly the stored files."""
        assert slot.workdir is not None
        rows = await self._store.all_container_files(container.id)
        wanted = {row.path.removeprefix(DATA_ROOT): row for row in rows}
        for relative in [r for r in slot.known if r not in wanted]:
            await asyncio.to_thread(workdir.remove_file, slot.workdir, relative)
            del slot.known[relative]
        for relative, row in wanted.items():
            known = slot.known.get(relative)
            if known is not None and known.file_id == row.id:
                continue
            try:
                data = b"".join([piece async for piece in self._blobs.read(row.id)])
            except BlobMissing:
                log.warning("container file %s of %s has no stored bytes", row.id, container.id)
                continue
            entry = await asyncio.to_thread(workdir.write_file, slot.workdir, relative, data, slot.uid)
            slot.known[relative] = KnownFile(row.id, entry)
        slot.generation = container.files_generation

    async def _sync(self, slot: Slot, container: ContainerRecord) -> list[ContainerFileRecord]:
        """Store what the call changed in the working copy; the new or changed files."""
        assert slot.workdir is not None
        cfg = self._config
        found = await asyncio.to_thread(workdir.scan, slot.workdir, cfg.max_files)
        if found is None:
            return []
        added: list[ContainerFileRecord] = []
        entries: dict[str, workdir.Entry] = {}
        now = int(self._clock())
        changed = {relative: new_id("cfile") for relative, entry in found.items()
                   if (known := slot.known.get(relative)) is None or known.entry != entry}
        if changed:  # pending in one transaction, not one per file (a key left unused is just swept)
            await self._store.pend_blobs(list(changed.values()), int(self._clock() + cfg.orphan_grace_s))
        for relative, key in changed.items():
            data = await asyncio.to_thread(workdir.read_file, slot.workdir, relative, cfg.max_file_bytes)
            if data is None:
                continue
            record = ContainerFileRecord(key, container.id, container.project_id, DATA_ROOT + relative, len(data),
                                         "assistant", now)
            await self._blobs.write(record.id, _once(data))
            added.append(record)
            entries[relative] = found[relative]
        if unused := [key for relative, key in changed.items() if relative not in entries]:
            await self._store.drop_pending_blobs(unused)  # unreadable now: nothing was written
        removed = {r: k.file_id for r, k in slot.known.items() if r not in found}
        if not added and not removed:
            return []
        generation, replaced = await self._store.change_container_files(container.id, added, list(removed.values()))
        await self._forget_blobs([*removed.values(), *replaced])
        for relative in removed:
            del slot.known[relative]
        for record in added:
            relative = record.path.removeprefix(DATA_ROOT)
            slot.known[relative] = KnownFile(record.id, entries[relative])
        slot.generation = generation if generation == slot.generation + 1 else -1
        return added

    # -- expiry ------------------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Expire idle containers (their files go) and stop local sessions of containers gone elsewhere."""
        now = int(self._clock())
        expired = await self._store.expire_containers(now, 100)
        for container_id, file_ids in expired:
            await self._forget(container_id, file_ids)
        # Bytes a crash left without a row: written for one that never committed, or left by one deleted.
        while due := await self._store.due_blobs(now, 100):
            await self._forget_blobs(due)
        if self._pool is not None:
            local = self._pool.live_containers()
            alive = await self._store.running_containers(local, now)
            for container_id in local:
                if container_id not in alive:
                    async with self._pool.hold(container_id):
                        await self._pool.drop(container_id)
        return len(expired)

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="parley-containers-sweeper")

    async def stop(self) -> None:
        if self._detecting is not None and not self._detecting.done():
            self._detecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._detecting
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._pool is not None:
            await self._pool.close()

    async def _sweep_forever(self) -> None:
        while True:
            try:
                removed = await self.sweep()
                if removed:
                    log.info("expired %d idle container(s)", removed)
            except Exception:
                log.exception("expiring containers failed; trying again later")
            await asyncio.sleep(self._config.sweep_interval_s)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for piece in rest:
        yield piece
