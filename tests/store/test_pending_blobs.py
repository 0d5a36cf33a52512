"""Container file bytes that may have no row (`pending_blobs`, migration 14): what the containers' sweeper removes
after a crash, on SQLite and PostgreSQL."""

from __future__ import annotations

from parley.store.base import ContainerFileRecord, ContainerRecord
from parley.store.sql import SqlStore


def _file(key: str, path: str, container: str = "cntr_a") -> ContainerFileRecord:
    return ContainerFileRecord(key, container, "p", path, 1, "user", 100)


async def test_bytes_pend_until_their_row_and_again_once_it_is_gone(store: SqlStore) -> None:
    await store.pend_blobs(["cfile_a", "cfile_b", "cfile_c"], due_at=500)
    await store.insert_container(ContainerRecord("cntr_a", "p", "c", 100, 100, 20, "1g"), [_file("cfile_a", "/a")])
    await store.change_container_files("cntr_a", [_file("cfile_b", "/b")], [])
    assert await store.due_blobs(now=499, limit=10) == []  # not due yet
    assert await store.due_blobs(now=500, limit=10) == ["cfile_c"]  # written, its row never came
    # A removed row's bytes are due at once; removing it twice (two processes racing) pends it once.
    await store.change_container_files("cntr_a", [], ["cfile_a"])
    await store.change_container_files("cntr_a", [], ["cfile_a"])
    assert sorted(await store.due_blobs(now=0, limit=10)) == ["cfile_a"]
    await store.drop_pending_blobs(["cfile_a", "cfile_c"])
    # A deleted container's files pend; a key some row claims again is never handed out, its entry just goes.
    assert await store.delete_container("p", "cntr_a") == ["cfile_b"]
    assert await store.due_blobs(now=0, limit=10) == ["cfile_b"]
    await store.pend_blobs(["cfile_d"], due_at=0)
    await store.insert_container(ContainerRecord("cntr_b", "p", "c", 100, 100, 20, "1g"),
                                 [_file("cfile_d", "/d", "cntr_b")])
    await store.pend_blobs(["cfile_d"], due_at=0)
    assert "cfile_d" not in await store.due_blobs(now=1000, limit=10)
    assert "cfile_d" not in await store.due_blobs(now=1000, limit=10)
