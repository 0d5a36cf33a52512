"""Vector store storage and search on SQLite and PostgreSQL alike: ingestion jobs and their leases, chunks written
once, hybrid search (FTS5 + numpy / tsvector + pgvector HNSW), filters, cancellation, detach and delete."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from parley.retrieval.filters import parse_filter
from parley.retrieval.ranking import Weights
from parley.services.vector_index import VectorIndex
from parley.services.vector_search import Searcher, SearchOptions
from parley.store.base import PageQuery
from parley.store.sql import SqlStore
from parley.store.vector_records import BatchRecord, ChunkRow, NewStoreFile, VectorStoreRecord
from parley.testing.fake_embeddings import bag_of_words

DOCS = {
    "file-cats": ["Cats purr and hunt mice at night.", "Kittens sleep most of the day."],
    "file-lava": ["Mount Etna erupts lava and ash over Sicily.", "Magma chambers feed volcanoes."],
    "file-pasta": ["Boil spaghetti in salted water.", "Carbonara needs eggs and pecorino cheese."],
}


def _vectors(texts: list[str], dimensions: int) -> np.ndarray[Any, Any]:
    return np.asarray([bag_of_words(t, dimensions) for t in texts], dtype=np.float32)


def _store(dimensions: int, store_id: str = "vs_1", project: str = "p") -> VectorStoreRecord:
    return VectorStoreRecord(store_id, project, "docs", None, 1000, 1000, None, {}, "bow", dimensions)


async def _fill(store: SqlStore, record: VectorStoreRecord, attributes: dict[str, dict[str, Any]]) -> None:
    await store.ensure_vector_index(record.dimensions)
    await store.insert_vector_store(record)
    files = [NewStoreFile(fid, fid + ".txt", attributes.get(fid, {}), 800, 400) for fid in DOCS]
    assert await store.attach_files(record.project_id, record.id, files, 1000)
    jobs = await store.claim_ingestion("w1", 60_000, 10)
    assert sorted(j.file_id for j in jobs) == sorted(DOCS) and all(j.attempts == 1 for j in jobs)
    for job in jobs:
        texts = DOCS[job.file_id]
        vectors = _vectors(texts, record.dimensions)
        rows = [ChunkRow(i, i * 100, i * 100 + len(t), t, v) for i, (t, v) in enumerate(zip(texts, vectors,
                                                                                             strict=True))]
        assert await store.complete_ingestion(job, "w1", rows, 10)


async def _search(store: SqlStore, searcher: Searcher, record: VectorStoreRecord, query: str,
                  **options: Any) -> list[str]:
    fresh = (await store.get_vector_stores(record.project_id, [record.id]))[record.id]
    vectors = _vectors([query], record.dimensions)
    hits = await searcher.search([fresh], [query], vectors, SearchOptions(**options))
    return [h.text for h in hits]


@pytest.mark.parametrize("dimensions", [384, 48])  # the migration's HNSW index, and one made on demand
async def test_hybrid_search(store: SqlStore, dimensions: int) -> None:
    record = _store(dimensions)
    await _fill(store, record, {"file-cats": {"kind": "animal"}, "file-lava": {"kind": "geology", "year": 2021}})
    searcher = Searcher(store, VectorIndex(store, 64 * 1024 * 1024))
    assert (await _search(store, searcher, record, "lava ash Sicily"))[0] == DOCS["file-lava"][0]
    assert await _search(store, searcher, record, "pecorino cheese", weights=Weights(0.0, 1.0)) == [
        DOCS["file-pasta"][1]]
    vector_only = await _search(store, searcher, record, "kittens sleep day", weights=Weights(1.0, 0.0),
                                max_num_results=2)
    assert vector_only[0] == DOCS["file-cats"][1] and len(vector_only) == 2
    only_geology = await _search(store, searcher, record, "cats lava pasta",
                                 filter=parse_filter({"type": "eq", "key": "kind", "value": "geology"}))
    assert set(only_geology) <= set(DOCS["file-lava"]) and only_geology
    assert await _search(store, searcher, record, "anything",
                         filter=parse_filter({"type": "eq", "key": "kind", "value": "none"})) == []


async def test_jobs_leases_and_no_duplicate_chunks(store: SqlStore) -> None:
    record = _store(16)
    await store.insert_vector_store(record)
    await store.attach_files("p", record.id, [NewStoreFile("file-a", "a.txt", {}, 800, 400)], 1000)
    (job,) = await store.claim_ingestion("w1", 1, 5)  # a lease of 1 ms: w1 "dies"
    await asyncio.sleep(0.01)
    (again,) = await store.claim_ingestion("w2", 60_000, 5)
    assert (again.seq, again.attempts) == (job.seq, 2)
    assert await store.claim_ingestion("w3", 60_000, 5) == []  # w2's lease holds
    assert await store.renew_ingestion("w1", [job.seq], 60_000) == set()  # w1 learns it lost the job
    assert await store.renew_ingestion("w2", [job.seq], 60_000) == {job.seq}
    rows = [ChunkRow(0, 0, 5, "hello", _vectors(["hello"], 16)[0])]
    assert not await store.complete_ingestion(job, "w1", rows, 5)  # the old worker writes nothing
    assert await store.complete_ingestion(again, "w2", rows, 5)
    assert not await store.complete_ingestion(again, "w2", rows, 5)  # done once
    assert len(await store.file_chunk_texts(record.id, "file-a")) == 1
    # Re-attached: indexed again, the chunks replaced (not added to).
    await store.attach_files("p", record.id, [NewStoreFile("file-a", "a.txt", {"v": 2}, 800, 400)], 1001)
    (third,) = await store.claim_ingestion("w2", 60_000, 5)
    assert await store.complete_ingestion(third, "w2", rows * 3, 15)
    assert len(await store.file_chunk_texts(record.id, "file-a")) == 3
    counts = (await store.file_counts([record.id]))[record.id]
    assert (counts.completed, counts.total, counts.usage_bytes) == (1, 1, 15)


async def test_failures_retries_cancel_detach_delete(store: SqlStore) -> None:
    record = _store(16)
    await store.insert_vector_store(record)
    batch = BatchRecord("vsfb_1", record.id, "p", 1000)
    files = [NewStoreFile(f"file-{i}", f"{i}.txt", {}, 800, 400) for i in range(4)]
    assert await store.attach_files("p", record.id, files, 1000, batch)
    jobs = {j.file_id: j for j in await store.claim_ingestion("w1", 60_000, 2)}
    assert set(jobs) == {"file-0", "file-1"}
    assert await store.fail_ingestion(jobs["file-0"], "w1", {"code": "invalid_file", "message": "bad"})
    assert await store.retry_ingestion(jobs["file-1"], "w1", 60_000)  # not claimable for a minute
    assert {j.file_id for j in await store.claim_ingestion("w1", 60_000, 5)} == {"file-2", "file-3"}
    assert await store.cancel_batch("vsfb_1", 2000)
    counts = (await store.file_counts([record.id], "vsfb_1"))[record.id]
    assert (counts.failed, counts.cancelled, counts.in_progress) == (1, 3, 0)
    failed = await store.get_store_file(record.id, "file-0")
    assert failed is not None and failed.last_error == {"code": "invalid_file", "message": "bad"}
    page, has_more = await store.list_store_files(record.id, "cancelled", PageQuery(limit=2, order="asc"))
    assert [f.file_id for f in page] == ["file-1", "file-2"] and has_more
    batch_row = await store.get_batch(record.id, "vsfb_1")
    assert batch_row is not None and batch_row.cancelled_at == 2000
    assert await store.detach_file(record.id, "file-3") and not await store.detach_file(record.id, "file-3")
    assert await store.detach_file_everywhere("p", "file-2") == [record.id]
    assert await store.get_vector_stores("other", [record.id]) == {}
    assert await store.delete_vector_store("p", record.id)
    assert await store.get_store_file(record.id, "file-0") is None
    assert not await store.delete_vector_store("p", record.id)


async def test_sqlite_full_text_top_k_is_exact_for_small_and_large_stores(tmp_path: Any) -> None:
    """fts_search takes the index's best matches without the join when they hold enough of the searched stores'
    chunks, else falls back to the join: either way the same k chunks as the join query alone."""
    store = await SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/fts.db")
    try:
        texts = {"vs_big": [f"lava flow number {i} " + "lava " * (i % 7) for i in range(120)],
                 "vs_small": ["a little lava here", "lava lava lava in the small store"]}
        for store_id, chunks in texts.items():
            record = _store(8, store_id)
            await store.insert_vector_store(record)
            assert await store.attach_files("p", store_id, [NewStoreFile(f"file-{store_id}", "f.txt", {}, 800, 400)],
                                            1000)
            [job] = await store.claim_ingestion("w1", 60_000, 10)
            rows = [ChunkRow(i, i * 100, i * 100 + len(t), t, _vectors([t], 8)[0]) for i, t in enumerate(chunks)]
            assert await store.complete_ingestion(job, "w1", rows, 10)

        async def by_join(store_ids: list[str], k: int) -> list[tuple[int, float]]:
            from sqlalchemy import bindparam, text

            from parley.store.sql_vector_search import _FTS_SEARCH
            statement = text(_FTS_SEARCH.text.format(files="")).bindparams(bindparam("stores", expanding=True))
            async with store.engine.connect() as conn:
                rows = (await conn.execute(statement, {"match": '"lava"', "stores": store_ids, "k": k})).all()
            return [(int(seq), float(score)) for seq, score in rows]

        for store_ids, k in ((["vs_small"], 5), (["vs_big"], 5), (["vs_big"], 50), (["vs_big", "vs_small"], 10)):
            assert await store.fts_search(store_ids, ["lava"], k, None) == await by_join(store_ids, k)
        small = await store.fts_search(["vs_small"], ["lava"], 5, None)
        assert len(small) == 2  # found by the fallback: the index's best 20 are all the big store's
        assert await store.fts_search(["vs_big"], ["lava"], 5, ["file-vs_small"]) == []
    finally:
        await store.close()
