"""The FileStore contract and both blob storages (a directory; the database's file_chunks) on SQLite and
PostgreSQL (the `store` fixture is parametrised)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from parley.errors import InvalidRequest
from parley.ids import new_id
from parley.store import tables
from parley.store.base import FileRecord, PageQuery
from parley.store.blobs import CHUNK_BYTES, BlobMissing, BlobStorage, DatabaseBlobs, DiskBlobs
from parley.store.sql import SqlStore

PROJECT = "proj_a"
OTHER = "proj_b"
NOW = 1_800_000_000


def record(project: str = PROJECT, purpose: str = "assistants", expires_at: int | None = None,
           status: str = "processed") -> FileRecord:
    return FileRecord(new_id("file", "-"), project, "a.txt", purpose, 3, NOW, expires_at, "text/plain", status)


async def test_insert_get_and_complete(store: SqlStore) -> None:
    pending = record(status="uploading", expires_at=NOW + 100)
    await store.insert_file(pending)
    assert await store.get_file(PROJECT, pending.id, NOW) is None  # an upload in progress is invisible
    done = replace(pending, filename="b.pdf", purpose="batch", bytes=12345, content_type="application/pdf",
                   expires_at=None, status="processed")
    assert await store.complete_file(done)
    assert await store.get_file(PROJECT, pending.id, NOW) == done
    assert not await store.complete_file(done)  # only an `uploading` row completes, once


async def test_files_are_project_scoped(store: SqlStore) -> None:
    mine = record()
    await store.insert_file(mine)
    assert await store.get_file(OTHER, mine.id, NOW) is None
    assert await store.delete_file(OTHER, mine.id) is None
    assert (await store.list_files(OTHER, None, PageQuery(), NOW)).data == []
    assert await store.get_file(PROJECT, mine.id, NOW) == mine


async def test_expired_files_are_invisible_and_listed_for_the_sweeper(store: SqlStore) -> None:
    short = record(expires_at=NOW + 10)
    forever = record()
    for r in (short, forever):
        await store.insert_file(r)
    assert await store.get_file(PROJECT, short.id, NOW + 9) == short
    assert await store.get_file(PROJECT, short.id, NOW + 10) is None
    assert [f.id for f in (await store.list_files(PROJECT, None, PageQuery(order="asc"), NOW + 10)).data] == [
        forever.id]
    assert [f.id for f in await store.expired_files(NOW + 10, 100)] == [short.id]
    assert await store.expired_files(NOW + 9, 100) == []


async def test_delete_returns_the_row_to_exactly_one_caller(store: SqlStore) -> None:
    mine = record()
    await store.insert_file(mine)
    results = await asyncio.gather(*(store.delete_file(PROJECT, mine.id) for _ in range(5)))
    assert [r for r in results if r is not None] == [mine]
    assert await store.get_file(PROJECT, mine.id, NOW) is None


async def test_list_pages_in_upload_order_with_purpose_filter(store: SqlStore) -> None:
    made = [record(purpose="batch" if n % 2 else "assistants") for n in range(7)]
    for r in made:
        await store.insert_file(r)
    ids = [r.id for r in made]
    first = await store.list_files(PROJECT, None, PageQuery(limit=3, order="asc"), NOW)
    assert [f.id for f in first.data] == ids[:3] and first.has_more
    rest = await store.list_files(PROJECT, None, PageQuery(limit=10, order="asc", after=ids[2]), NOW)
    assert [f.id for f in rest.data] == ids[3:] and not rest.has_more
    newest = await store.list_files(PROJECT, None, PageQuery(limit=2), NOW)
    assert [f.id for f in newest.data] == ids[::-1][:2]
    batch = await store.list_files(PROJECT, "batch", PageQuery(limit=100, order="asc"), NOW)
    assert [f.id for f in batch.data] == ids[1::2]
    with pytest.raises(InvalidRequest) as caught:
        await store.list_files(PROJECT, None, PageQuery(after="file-unknown"), NOW)
    assert caught.value.param == "after"


# -- blob storage ------------------------------------------------------------------------------------


@pytest.fixture(params=["disk", "database"])
def blobs(request: pytest.FixtureRequest, store: SqlStore, tmp_path: Path) -> BlobStorage:
    return DiskBlobs(tmp_path / "files") if request.param == "disk" else DatabaseBlobs(store)


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


async def read_all(blobs: BlobStorage, key: str) -> bytes:
    return b"".join([piece async for piece in blobs.read(key)])


async def test_blobs_round_trip_in_bounded_pieces(blobs: BlobStorage) -> None:
    data = os.urandom(CHUNK_BYTES * 2 + 12345)
    key = new_id("file", "-")
    assert await blobs.write(key, pieces(data, 65536)) == len(data)
    read = [piece async for piece in blobs.read(key)]
    assert b"".join(read) == data
    assert max(len(piece) for piece in read) <= CHUNK_BYTES
    await blobs.delete(key)
    await blobs.delete(key)  # idempotent
    with pytest.raises(BlobMissing):
        await read_all(blobs, key)


async def test_empty_blob_exists(blobs: BlobStorage) -> None:
    key = new_id("file", "-")
    assert await blobs.write(key, pieces(b"", 1)) == 0
    assert await read_all(blobs, key) == b""
    with pytest.raises(BlobMissing):
        await read_all(blobs, new_id("file", "-"))


async def test_a_failed_write_leaves_nothing(blobs: BlobStorage, store: SqlStore, tmp_path: Path) -> None:
    key = new_id("file", "-")

    async def broken() -> AsyncIterator[bytes]:
        yield os.urandom(CHUNK_BYTES + 1)  # one block is stored before the failure
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        await blobs.write(key, broken())
    with pytest.raises(BlobMissing):
        await read_all(blobs, key)
    if isinstance(blobs, DiskBlobs):
        assert not any(path.is_file() for path in (tmp_path / "files").rglob("*"))
    else:
        async with store.engine.connect() as conn:
            rows = (await conn.execute(tables.file_chunks.select())).all()
        assert rows == []


async def test_disk_blobs_sweep_old_partial_uploads(tmp_path: Path) -> None:
    blobs = DiskBlobs(tmp_path / "files")
    partial = tmp_path / "files" / ".tmp" / "file-abandoned.part"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"half")
    os.utime(partial, (NOW - 7200, NOW - 7200))
    fresh = partial.with_name("file-current.part")
    fresh.write_bytes(b"in progress")
    os.utime(fresh, (NOW - 10, NOW - 10))
    assert await blobs.sweep_partial(3600, NOW) == 1
    assert not partial.exists() and fresh.exists()


def test_blob_keys_are_never_paths(tmp_path: Path) -> None:
    blobs = DiskBlobs(tmp_path)
    for key in ("../../etc/passwd", "a/b", "", "x" * 200):
        with pytest.raises(ValueError):
            blobs.path(key)
