"""Hybrid search over vector stores: full-text and vector candidates of each query, fused (retrieval/ranking.py).

Per query, the best `candidates` chunks by keywords (SQLite FTS5 BM25 / PostgreSQL ts_rank_cd) and by vector
similarity (numpy over the store's matrix in memory on SQLite, services/vector_index.py; pgvector's HNSW index on
PostgreSQL) are pooled, each is given both scores, and the weighted mean orders them. Several queries: a chunk
keeps its best score. Attribute filters restrict the files searched. Of overlapping chunks of one file (chunks
overlap by design) only the best is returned.

Full text matches on the query's selective words: rarest first, while the chunks they are in add up to at most
MATCH_SHARE of all chunks (at least the rarest word). A word in many chunks has little weight and most of the
cost: the database scores every chunk that matches any word. SQLite ranks by the selective words; PostgreSQL
(whose ts_rank_cd has no document frequency) ranks the chunks that hold one of them by all the query's words.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from parley.retrieval import bm25
from parley.retrieval.filters import Filter, matches
from parley.retrieval.ranking import Weights, fuse
from parley.services.vector_index import VectorIndex
from parley.store.sql import SqlStore
from parley.store.sql_vector_search import FTS_WINDOW, NO_MATCHES, query_terms
from parley.store.vector_records import ChunkText, StoreFileInfo, VectorStoreRecord

MIN_CANDIDATES = 50
# The selective words of a query (module docstring): those a full-text query matches on hold at most this share
# of all chunks together. bench/retrieval.py: at 100k chunks ranking every match is most of a search's time (FTS5
# ~1 us, ts_rank_cd ~3 us a match); on the Python documentation hybrid search still beats BM25 and vectors alone.
MATCH_SHARE = 0.05
PRUNE_FROM_CHUNKS = 1000  # below this, every word is kept (the cost is small, and each word counts in a few chunks)
CANDIDATES_PER_RESULT = 4  # SQLite: the chunks matching selective words rescored with every word, per candidate
DF_TTL_S = 60.0  # document frequencies (SQLite) and the planner's statistics (PostgreSQL) are cached this long


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
    def __init__(self, store: SqlStore, index: VectorIndex, fts_window: int = FTS_WINDOW) -> None:
        self._store = store
        self._fts_window = fts_window
        self._index = index
        self._postgres = store.engine.dialect.name == "postgresql"
        self._files: dict[str, tuple[int, dict[str, StoreFileInfo]]] = {}  # by store: (generation, files)
        self._counts: dict[str, tuple[float, int]] = {}  # term -> (when, chunks holding it)
        self._total = (-DF_TTL_S, 0)  # (when, all chunks)
        self._lexeme_stats: tuple[float, float, dict[str, float], float] | None = None  # when, pg_lexeme_shares()

    async def search(self, stores: Sequence[VectorStoreRecord], queries: list[str], vectors: npt.NDArray[np.float32],
                     options: SearchOptions) -> list[SearchHit]:
        """`vectors`: the queries' embeddings (unused, and may be empty, when the embedding weight is 0)."""
        files = await self._files_of(stores)
        allowed = _allowed(files, options.filter)
        if allowed is not None and not any(allowed.values()):
            return []
        window = 4 * options.max_num_results  # the ranked chunks read (below): their scores must be exact
        k = max(MIN_CANDIDATES, window)
        best: dict[int, float] = {}
        for n, query in enumerate(queries):
            vector = vectors[n] if options.weights.embedding > 0 else None
            scored = await self._query(stores, query, vector, k, window, allowed, options.weights)
            for seq, score in scored.items():
                if score > best.get(seq, -1.0):
                    best[seq] = score
        ranked = sorted(best.items(), key=lambda pair: pair[1], reverse=True)
        texts = await self._store.chunk_texts([seq for seq, _ in ranked[:window]])
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
                     k: int, window: int, allowed: dict[str, frozenset[str]] | None,
                     weights: Weights) -> dict[int, float]:
        """Fused scores of the query's candidates; those of its best `window` are exact, any other may be less."""
        store_ids = [s.id for s in stores]
        file_ids = sorted(set().union(*allowed.values())) if allowed is not None else None
        use_text = weights.text > 0
        if self._postgres:
            by_vector = dict(await self._store.pg_vector_search(store_ids, stores[0].dimensions, vector, k, file_ids)
                             if vector is not None else [])
            lexemes = await self._store.pg_lexemes(query) if use_text else []
            match = await self._selective_lexemes(lexemes) if lexemes else []
            by_text = dict(await self._store.pg_text_search(store_ids, match, lexemes, k, file_ids) if match else [])
            missing = [seq for seq in by_vector.keys() | by_text.keys()
                       if (vector is not None and seq not in by_vector) or (match and seq not in by_text)]
            if missing:
                both = await self._store.pg_scores(missing, stores[0].dimensions,
                                                   vector if vector is not None else np.zeros(stores[0].dimensions,
                                                                                              np.float32),
                                                   lexemes if match else [])
                for seq, (similarity, score) in both.items():
                    by_vector.setdefault(seq, similarity)
                    by_text.setdefault(seq, score)
        else:
            by_vector, by_text = await self._sqlite_scores(stores, query, vector, k, window, file_ids, allowed,
                                                           weights)
        if vector is None:
            by_vector = {}
        if not use_text:
            by_text = {}
        return fuse(by_vector, by_text, weights)

    async def _sqlite_scores(self, stores: Sequence[VectorStoreRecord], query: str,
                             vector: npt.NDArray[np.float32] | None, k: int, window: int, file_ids: list[str] | None,
                             allowed: dict[str, frozenset[str]] | None,
                             weights: Weights) -> tuple[dict[int, float], dict[int, float]]:
        matrices = [await self._index.matrix(s) for s in stores] if vector is not None else []
        by_vector: dict[int, float] = {}
        for store, matrix in zip(stores, matrices, strict=False):  # no matrices without a vector
            assert vector is not None
            by_vector.update(matrix.top(vector, k, allowed.get(store.id) if allowed is not None else None))
        counts, match = await self._selective_terms(query) if weights.text > 0 else ({}, [])
        store_ids = [s.id for s in stores]
        if len(match) < len(counts):
            # Matched on the selective words, ranked by all: FTS5's best `CANDIDATES_PER_RESULT * k` by those,
            # and the vector candidates, scored as FTS5 would score them with every word (retrieval/bm25.py).
            found = await self._store.fts_search(store_ids, match, CANDIDATES_PER_RESULT * k, file_ids, 0)
            pool = [seq for seq, _ in found.top]
            scored = await self._bm25(list(dict.fromkeys(pool + list(by_vector))), counts)
            by_text = dict(sorted(((seq, scored[seq]) for seq in pool), key=lambda pair: pair[1], reverse=True)[:k])
            for seq in by_vector:
                if seq not in by_text and scored.get(seq, 0.0) > 0:
                    by_text[seq] = scored[seq]
        else:
            found = (await self._store.fts_search(store_ids, match, k, file_ids, self._fts_window) if match
                     else NO_MATCHES)
            by_text = dict(found.top)
            doubtful = []  # vector candidates whose text score is only known to be at most found.bound
            for seq in by_vector:
                if seq not in by_text:
                    if seq in found.seen:
                        by_text[seq] = found.seen[seq]
                    elif found.bound > 0:
                        doubtful.append(seq)
            if doubtful:
                # Scored as if they did not match (a lower bound); those whose upper bound could still reach the
                # query's best `window` get their exact score.
                fused = fuse(by_vector, by_text, weights)
                slack = weights.text * found.bound / max(by_text.values())
                ranked = sorted(fused.values(), reverse=True)
                cut = ranked[window - 1] if len(ranked) >= window else -1.0
                if needed := [seq for seq in doubtful if fused[seq] + slack >= cut]:
                    by_text.update({seq: score for seq, score in (await self._bm25(needed, counts)).items() if score})
        if vector is not None:
            others = [seq for seq in by_text if seq not in by_vector]
            for matrix in matrices:
                by_vector.update(matrix.similarities(vector, others))
        return by_vector, by_text

    async def _bm25(self, seqs: list[int], counts: dict[str, int]) -> dict[int, float]:
        """FTS5's BM25 of these chunks for the words (their document counts given), without a pass over the index."""
        if not seqs:
            return {}
        rows, mean_length, lengths, texts = await self._store.fts_chunk_stats(seqs)
        frequencies = await asyncio.to_thread(bm25.term_frequencies, texts, list(counts))
        return bm25.scores(frequencies, bm25.IndexStats(rows, mean_length, counts, lengths))

    async def _selective_terms(self, query: str) -> tuple[dict[str, int], list[str]]:
        """SQLite: the query's words found in the index with their document counts, and the selective ones (module
        docstring). Counts by FTS5, cached DF_TTL_S."""
        terms = query_terms(query)
        now = time.monotonic()
        if now - self._total[0] >= DF_TTL_S:
            self._total = (now, await self._store.chunk_count())
        unknown = [t for t in terms if now - self._counts.get(t, (-DF_TTL_S, 0))[0] >= DF_TTL_S]
        counts = await self._store.fts_document_counts(unknown) if unknown else {}
        if len(self._counts) > 100_000:
            self._counts.clear()
        for term, count in counts.items():
            if count > 0:  # a word in no chunk is asked again next time: it may be in one by then
                self._counts[term] = (now, count)
        found = {t: c for t in terms if (c := counts.get(t, self._counts.get(t, (0.0, 0))[1])) > 0}
        if any(count > self._total[1] for count in found.values()):  # chunks added since the total was counted
            self._total = (now, await self._store.chunk_count())
        total = max([self._total[1], 1, *found.values()])
        return found, selective([(t, count / total) for t, count in found.items()], total)

    async def _selective_lexemes(self, lexemes: list[str]) -> list[str]:
        """PostgreSQL: the selective lexemes, by the planner's statistics (cached DF_TTL_S)."""
        now = time.monotonic()
        if self._lexeme_stats is None or now - self._lexeme_stats[0] >= DF_TTL_S:
            self._lexeme_stats = (now, *await self._store.pg_lexeme_shares())
        _when, total, shares, other = self._lexeme_stats
        if not shares:  # never analysed: no statistics to choose by
            return lexemes
        return selective([(lexeme, shares.get(lexeme, other)) for lexeme in lexemes], total)


def selective(shares: list[tuple[str, float]], total: float) -> list[str]:
    """The terms to match on, given the share of chunks holding each: rarest first while their shares add up to at
    most MATCH_SHARE, and at least the rarest; all of them in a small index (under PRUNE_FROM_CHUNKS chunks)."""
    if total < PRUNE_FROM_CHUNKS:
        return [term for term, _ in shares]
    kept: list[str] = []
    used = 0.0
    for term, share in sorted(shares, key=lambda pair: pair[1]):
        if kept and used + share > MATCH_SHARE:
            break
        kept.append(term)
        used += share
    return kept


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
