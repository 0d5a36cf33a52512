"""Hybrid search over vector stores: full-text and vector candidates of each query, fused (retrieval/ranking.py).

Per query, the best `candidates` chunks by keywords (SQLite FTS5 BM25 / PostgreSQL ts_rank_cd) and by vector
similarity (numpy over the store's matrix in memory on SQLite, services/vector_index.py; pgvector's HNSW index on
PostgreSQL) are pooled, each is given both scores, and the weighted mean orders them. Several queries: a chunk
keeps its best score. Attribute filters restrict the files searched. Of overlapping chunks of one file (chunks
overlap by design) only the best is returned.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from parley.retrieval.filters import Filter, matches
from parley.retrieval.ranking import Weights, fuse
from parley.services.vector_index import VectorIndex
from parley.store.sql import SqlStore
from parley.store.sql_vector_search import query_terms
from parley.store.vector_records import ChunkText, StoreFileInfo, VectorStoreRecord

MIN_CANDIDATES = 50
# SQLite: a query term in more than this share of all chunks is left out of the full-text query. Its BM25 weight
# is close to nothing (FTS5: idf = ln((N - n + 0.5) / (n + 0.5)), < 0.7 here) while its matches are most of the
# work (FTS5 scores every chunk that matches any term). Document counts are cached for DF_TTL_S.
COMMON_TERM_SHARE = 1 / 3
PRUNE_FROM_CHUNKS = 1000  # below this, every word is kept (the cost is small, and each word counts in a few chunks)
DF_TTL_S = 60.0


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One retrieved chunk. `start`/`end`: its character offsets in the file's extracted text."""

    vector_store_id: str
    file_id: str
    filename: str
    score: float
    text: str
    attributes: dict[str, Any]
    start: int
    end: int
    chunk_index: int


@dataclass(frozen=True, slots=True)
class SearchOptions:
    max_num_results: int = 10
    filter: Filter | None = None
    score_threshold: float = 0.0
    weights: Weights = field(default_factory=Weights)


@dataclass(frozen=True, slots=True)
class _Scored:
    seq: int
    score: float


