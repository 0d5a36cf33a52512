"""FilesService over a real SQLite store and a directory, with a clock the test moves: expiry (invisible at once,
bytes removed by the sweep, deletion hooks run), the size limit, stale uploads, server-made files, reads."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parley.errors import InvalidRequest, NotFound, PayloadTooLarge
from parley.services.files import BATCH_EXPIRY_S, FileLimits, FilesService, FileUpload
from parley.store.base import FileRecord, PageQuery
from parley.store.blobs import DatabaseBlobs, DiskBlobs
from parley.store.sql import SqlStore

PROJECT = "proj_a"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    opened = await SqlStore.open(f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}")
    try:
        yield opened
    finally:
        await opened.close()


class Env:
    def __init__(self, store: SqlStore, root: Path, clock: Clock, max_bytes: int = 1_000_000) -> None:
        self.store = store
        self.blobs = DiskBlobs(root)
        self.clock = clock
        self.files = FilesService(store, self.blobs, FileLimits(max_bytes, upload_timeout_s=600), clock)
        self.deleted: list[FileRecord] = []

        async def hook(record: FileRecord) -> None:
            self.deleted.append(record)

        self.files.on_delete(hook)

    def stored(self) -> list[Path]:
        return [p for p in self.blobs.root.rglob("*") if p.is_file()]


@pytest.fixture
def env(store: SqlStore, tmp_path: Path) -> Env:
    return Env(store, tmp_path / "files", Clock())


async def chunks(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def test_expired_file_disappears_at_once_and_its_bytes_at_the_sweep(env: Env) -> None:
    record = await env.files.create(PROJECT, chunks(b"ab", b"c"), FileUpload("a.txt", "assistants", 3600))
    assert record.bytes == 3 and record.expires_at == record.created_at + 3600
    assert (await env.files.get(PROJECT, record.id)).id == record.id
    env.clock.now += 3600
    with pytest.raises(NotFound):
        await env.files.get(PROJECT, record.id)
    with pytest.raises(NotFound):
        await env.files.open(PROJECT, record.id)
    assert (await env.files.list(PROJECT, None, PageQuery())).data == []
    assert len(env.stored()) == 1  # the bytes wait for the sweep
    assert await env.files.sweep() == 1
    assert env.stored() == [] and [r.id for r in env.deleted] == [record.id]
    assert await env.files.sweep() == 0


async def test_batch_files_expire_after_30_days_by_default(env: Env) -> None:
    batch = await env.files.create_from_bytes(PROJECT, FileUpload("b.jsonl", "batch"), b"{}")
    kept = await env.files.create_from_bytes(PROJECT, FileUpload("k.txt", "user_data"), b"x")
    assert batch.expires_at == batch.created_at + BATCH_EXPIRY_S and kept.expires_at is None


async def test_over_the_limit_nothing_is_kept(store: SqlStore, tmp_path: Path) -> None:
    env = Env(store, tmp_path / "files", Clock(), max_bytes=100)
    with pytest.raises(PayloadTooLarge):
        await env.files.create(PROJECT, chunks(b"x" * 60, b"x" * 60), FileUpload("a", "assistants"))
    assert env.stored() == []
    assert await env.store.expired_files(2_000_000_000, 10) == []  # the pending row went too
    exact = await env.files.create(PROJECT, chunks(b"x" * 100), FileUpload("a", "assistants"))
    assert exact.bytes == 100


async def test_a_late_refusal_discards_the_stored_bytes(env: Env) -> None:
    def describe() -> FileUpload:
        raise InvalidRequest("Missing required parameter: 'purpose'.", param="purpose")

    with pytest.raises(InvalidRequest):
        await env.files.create(PROJECT, chunks(os.urandom(5000)), describe)
    assert env.stored() == [] and env.deleted == []


async def test_an_upload_cut_short_by_a_crash_is_swept(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # What a crash mid-upload leaves: the pending row and part of the bytes.
    async def crash() -> AsyncIterator[bytes]:
        yield b"partial"
        raise SystemExit  # not an Exception: nothing may rely on catching it

    files = env.files
    monkeypatch.setattr(files, "_discard", _no_discard)  # the process died: no clean-up ran
    with pytest.raises(SystemExit):
        await files.create(PROJECT, crash(), FileUpload("a", "assistants"))
    assert await env.store.expired_files(int(env.clock.now), 10) == []
    env.clock.now += 600 + 61  # past the upload deadline and its margin
    assert await files.sweep() == 1
    assert env.deleted == []  # never visible: no deletion hook runs for it


async def _no_discard(project_id: str, file_id: str) -> None:
    return None


async def test_delete_runs_hooks_and_removes_bytes(env: Env) -> None:
    record = await env.files.create_from_bytes(PROJECT, FileUpload("out.png", "assistants_output"), b"\x89PNG")
    assert record.content_type == "image/png" and record.purpose == "assistants_output"
    assert await env.files.delete(PROJECT, record.id) == {"id": record.id, "object": "file", "deleted": True}
    assert env.stored() == [] and [r.id for r in env.deleted] == [record.id]
    with pytest.raises(NotFound):
        await env.files.delete(PROJECT, record.id)
    with pytest.raises(NotFound):
        await env.files.delete("proj_b", record.id)


async def test_a_failing_hook_does_not_undo_the_delete(env: Env) -> None:
    async def broken(record: FileRecord) -> None:
        raise RuntimeError("vector store unavailable")

    env.files.on_delete(broken)
    record = await env.files.create_from_bytes(PROJECT, FileUpload("a.txt", "assistants"), b"abc")
    await env.files.delete(PROJECT, record.id)
    assert env.stored() == []


async def test_read_bytes_and_open(env: Env) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    env.files = FilesService(env.store, env.blobs, FileLimits(10 * 1024 * 1024), env.clock)
    record = await env.files.create(PROJECT, chunks(data[:100], data[100:]), FileUpload("r.bin", "user_data"))
    assert await env.files.read_bytes(PROJECT, record.id, len(data)) == data
    with pytest.raises(InvalidRequest) as caught:
        await env.files.read_bytes(PROJECT, record.id, 1000, param="input[0].content[0].file_id")
    assert caught.value.code == "file_too_large" and caught.value.param == "input[0].content[0].file_id"
    pieces = [piece async for piece in await env.files.open(PROJECT, record.id)]
    assert b"".join(pieces) == data and max(map(len, pieces)) <= 1024 * 1024
    with pytest.raises(NotFound) as missing:
        await env.files.open("proj_b", record.id, param="file_id")
    assert missing.value.param == "file_id"


async def test_a_file_deleted_while_read_ends_with_an_error(env: Env) -> None:
    data = os.urandom(3 * 1024 * 1024)
    env.files = FilesService(env.store, DatabaseBlobs(env.store), FileLimits(10 * 1024 * 1024), env.clock)
    record = await env.files.create(PROJECT, chunks(data), FileUpload("r.bin", "user_data"))
    stream = await env.files.open(PROJECT, record.id)
    first = await anext(stream)
    await env.store.delete_file_chunks(record.id)
    with pytest.raises(OSError):
        async for piece in stream:
            first += piece
    assert len(first) < len(data)


async def test_content_type_from_the_client_or_the_name(env: Env) -> None:
    declared = await env.files.create_from_bytes(
        PROJECT, FileUpload("x.bin", "assistants", content_type="text/csv; charset=utf-8"), b"a,b")
    guessed = await env.files.create_from_bytes(
        PROJECT, FileUpload("notes.md", "assistants", content_type="application/octet-stream"), b"#")
    unknown = await env.files.create_from_bytes(PROJECT, FileUpload("blob", "assistants"), b"?")
    assert (declared.content_type, guessed.content_type, unknown.content_type) == (
        "text/csv", "text/markdown", "application/octet-stream")


async def test_list_rejects_unknown_purpose(env: Env) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await env.files.list(PROJECT, "nonsense", PageQuery())
    assert caught.value.param == "purpose"
