"""Where file bytes live, behind one small protocol: a directory (`data_dir/files`) or the database
(`file_chunks`, 1 MiB blocks, so every replica sharing a PostgreSQL database reads them).

Bytes are always streamed, in and out, in pieces of at most `CHUNK_BYTES`: a file is never held whole in
memory. An S3-compatible bucket would be a third implementation of `BlobStorage` (multipart upload, ranged
GETs); none is built, since nothing here could test it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import IO, Protocol

from parley.config import Settings
from parley.store.base import FileChunkStore

CHUNK_BYTES = 1024 * 1024
_KEY = re.compile(r"[A-Za-z0-9_-]{8,128}")


class BlobMissing(Exception):
    """No bytes are stored under this key."""


class BlobStorage(Protocol):
    async def write(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """Store the bytes as they arrive; returns how many. If `chunks` raises (or storing fails), nothing
        stays stored and the error propagates."""

    def read(self, key: str) -> AsyncIterator[bytes]:
        """The bytes, in order, in pieces of at most CHUNK_BYTES; BlobMissing (at the first piece) if none."""

    async def delete(self, key: str) -> None:
        """Remove the bytes; nothing happens if there are none."""


async def rechunk(chunks: AsyncIterable[bytes], size: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
    """Pieces of exactly `size` bytes (the last one shorter), whatever sizes arrive."""
    buffer = bytearray()
    async for piece in chunks:
        buffer += piece
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


def _check(key: str) -> str:
    if _KEY.fullmatch(key) is None:  # keys are Parley's own ids; never a path
        raise ValueError(f"invalid blob key {key!r}")
    return key


class DiskBlobs:
    """Files under `root`, sharded by the key's last two characters. A write goes to `root/.tmp/<key>.part`,
    is fsync'd, then renamed into place (and the directory fsync'd): a crash never leaves a partial file
    under its final name. File work runs in threads, one per 1 MiB piece."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / _check(key)[-2:] / key

    async def write(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        final = self.path(key)
        temp = self.root / ".tmp" / f"{key}.part"
        out = await asyncio.to_thread(_create, temp)
        size = 0
        try:
            async for piece in rechunk(chunks):
                await asyncio.to_thread(out.write, piece)
                size += len(piece)
            await asyncio.to_thread(_commit, out, temp, final)
        except BaseException:
            out.close()
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        return size

    async def read(self, key: str) -> AsyncIterator[bytes]:
        try:
            source = await asyncio.to_thread(open, self.path(key), "rb")
        except FileNotFoundError:
            raise BlobMissing(key) from None
        try:
            while piece := await asyncio.to_thread(source.read, CHUNK_BYTES):
                yield piece
        finally:
            source.close()

    async def delete(self, key: str) -> None:
        """The bytes, and a write of them a crash cut short (its `.part`)."""
        await asyncio.to_thread(_unlink, self.path(key), self.root / ".tmp" / f"{key}.part")

    async def sweep_partial(self, older_than_s: float, now: float) -> int:
        """Remove `.part` files older than `older_than_s` (uploads a crash cut short)."""
        return await asyncio.to_thread(_sweep_partial, self.root / ".tmp", now - older_than_s)


def _unlink(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _create(temp: Path) -> IO[bytes]:
    temp.parent.mkdir(parents=True, exist_ok=True)
    return temp.open("wb")


def _commit(out: IO[bytes], temp: Path, final: Path) -> None:
    out.flush()
    os.fsync(out.fileno())
    out.close()
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(temp, final)
    _fsync_dir(final.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sweep_partial(directory: Path, cutoff: float) -> int:
    removed = 0
    if not directory.is_dir():
        return 0
    for entry in directory.iterdir():
        with contextlib.suppress(OSError):
            if entry.suffix == ".part" and entry.stat().st_mtime < cutoff:
                entry.unlink()
                removed += 1
    return removed


class DatabaseBlobs:
    """Bytes in the database's `file_chunks` table, one row per 1 MiB block, each written in its own short
    transaction: a slow upload never holds a pooled connection (or a transaction) between two blocks. Reads
    fetch one block per query."""

    def __init__(self, store: FileChunkStore) -> None:
        self.store = store

    async def write(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        size = 0
        seq = 0
        try:
            async for piece in rechunk(chunks):
                await self.store.put_file_chunk(_check(key), seq, piece)
                seq += 1
                size += len(piece)
            if seq == 0:  # an empty file still has a block: "no blocks" means "no such bytes"
                await self.store.put_file_chunk(key, 0, b"")
        except BaseException:
            await self.store.delete_file_chunks(key)
            raise
        return size

    async def read(self, key: str) -> AsyncIterator[bytes]:
        seq = 0
        while (piece := await self.store.get_file_chunk(key, seq)) is not None:
            if piece:
                yield piece
            seq += 1
        if seq == 0:
            raise BlobMissing(key)

    async def delete(self, key: str) -> None:
        await self.store.delete_file_chunks(key)


def blob_storage(settings: Settings, chunks: FileChunkStore) -> BlobStorage:
    """Where this server keeps file bytes: `[files] storage`, where `auto` follows the database (the data
    dir next to SQLite; the database itself with PostgreSQL, so that every replica reads every file)."""
    kind = settings.files.storage
    if kind == "auto":
        kind = "disk" if settings.effective_database_url.startswith("sqlite") else "database"
    if kind == "disk":
        return DiskBlobs(settings.data_dir.resolve() / "files")
    return DatabaseBlobs(chunks)