class Searcher:
    def __init__(self, store: SqlStore, index: VectorIndex) -> None:
        self._store = store
        self._index = index
        self._postgres = store.engine.dialect.name == "postgresql"
        self._files: dict[str, tuple[int, dict[str, StoreFileInfo]]] = {}  # by store: (generation, files)
        self._counts: dict[str, tuple[float, int, int]] = {}  # term -> (when, chunks holding it, all chunks)

    async def search(self, stores: Sequence[VectorStoreRecord], queries: list[str], vectors: npt.NDArray[np.float32],
                     options: SearchOptions) -> list[SearchHit]:
        """`vectors`: the queries' embeddings (unused, and may be empty, when the embedding weight is 0)."""
        files = await self._files_of(stores)
        allowed = _allowed(files, options.filter)
        if allowed is not None and not any(allowed.values()):
            return []
        k = max(MIN_CANDIDATES, 4 * options.max_num_results)
        best: dict[int, float] = {}
        for n, query in enumerate(queries):
            vector = vectors[n] if options.weights.embedding > 0 else None
            for seq, score in (await self._query(stores, query, vector, k, allowed, options.weights)).items():
                if score > best.get(seq, -1.0):
                    best[seq] = score
        ranked = sorted(best.items(), key=lambda pair: pair[1], reverse=True)
        texts = await self._store.chunk_texts([seq for seq, _ in ranked[: 4 * options.max_num_results]])
        hits: list[SearchHit] = []
        taken: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for seq, score in ranked:
            chunk = texts.get(seq)
            if chunk is None or score < options.score_threshold:
                continue
            if allowed is not None and chunk.file_id not in allowed.get(chunk.vector_store_id, ()):
                continue
            spans = taken.setdefault((chunk.vector_store_id, chunk.file_id), [])
            if any(chunk.start < end and start < chunk.end for start, end in spans):
                continue  # overlaps a better chunk of the same file
            spans.append((chunk.start, chunk.end))
            hits.append(_hit(chunk, score, files[chunk.vector_store_id].get(chunk.file_id)))
            if len(hits) == options.max_num_results:
                break
        return hits

    async def _files_of(self, stores: Sequence[VectorStoreRecord]) -> dict[str, dict[str, StoreFileInfo]]:
        stale = [s.id for s in stores if self._files.get(s.id, (-1, {}))[0] != s.generation]
        if stale:
            loaded = await self._store.store_files_info(stale)
            for store in stores:
                if store.id in loaded:
                    self._files[store.id] = (store.generation, loaded[store.id])
        return {s.id: self._files[s.id][1] for s in stores}

    async def _query(self, stores: Sequence[VectorStoreRecord], query: str, vector: npt.NDArray[np.float32] | None,
                     k: int, allowed: dict[str, frozenset[str]] | None, weights: Weights) -> dict[int, float]:
        store_ids = [s.id for s in stores]
        file_ids = sorted(set().union(*allowed.values())) if allowed is not None else None
        use_text = weights.text > 0
        if self._postgres:
            by_vector = dict(await self._store.pg_vector_search(store_ids, stores[0].dimensions, vector, k, file_ids)
                             if vector is not None else [])
            by_text = dict(await self._store.pg_text_search(store_ids, query, k, file_ids) if use_text else [])
            missing = [seq for seq in by_vector.keys() | by_text.keys()
                       if (vector is not None and seq not in by_vector) or (use_text and seq not in by_text)]
            if missing:
                assert vector is not None or use_text
                both = await self._store.pg_scores(missing, stores[0].dimensions,
                                                   vector if vector is not None else np.zeros(stores[0].dimensions,
                                                                                              np.float32), query)
                for seq, (similarity, score) in both.items():
                    by_vector.setdefault(seq, similarity)
                    by_text.setdefault(seq, score)
        else:
            matrices = [await self._index.matrix(s) for s in stores] if vector is not None else []
            by_vector = {}
            for store, matrix in zip(stores, matrices, strict=False):  # no matrices without a vector
                assert vector is not None
                by_vector.update(matrix.top(vector, k, allowed.get(store.id) if allowed is not None else None))
            terms = await self._useful_terms(query) if use_text else []
            by_text = dict(await self._store.fts_search(store_ids, terms, k, file_ids) if terms else [])
            if vector is not None:
                others = [seq for seq in by_text if seq not in by_vector]
                for matrix in matrices:
                    by_vector.update(matrix.similarities(vector, others))
            if terms:
                by_text.update(await self._store.fts_scores([s for s in by_vector if s not in by_text], terms))
        if vector is None:
            by_vector = {}
        if not use_text:
            by_text = {}
        return fuse(by_vector, by_text, weights)


    async def _useful_terms(self, query: str) -> list[str]:
        """The query's words, but those in more than COMMON_TERM_SHARE of the chunks (SQLite; PostgreSQL's
        `english` configuration drops stop words itself). If every word is that common, the rarest one."""
        terms = query_terms(query)
        now = time.monotonic()
        unknown = [t for t in terms if now - self._counts.get(t, (-DF_TTL_S, 0, 0))[0] >= DF_TTL_S]
        if unknown:
            total, counts = await self._store.fts_document_counts(unknown)
            for term in unknown:
                self._counts[term] = (now, counts[term], total)
            if len(self._counts) > 100_000:
                self._counts.clear()
        found = [(t, self._counts[t][1], self._counts[t][2]) for t in terms if self._counts[t][1] > 0]
        useful = [t for t, count, total in found if total < PRUNE_FROM_CHUNKS or count <= COMMON_TERM_SHARE * total]
        if not useful and found:
            useful = [min(found, key=lambda entry: entry[1])[0]]
        return useful


def _allowed(files: dict[str, dict[str, StoreFileInfo]], condition: Filter | None) -> dict[str, frozenset[str]] | None:
    """Per store, the files whose attributes pass the filter (None: no filter)."""
    if condition is None:
        return None
    return {store_id: frozenset(f.file_id for f in infos.values() if matches(condition, f.attributes))
            for store_id, infos in files.items()}


def _hit(chunk: ChunkText, score: float, info: StoreFileInfo | None) -> SearchHit:
    return SearchHit(chunk.vector_store_id, chunk.file_id, info.filename if info else chunk.file_id,
                     round(min(1.0, max(0.0, score)), 6), chunk.text, dict(info.attributes) if info else {},
                     chunk.start, chunk.end, chunk.position)
