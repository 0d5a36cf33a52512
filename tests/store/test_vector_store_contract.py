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
from parley.services.vector_search import (
    MATCH_SHARE,
    PRUNE_FROM_CHUNKS,
    Match,
    Searcher,
    SearchOptions,
    selective,
)
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
            for window in (0, 30, 1000):
                found = await store.fts_search(store_ids, ["lava"], k, None, window)
                assert found.top == await by_join(store_ids, k)
                # What it saw is scored as the join scores it, and every other chunk of the stores is within bound.
                every = dict(await by_join(store_ids, 1000))
                assert all(every[seq] == score for seq, score in found.seen.items() if seq in every)
                assert all(score <= found.bound for seq, score in every.items() if seq not in found.seen)
                if window == 1000:
                    assert found.bound == 0.0  # every match was read
        small = await store.fts_search(["vs_small"], ["lava"], 5, None)
        assert len(small.top) == 2  # found by the fallback: the index's best 20 are all the big store's
        assert (await store.fts_search(["vs_big"], ["lava"], 5, ["file-vs_small"])).top == []
        assert (await store.fts_search(["vs_big"], ["lava"], 5, None, 30)).bound > 0  # 122 matches, 30 read
    finally:
        await store.close()


async def test_sqlite_hybrid_scores_outside_the_read_matches_are_exact_where_they_count(tmp_path: Any) -> None:
    """The text score of a vector candidate outside the full-text matches read is only bounded; those that could
    reach the results are scored exactly. Searching with a window of 0 (every such candidate is doubtful) gives
    the very results and scores of a window holding every match."""
    store = await SqlStore.open(f"sqlite+aiosqlite:///{tmp_path}/window.db")
    try:
        rng = np.random.default_rng(3)
        words = ["lava", "ash", "magma", "crater", "basalt", "plume", "vent", "tephra", "caldera", "dike"]
        texts = [" ".join(rng.choice(words, size=int(rng.integers(3, 12)))) for _ in range(600)]
        record = _store(8)
        await store.insert_vector_store(record)
        files = [NewStoreFile(f"file-{i}", f"f{i}.txt", {}, 800, 400) for i in range(0, 600, 20)]
        assert await store.attach_files("p", record.id, files, 1000)
        for job in await store.claim_ingestion("w1", 60_000, 30):
            first = int(job.file_id.split("-")[1])
            vectors = rng.standard_normal((20, 8)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            rows = [ChunkRow(i, i * 100, i * 100 + 50, texts[first + i], vectors[i]) for i in range(20)]
            assert await store.complete_ingestion(job, "w1", rows, 10)
        fresh = (await store.get_vector_stores("p", [record.id]))[record.id]
        exact = Searcher(store, VectorIndex(store, 1 << 20), fts_window=10_000)
        bounded = Searcher(store, VectorIndex(store, 1 << 20), fts_window=0)
        calls = []
        chunk_stats = store.fts_chunk_stats

        async def counted(seqs: list[int]) -> tuple[int, float, dict[int, int], dict[int, str]]:
            calls.append(len(seqs))
            return await chunk_stats(seqs)

        store.fts_chunk_stats = counted  # type: ignore[method-assign]
        for query in ("lava ash", "caldera", "plume vent dike", "basalt tephra magma crater"):
            vector = rng.standard_normal((1, 8)).astype(np.float32)
            for options in (SearchOptions(max_num_results=1), SearchOptions(max_num_results=5),
                            SearchOptions(max_num_results=20, weights=Weights(0.7, 0.3))):
                want = await exact.search([fresh], [query], vector, options)
                assert await bounded.search([fresh], [query], vector, options) == want
        assert calls and max(calls) < 50  # some candidates needed their exact score, and not every one of them
    finally:
        await store.close()


def test_selective_terms_are_the_rarest_within_the_match_share() -> None:
    assert MATCH_SHARE == 0.02
    shares = [("common", 0.30), ("rare", 0.005), ("middling", 0.01), ("scarce", 0.002)]
    assert selective(shares, 100_000) == Match(["scarce", "rare", "middling"])  # 0.017; +0.30 is too many
    # Even the rarest is in too many chunks: those holding the rarest ones all (0.1 * 0.3 > 0.02 >= 0.1 * 0.3 * 0.5).
    assert selective([("a", 0.5), ("b", 0.1), ("c", 0.3), ("d", 0.9)], 100_000) == Match(["b", "c", "a"], True)
    assert selective([("usual", 0.2)], 100_000) == Match(["usual"])  # alone: matched on all the same
    assert selective(shares, PRUNE_FROM_CHUNKS - 1) == Match(["common", "rare", "middling", "scarce"])  # small
    assert selective([], 100_000) == Match([])


async def test_full_text_matches_on_selective_words_and_ranks_by_all(store: SqlStore) -> None:
    """Past PRUNE_FROM_CHUNKS chunks, a word in most of them is not matched on: a chunk holding only it is not a
    text match, while chunks holding a rare word are. On PostgreSQL (statistics from ANALYZE) the common word
    still counts in the ranking of those."""
    record = _store(8)
    await store.insert_vector_store(record)
    texts = [f"common filler {'alpha' if i % 2 else 'beta'} {i}" for i in range(PRUNE_FROM_CHUNKS + 200)]
    texts[6] = "alpha beta together"
    texts[7] = "quasar"
    texts[8] = "quasar common common common"
    texts[9] = "only common here common common common common"
    files = [NewStoreFile(f"file-{i}", f"f{i}.txt", {}, 800, 400) for i in range(0, len(texts), 100)]
    assert await store.attach_files("p", record.id, files, 1000)
    for job in await store.claim_ingestion("w1", 60_000, len(files)):
        first = int(job.file_id.split("-")[1])
        rows = [ChunkRow(i, i * 100, i * 100 + 50, t, v) for i, (t, v) in
                enumerate(zip(texts[first:first + 100], _vectors(texts[first:first + 100], 8), strict=True))]
        assert await store.complete_ingestion(job, "w1", rows, 10)
    if store.engine.dialect.name == "postgresql":
        from sqlalchemy import text

        async with store.engine.begin() as conn:
            await conn.execute(text("ANALYZE vector_store_chunks"))
    searcher = Searcher(store, VectorIndex(store, 1 << 20))
    found = await _search(store, searcher, record, "common quasar", weights=Weights(0.0, 1.0))
    if store.engine.dialect.name == "postgresql":
        assert found == ["quasar common common common", "quasar"]
    else:
        assert sorted(found) == ["quasar", "quasar common common common"]
    # Alone, the common word is the rarest there is: it is matched on.
    assert "only common here common common common common" in await _search(
        store, searcher, record, "common", weights=Weights(0.0, 1.0))
    # Two words in most chunks: matched on chunks holding both ("common filler ..."), ranked by both.
    both = await _search(store, searcher, record, "common filler", weights=Weights(0.0, 1.0), max_num_results=50)
    assert len(both) == 50 and all(t.startswith("common filler") for t in both)
    # Too few chunks hold both (one): then the chunks holding the rarer of the two, ranked by both.
    few = await _search(store, searcher, record, "alpha beta", weights=Weights(0.0, 1.0))
    assert len(few) == 10 and few[0] == "alpha beta together"
    if store.engine.dialect.name == "sqlite":
        # A candidate deleted between FTS5's answer and the rescoring is left out, not an error.
        chunk_stats = store.fts_chunk_stats

        async def one_gone(seqs: list[int]) -> tuple[int, float, dict[int, int], dict[int, str]]:
            rows, mean_length, lengths, bodies = await chunk_stats(seqs)
            gone = next(seq for seq, body in bodies.items() if body == "alpha beta together")
            return rows, mean_length, lengths, {seq: b for seq, b in bodies.items() if seq != gone}

        store.fts_chunk_stats = one_gone  # type: ignore[method-assign]
        rest = await _search(store, searcher, record, "alpha beta", weights=Weights(0.0, 1.0))
        assert len(rest) == 10 and "alpha beta together" not in rest
