"""Hybrid search over vector stores: full-text and vector candidates of each query, fused (retrieval/ranking.py).

Per query, the best `candidates` chunks by keywords (SQLite FTS5 BM25 / PostgreSQL ts_rank_cd) and by vector
similarity (numpy over the store's matrix in memory on SQLite, services/vector_index.py; pgvector's HNSW index on
PostgreSQL) are pooled, each is given both scores, and the weighted mean orders them. Several queries: a chunk
keeps its best score. Attribute filters restrict the files searched. Of overlapping chunks of one file (chunks
overlap by design) only the best is returned.

Full text matches on the query's selective words and ranks by all of them (`selective`): a database scores every
chunk that matches any word, and a word in many chunks is most of that work and little of the weight. Matched on:
the rarest words while the chunks holding them add up to at most MATCH_SHARE of all chunks; if even the rarest
is in more, the chunks holding all of the rarest few (and, when fewer than k do, those holding the rarest).
Ranked by: SQLite, FTS5's BM25 over every word (computed by retrieval/bm25.py for the candidates); PostgreSQL,
ts_rank_cd over every lexeme. The keyword and the vector side of a query run at the same time (two database
connections on PostgreSQL; the aiosqlite thread and a numpy thread on SQLite).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from parley.retrieval import bm25
from parley.retrieval.filters import Filter, matches
from parley.retrieval.ranking import Weights, fuse
from parley.services.vector_index import StoreMatrix, VectorIndex
from parley.store.sql import SqlStore
from parley.store.sql_vector_search import FTS_WINDOW, NO_MATCHES, TextMatches, query_terms
from parley.store.vector_records import ChunkText, StoreFileInfo, VectorStoreRecord

A = TypeVar("A")
B = TypeVar("B")

MIN_CANDIDATES = 50
# The selective words of a query (module docstring): those a full-text query matches on hold at most this share
# of all chunks together. bench/retrieval.py: at 100k chunks, ranking every match was most of a search's time
# (FTS5 ~1 us a match, PostgreSQL ~5 us with its heap reads); on the Python documentation, quality is the same
# from 1% to 5% and above what matching on every word gave (the rescoring with all words does the ranking).
MATCH_SHARE = 0.02
PRUNE_FROM_CHUNKS = 1000  # below this, every word is kept (the cost is small, and each word counts in a few chunks)
# SQLite: how many chunks matched on selective words are rescored with every word, per candidate wanted (k).
# bench/retrieval.py: 2 keeps quality (1: BM25 recall@5 0.888, hybrid 0.938 against 0.931 and 0.946).
CANDIDATES_PER_RESULT = 2
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
class Match:
    """The words a full-text query matches on: chunks holding any of `terms`, or all of them if `all_of`."""

    terms: list[str]
    all_of: bool = False


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
        self._tokens: dict[str, str | None] = {}  # query word -> its FTS5 token (None: not one token)
        self._counts: dict[str, tuple[float, int]] = {}  # FTS5 token -> (when, chunks holding it)
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
            by_vector, by_text = await self._postgres_scores(store_ids, stores[0].dimensions, query, vector, k,
                                                             file_ids, use_text)
        else:
            by_vector, by_text = await self._sqlite_scores(stores, query, vector, k, window, file_ids, allowed,
                                                           weights)
        if vector is None:
            by_vector = {}
        if not use_text:
            by_text = {}
        return fuse(by_vector, by_text, weights)

    async def _postgres_scores(self, store_ids: list[str], dimensions: int, query: str,
                               vector: npt.NDArray[np.float32] | None, k: int, file_ids: list[str] | None,
                               use_text: bool) -> tuple[dict[int, float], dict[int, float]]:
        async def by_text() -> tuple[list[str], dict[int, float]]:
            lexemes = await self._store.pg_lexemes(query) if use_text else []
            match = await self._selective_lexemes(lexemes) if lexemes else Match([])
            if not match.terms:
                return [], {}
            found = await self._store.pg_text_search(store_ids, match.terms, lexemes, k, file_ids, match.all_of)
            if match.all_of and len(found) < k:  # too few chunks hold them all: any holding the rarest
                found = await self._store.pg_text_search(store_ids, match.terms[:1], lexemes, k, file_ids)
            return lexemes, dict(found)

        async def by_vector() -> dict[int, float]:
            if vector is None:
                return {}
            return dict(await self._store.pg_vector_search(store_ids, dimensions, vector, k, file_ids))

        (lexemes, texts), vectors = await _both(by_text(), by_vector())
        missing = [seq for seq in vectors.keys() | texts.keys()
                   if (vector is not None and seq not in vectors) or (lexemes and seq not in texts)]
        if missing:
            both = await self._store.pg_scores(missing, dimensions,
                                               vector if vector is not None else np.zeros(dimensions, np.float32),
                                               lexemes)
            for seq, (similarity, score) in both.items():
                vectors.setdefault(seq, similarity)
                texts.setdefault(seq, score)
        return vectors, texts

    async def _sqlite_scores(self, stores: Sequence[VectorStoreRecord], query: str,
                             vector: npt.NDArray[np.float32] | None, k: int, window: int, file_ids: list[str] | None,
                             allowed: dict[str, frozenset[str]] | None,
                             weights: Weights) -> tuple[dict[int, float], dict[int, float]]:
        store_ids = [s.id for s in stores]

        async def text_matches() -> tuple[dict[str, str], dict[str, int], bool, TextMatches]:
            """The words' tokens and document counts, whether the matches are to be rescored with every word, and
            the matches."""
            token_of, counts, match = (await self._selective_terms(query) if weights.text > 0
                                       else ({}, {}, Match([])))
            if not match.terms:
                return token_of, counts, False, NO_MATCHES
            if match.all_of or len(match.terms) < len(counts):  # candidates for the rescoring below
                n = CANDIDATES_PER_RESULT * k
                found = await self._store.fts_search(store_ids, match.terms, n, file_ids, 0, match.all_of)
                if match.all_of and len(found.top) < k:  # too few chunks hold them all: any holding the rarest
                    found = await self._store.fts_search(store_ids, match.terms[:1], n, file_ids, 0)
                return token_of, counts, True, found
            return token_of, counts, False, await self._store.fts_search(store_ids, match.terms, k, file_ids,
                                                                         self._fts_window)

        async def nearest() -> tuple[list[StoreMatrix], dict[int, float]]:
            if vector is None:
                return [], {}
            matrices = [await self._index.matrix(s) for s in stores]
            found: dict[int, float] = {}
            for store, matrix in zip(stores, matrices, strict=True):  # a thread: ~4 ms of numpy at 100k chunks
                found.update(await asyncio.to_thread(matrix.top, vector, k,
                                                     allowed.get(store.id) if allowed is not None else None))
            return matrices, found

        (token_of, counts, rescore, found), (matrices, by_vector) = await _both(text_matches(), nearest())
        if rescore:
            # Matched on the selective words, ranked by all: FTS5's best `CANDIDATES_PER_RESULT * k` by those,
            # and the vector candidates, scored as FTS5 would score them with every word (retrieval/bm25.py).
            pool = [seq for seq, _ in found.top]
            scored = await self._bm25(list(dict.fromkeys(pool + list(by_vector))), token_of, counts)
            rescored = [(seq, score) for seq in pool if (score := scored.get(seq, 0.0)) > 0]  # (gone: deleted)
            by_text = dict(sorted(rescored, key=lambda pair: pair[1], reverse=True)[:k])
            for seq in by_vector:
                if seq not in by_text and scored.get(seq, 0.0) > 0:
                    by_text[seq] = scored[seq]
        else:
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
                    by_text.update({seq: score for seq, score in (await self._bm25(needed, token_of, counts)).items()
                                    if score})
        if vector is not None:
            others = [seq for seq in by_text if seq not in by_vector]
            for matrix in matrices:
                by_vector.update(matrix.similarities(vector, others))
        return by_vector, by_text

    async def _bm25(self, seqs: list[int], token_of: dict[str, str], counts: dict[str, int]) -> dict[int, float]:
        """FTS5's BM25 of these chunks for the words (their tokens and document counts given), without a pass over
        the index."""
        if not seqs:
            return {}
        rows, mean_length, lengths, texts = await self._store.fts_chunk_stats(seqs)
        frequencies = await asyncio.to_thread(bm25.term_frequencies, texts, token_of)
        return bm25.scores(frequencies, bm25.IndexStats(rows, mean_length, counts, lengths))

    async def _selective_terms(self, query: str) -> tuple[dict[str, str], dict[str, int], Match]:
        """SQLite: the query's words found in the index, their tokens and document counts, and the selective ones
        (module docstring). Tokens are cached; counts too, for DF_TTL_S."""
        terms = query_terms(query)
        now = time.monotonic()
        if now - self._total[0] >= DF_TTL_S:
            self._total = (now, await self._store.chunk_count())
        if unknown := [t for t in terms if t not in self._tokens]:
            if len(self._tokens) > 100_000:
                self._tokens.clear()
            cut = await asyncio.to_thread(bm25.tokens, unknown)
            self._tokens.update({word: cut.get(word) for word in unknown})
        token_of = {t: token for t in terms if (token := self._tokens.get(t)) is not None}
        stale = sorted({token for token in token_of.values()
                        if now - self._counts.get(token, (-DF_TTL_S, 0))[0] >= DF_TTL_S})
        counts = await self._store.fts_document_counts(stale) if stale else {}
        if len(self._counts) > 100_000:
            self._counts.clear()
        for token, count in counts.items():
            if count > 0:  # a word in no chunk is asked again next time: it may be in one by then
                self._counts[token] = (now, count)
        found = {t: c for t, token in token_of.items()
                 if (c := counts.get(token, self._counts.get(token, (0.0, 0))[1])) > 0}
        if any(count > self._total[1] for count in found.values()):  # chunks added since the total was counted
            self._total = (now, await self._store.chunk_count())
        total = max([self._total[1], 1, *found.values()])
        token_of = {t: token_of[t] for t in found}
        return token_of, found, selective([(t, count / total) for t, count in found.items()], total)

    async def _selective_lexemes(self, lexemes: list[str]) -> Match:
        """PostgreSQL: the selective lexemes, by the planner's statistics (cached DF_TTL_S)."""
        now = time.monotonic()
        if self._lexeme_stats is None or now - self._lexeme_stats[0] >= DF_TTL_S:
            self._lexeme_stats = (now, *await self._store.pg_lexeme_shares())
        _when, total, shares, other = self._lexeme_stats
        if not shares:  # never analysed: no statistics to choose by
            return Match(lexemes)
        return selective([(lexeme, shares.get(lexeme, other)) for lexeme in lexemes], total)


async def _both(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Both at once (each on its own database connection); if one fails, the other is cancelled."""
    task = asyncio.ensure_future(second)
    try:
        one = await first
    except BaseException:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise
    return one, await task


def selective(shares: list[tuple[str, float]], total: float) -> Match:
    """What to match on, given the share of chunks holding each term: the rarest terms while their shares add up
    to at most MATCH_SHARE (at least the rarest). If even the rarest is in more, chunks holding all of the rarest
    few, as many as it takes for their estimated joint share (as if independent) to fall within it. A small index
    (under PRUNE_FROM_CHUNKS chunks): any term."""
    if total < PRUNE_FROM_CHUNKS:
        return Match([term for term, _ in shares])
    ordered = sorted(shares, key=lambda pair: pair[1])
    kept: list[str] = []
    if ordered and ordered[0][1] > MATCH_SHARE:
        joint = 1.0
        for term, share in ordered:
            kept.append(term)
            joint *= share
            if joint <= MATCH_SHARE:
                break
        return Match(kept, all_of=len(kept) > 1)
    used = 0.0
    for term, share in ordered:
        if kept and used + share > MATCH_SHARE:
            break
        kept.append(term)
        used += share
    return Match(kept)


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
