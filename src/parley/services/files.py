"""The files use case: store a file's bytes as they arrive and then make it visible; read, list and delete files
of a project (with hooks other services register, e.g. vector stores dropping a deleted file's chunks); sweep
expired files and uploads a crash cut short.

Other services use `get`, `open`, `read_bytes` and `create_from_bytes` (server-made files such as code
interpreter outputs); `on_delete` registers what must go when a file goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from parley.errors import InternalError, InvalidRequest, NotFound, PayloadTooLarge, RequestTimeout
from parley.ids import new_id
from parley.retrieval.extract import guess_media_type
from parley.store.base import FilePage, FileRecord, FileStore, PageQuery
from parley.store.blobs import BlobMissing, BlobStorage, DiskBlobs

log = logging.getLogger("parley.files")

# What a client may upload (api-surface.md §1.4), and what Parley itself may create.
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
OUTPUT_PURPOSES = ("assistants_output", "batch_output", "fine-tune-results")
MIN_EXPIRY_S = 3600
MAX_EXPIRY_S = 30 * 86400
BATCH_EXPIRY_S = 30 * 86400  # `batch` files expire after 30 days unless told otherwise
_SWEEP_MARGIN_S = 60  # an upload's row outlives its deadline by this before the sweeper may take it
_SWEEP_BATCH = 100

DeleteHook = Callable[[FileRecord], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class FileUpload:
    """What is known of a file besides its bytes. `content_type` is what the client declared (None or
    application/octet-stream: guessed from the file name)."""

    filename: str
    purpose: str
    expires_after_s: int | None = None
    content_type: str | None = None


Describe = Callable[[], FileUpload]


@dataclass(frozen=True, slots=True)
class FileLimits:
    max_bytes: int = 512 * 1024 * 1024
    upload_timeout_s: float = 3600.0
    sweep_interval_s: float = 300.0


def file_object(record: FileRecord) -> dict[str, Any]:
    """The wire `FileObject` (api-surface.md §1.4)."""
    return {
        "id": record.id, "object": "file", "bytes": record.bytes, "created_at": record.created_at,
        "expires_at": record.expires_at, "filename": record.filename, "purpose": record.purpose,
        "status": record.status, "status_details": record.status_details,
    }


def file_not_found(file_id: str, param: str | None = "file_id") -> NotFound:
    return NotFound(f"No such File object: {file_id}", param=param)


class FilesService:
    def __init__(self, store: FileStore, blobs: BlobStorage, limits: FileLimits,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._blobs = blobs
        self._limits = limits
        self._clock = clock
        self._hooks: list[DeleteHook] = []
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def max_bytes(self) -> int:
        return self._limits.max_bytes

    def on_delete(self, hook: DeleteHook) -> None:
        """Run `hook(record)` after a file is deleted (by the API or by expiry). A failing hook is logged; the
        file stays deleted."""
        self._hooks.append(hook)

    # -- create ------------------------------------------------------------------------------------

    async def create(
        self, project_id: str, chunks: AsyncIterable[bytes], describe: FileUpload | Describe
    ) -> FileRecord:
        """Store the bytes as they arrive (PayloadTooLarge past `max_bytes`), then the file. `describe` may be a
        function called once all bytes are in (a multipart form may carry its fields after the file); it may
        refuse with a 400. Unless this returns, nothing stays stored."""
        now = self._clock()
        file_id = new_id("file", "-")
        # The row comes first, invisible and expiring at the upload's deadline: an upload a crash cuts short
        # is swept like an expired file, its bytes with it.
        deadline = int(now + self._limits.upload_timeout_s + _SWEEP_MARGIN_S)
        pending = FileRecord(file_id, project_id, "", "", 0, int(now), deadline, "", status="uploading")
        await self._store.insert_file(pending)
        try:
            size = await self._blobs.write(file_id, _bounded(chunks, self._limits.max_bytes))
            upload = describe if isinstance(describe, FileUpload) else describe()
            record = self._finished(pending, upload, size)
            if not await self._store.complete_file(record):
                raise RequestTimeout("The upload took longer than the server allows; it was discarded.")
        except BaseException:
            await self._discard(project_id, file_id)
            raise
        return record

    async def create_from_bytes(self, project_id: str, upload: FileUpload, data: bytes) -> FileRecord:
        """A file Parley makes itself (e.g. `assistants_output`); any purpose of UPLOAD_PURPOSES or
        OUTPUT_PURPOSES."""

        async def once() -> AsyncIterator[bytes]:
            yield data

        return await self.create(project_id, once(), upload)

    def _finished(self, pending: FileRecord, upload: FileUpload, size: int) -> FileRecord:
        if upload.purpose not in UPLOAD_PURPOSES + OUTPUT_PURPOSES:
            raise InvalidRequest(f"Invalid purpose '{upload.purpose}'.", param="purpose")
        seconds = upload.expires_after_s
        if seconds is None and upload.purpose == "batch":
            seconds = BATCH_EXPIRY_S
        declared = (upload.content_type or "").split(";", 1)[0].strip().lower()
        if declared in ("", "application/octet-stream") or "/" not in declared or len(declared) > 255:
            declared = guess_media_type(upload.filename) or "application/octet-stream"
        return replace(pending, filename=upload.filename, purpose=upload.purpose, bytes=size, content_type=declared,
                       expires_at=pending.created_at + seconds if seconds is not None else None, status="processed")

    async def _discard(self, project_id: str, file_id: str) -> None:
        try:
            await self._blobs.delete(file_id)
            await self._store.delete_file(project_id, file_id)
        except Exception:  # the sweeper removes it later (the row expires at the upload's deadline)
            log.warning("could not discard the unfinished upload %s", file_id, exc_info=True)

    # -- read --------------------------------------------------------------------------------------

    async def get(self, project_id: str, file_id: str, *, param: str | None = "file_id") -> FileRecord:
        """The file, or NotFound naming `param` (also when it belongs to another project or has expired)."""
        record = await self._store.get_file(project_id, file_id, int(self._clock()))
        if record is None:
            raise file_not_found(file_id, param)
        return record

    async def list(self, project_id: str, purpose: str | None, page: PageQuery) -> FilePage:
        if purpose is not None and purpose not in UPLOAD_PURPOSES + OUTPUT_PURPOSES:
            allowed = ", ".join(UPLOAD_PURPOSES + OUTPUT_PURPOSES)
            raise InvalidRequest(f"Invalid value for 'purpose': expected one of {allowed}.", param="purpose")
        return await self._store.list_files(project_id, purpose, page, int(self._clock()))

    async def open(self, project_id: str, file_id: str, *, param: str | None = "file_id") -> AsyncIterator[bytes]:
        """The file's bytes, streamed in pieces of at most 1 MiB. NotFound is raised here, before any byte;
        bytes missing from storage are a 500 here too."""
        record = await self.get(project_id, file_id, param=param)
        pieces = self._blobs.read(file_id)
        try:
            first = await anext(pieces, b"")
        except BlobMissing:
            log.error("the bytes of file %s are missing from storage", file_id)
            raise InternalError(f"The content of {file_id} is missing from the server's storage.") from None
        return _checked(record, first, pieces)

    async def read_bytes(self, project_id: str, file_id: str, limit: int, *, param: str | None = "file_id") -> bytes:
        """The whole file, if it has at most `limit` bytes (else a 400 `file_too_large` naming `param`)."""
        record = await self.get(project_id, file_id, param=param)
        if record.bytes > limit:
            raise InvalidRequest(f"File {file_id} has {record.bytes} bytes; at most {limit} can be used here.",
                                 param=param, code="file_too_large")
        return b"".join([piece async for piece in await self.open(project_id, file_id, param=param)])

    # -- delete and expiry -------------------------------------------------------------------------

    async def delete(self, project_id: str, file_id: str) -> dict[str, Any]:
        # The file expires now, invisible at once; its bytes and what hooks keep of it go next, its row last. A
        # crash on the way leaves an expired row, which the sweeper finishes (it went first: a crash after it left
        # the bytes, and the file in its vector stores, for good).
        record, was_live = await self._store.expire_file(project_id, file_id, int(self._clock()))
        if record is None:
            raise file_not_found(file_id)
        await self._remove(record)
        if not was_live:
            raise file_not_found(file_id)  # it was already gone for the API; its remains are now too
        return {"id": file_id, "object": "file", "deleted": True}

    async def _remove(self, record: FileRecord) -> bool:
        """Its bytes, what hooks keep of it, then its row: the row is what says there is something left to remove.
        Every step may run twice (two replicas sweeping, a deletion and the sweeper); True for the call whose
        delete removed the row."""
        await self._blobs.delete(record.id)
        if record.status == "processed":  # else it was never visible: nothing can refer to it
            for hook in self._hooks:
                try:
                    await hook(record)
                except Exception:
                    log.exception("a file deletion hook failed for %s", record.id)
        return await self._store.delete_file(record.project_id, record.id) is not None

    async def sweep(self) -> int:
        """Delete every expired file (and stale upload) now; returns how many. Safe on several replicas at
        once: each file is deleted by exactly one of them."""
        removed = 0
        while True:
            expired = await self._store.expired_files(int(self._clock()), _SWEEP_BATCH)
            for record in expired:
                if await self._remove(record):
                    removed += 1
            if len(expired) < _SWEEP_BATCH:
                break
        if isinstance(self._blobs, DiskBlobs):
            await self._blobs.sweep_partial(self._limits.upload_timeout_s + _SWEEP_MARGIN_S, self._clock())
        return removed

    def start(self) -> None:
        """Sweep now and then every `sweep_interval_s`, until `stop()`."""
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="parley-files-sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def _sweep_forever(self) -> None:
        while True:
            try:
                removed = await self.sweep()
                if removed:
                    log.info("removed %d expired file(s)", removed)
            except Exception:
                log.exception("sweeping expired files failed; trying again later")
            await asyncio.sleep(self._limits.sweep_interval_s)


async def _bounded(chunks: AsyncIterable[bytes], limit: int) -> AsyncIterator[bytes]:
    size = 0
    async for piece in chunks:
        size += len(piece)
        if size > limit:
            raise PayloadTooLarge(f"The file is larger than the limit of {limit} bytes.")
        yield piece


async def _checked(record: FileRecord, first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The pieces, then a check that they add up to the file's size (a file deleted while it is read ends
    short: the reader must not take that for the whole file)."""
    size = len(first)
    if first:
        yield first
    async for piece in rest:
        size += len(piece)
        yield piece
    if size != record.bytes:
        raise OSError(f"file {record.id} ended after {size} of {record.bytes} bytes (deleted while read?)")
