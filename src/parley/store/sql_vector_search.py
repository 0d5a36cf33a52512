"""SQL of search over vector store chunks. SQLite: FTS5 BM25 here, vectors loaded for numpy (services/
vector_search.py keeps them in memory). PostgreSQL: full text (`to_tsvector('english')`, GIN index) and pgvector
cosine distance (HNSW index per dimension, iterative scans so a filter on stores or files still fills the page).
Scores returned are "higher is better": -bm25 (FTS5's bm25() is negative), ts_rank_cd, cosine similarity.
Which words a full-text query matches on is the caller's choice (services/vector_search.py); the document
frequencies it chooses by come from here (FTS5 counts on SQLite, the planner's statistics on PostgreSQL).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import BindParameter, bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from parley.store import tables
from parley.store.pgvector import (
    DEFAULT_DIMENSIONS,
    TEXT_SEARCH_CONFIG,
    ensure_hnsw_index,
    hnsw_expression,
    vector_literal,
)
from parley.store.vector_records import ChunkText

_vc = tables.vector_store_chunks
_WORD = re.compile(r"[^\W_]+")  # FTS5's unicode61 tokens: letters and digits (an underscore separates)
_MAX_TERMS = 32
_FETCH_BATCH = 5000
# SQLite: how many of the index's best matches fts_search reads by default. Past the k it returns, they give the
# text score of vector candidates, and a bound on the score of any other chunk (services/vector_search.py).
FTS_WINDOW = 1000

_FTS_SEARCH = text(
    "SELECT c.seq, -bm25(vector_store_chunks_fts) AS score FROM vector_store_chunks_fts "
    "JOIN vector_store_chunks c ON c.seq = vector_store_chunks_fts.rowid "
    "WHERE vector_store_chunks_fts MATCH :match AND c.vector_store_id IN :stores {files}"
    "ORDER BY score DESC LIMIT :k"
)
# The best matches of the whole index, without the join: three times cheaper at 100k chunks (bench/retrieval.py);
# exact for the stores searched whenever enough of them are theirs (fts_search).
_FTS_TOP = text(
    "SELECT rowid, -bm25(vector_store_chunks_fts) AS score FROM vector_store_chunks_fts "
    "WHERE vector_store_chunks_fts MATCH :match ORDER BY score DESC LIMIT :n"
)
_CHUNK_OWNERS = select(_vc.c.seq, _vc.c.vector_store_id, _vc.c.file_id).where(
    _vc.c.seq.in_(bindparam("seqs", expanding=True)))
# The index's vocabulary (a term and the number of rows holding it), per connection in its temp schema.
_FTS_VOCABULARY = text("CREATE VIRTUAL TABLE IF NOT EXISTS temp.vector_store_chunks_vocab "
                       "USING fts5vocab(main, 'vector_store_chunks_fts', 'row')")
_FTS_DOCUMENTS = text("SELECT term, doc FROM temp.vector_store_chunks_vocab WHERE term IN :terms").bindparams(
    bindparam("terms", expanding=True))
# FTS5's own statistics (its shadow tables; the record format of fts5_index.c, stable as SQLite's file format):
# the averages record (rowid 1 of _data: varints, the row count and each column's total tokens) and the size of
# each row (varints, its tokens per column).
_FTS_AVERAGES = text("SELECT block FROM vector_store_chunks_fts_data WHERE id = 1")
_FTS_SIZES = text("SELECT c.seq, c.text, d.sz FROM vector_store_chunks c "
                  "LEFT JOIN vector_store_chunks_fts_docsize d ON d.id = c.seq WHERE c.seq IN :seqs").bindparams(
    bindparam("seqs", expanding=True))


@dataclass(frozen=True, slots=True)
class TextMatches:
    """Full-text matches of some stores: `top`, their k best (best first); `seen`, the scores of the index's best
    matches read on the way (any store's: look up only chunks known to be the searched stores'); and `bound`:
    every chunk of these stores that is in neither scores at most `bound` (0: it does not match at all)."""

    top: list[tuple[int, float]]
    seen: dict[int, float]
    bound: float


NO_MATCHES = TextMatches([], {}, 0.0)


def _varints(data: bytes) -> list[int]:
    """SQLite's varints (big-endian, 7 bits a byte while the high bit is set; a ninth byte gives all 8)."""
    values: list[int] = []
    i = 0
    while i < len(data):
        value = 0
        for n in range(9):
            byte = data[i]
            i += 1
            if n == 8:
                value = (value << 8) | byte
                break
            value = (value << 7) | (byte & 0x7F)
            if not byte & 0x80:
                break
        values.append(value)
    return values


def query_terms(query: str) -> list[str]:
    """The distinct words of a query, lower-cased (at most 32): the terms of a full-text OR query."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(query.lower()):
        seen.setdefault(word, None)
    return list(seen)[:_MAX_TERMS]


def _fts_match(terms: list[str], all_of: bool = False) -> str:
    # Words of letters and digits (query_terms): no quote can occur inside.
    return (" AND " if all_of else " OR ").join(f'"{term}"' for term in terms)


def _tsquery(lexemes: list[str], all_of: bool = False) -> str:
    """A tsquery of lexemes as they are (already normalised by the `english` configuration): any, or all."""
    return (" & " if all_of else " | ").join("'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"
                                            for lexeme in lexemes)


class SqlVectorSearch:
    engine: AsyncEngine

    # -- both databases ------------------------------------------------------------------------------

    async def ensure_vector_index(self, dimensions: int) -> None:
        """PostgreSQL: the HNSW index of a dimension no store used before (migration 6 made the default one)."""
        if self.engine.dialect.name != "postgresql" or dimensions == DEFAULT_DIMENSIONS:
            return
        async with self.engine.begin() as conn:
            await conn.run_sync(ensure_hnsw_index, dimensions)

    async def chunk_texts(self, seqs: list[int]) -> dict[int, ChunkText]:
        query = select(_vc.c.seq, _vc.c.vector_store_id, _vc.c.file_id, _vc.c.position, _vc.c.start_char,
                       _vc.c.end_char, _vc.c.text).where(_vc.c.seq.in_(seqs))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {int(r.seq): ChunkText(int(r.seq), r.vector_store_id, r.file_id, int(r.position), int(r.start_char),
                                      int(r.end_char), r.text) for r in rows}

    async def file_chunk_texts(self, store_id: str, file_id: str) -> list[ChunkText]:
        query = (select(_vc.c.seq, _vc.c.vector_store_id, _vc.c.file_id, _vc.c.position, _vc.c.start_char,
                        _vc.c.end_char, _vc.c.text)
                 .where(_vc.c.vector_store_id == store_id, _vc.c.file_id == file_id).order_by(_vc.c.position))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [ChunkText(int(r.seq), r.vector_store_id, r.file_id, int(r.position), int(r.start_char),
                          int(r.end_char), r.text) for r in rows]

    # -- SQLite --------------------------------------------------------------------------------------

    async def chunk_seqs(self, store_id: str) -> npt.NDArray[np.int64]:
        query = select(_vc.c.seq).where(_vc.c.vector_store_id == store_id)
        async with self.engine.connect() as conn:
            seqs = (await conn.execute(query)).scalars().all()
        return np.asarray(seqs, dtype=np.int64)

    async def chunk_vectors(self, store_id: str, after_seq: int,
                            dimensions: int) -> tuple[npt.NDArray[np.int64], list[str], npt.NDArray[np.float32]]:
        """The store's chunks with `seq > after_seq`: their seqs, file ids and embeddings (float32 rows)."""
        query = (select(_vc.c.seq, _vc.c.file_id, _vc.c.embedding)
                 .where(_vc.c.vector_store_id == store_id, _vc.c.seq > after_seq).order_by(_vc.c.seq))
        seqs: list[int] = []
        files: list[str] = []
        blobs: list[bytes] = []
        async with self.engine.connect() as conn:
            result = await conn.stream(query)
            async for rows in result.partitions(_FETCH_BATCH):
                for seq, file_id, blob in rows:
                    seqs.append(seq)
                    files.append(file_id)
                    blobs.append(blob)
        matrix = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dimensions).astype(np.float32)
        return np.asarray(seqs, dtype=np.int64), files, matrix

    async def chunk_count(self) -> int:
        """The number of chunks (all stores)."""
        async with self.engine.connect() as conn:
            return int((await conn.execute(text("SELECT count(*) FROM vector_store_chunks"))).scalar() or 0)

    async def fts_document_counts(self, tokens: list[str]) -> dict[str, int]:
        """The number of chunks holding each FTS5 token (retrieval/bm25.py `tokens`; all stores: FTS5's
        statistics are global), from the index's vocabulary (a count(*) of MATCH reads positions too: 3-9x slower
        for a common word)."""
        if not tokens:
            return {}
        async with self.engine.connect() as conn:
            await conn.execute(_FTS_VOCABULARY)
            rows = (await conn.execute(_FTS_DOCUMENTS, {"terms": tokens})).all()
        found = {str(term): int(count) for term, count in rows}
        return {token: found.get(token, 0) for token in tokens}

    async def fts_search(self, store_ids: list[str], terms: list[str], k: int, file_ids: list[str] | None,
                         window: int = FTS_WINDOW, all_of: bool = False) -> TextMatches:
        """The k best BM25 matches (of any term, or of all) in the stores (and files). First the index's best
        `window` (at least 4k) matches of every store; if its first 4k hold at least k of these stores', those are
        exactly these stores' k best (any other of their chunks scores below all 4k; the owners of the first k are
        read first, and of the rest only if some of those were another store's). Otherwise (stores that are a
        small part of the index) the join query."""
        if not terms or (file_ids is not None and not file_ids):
            return NO_MATCHES
        n = max(window, 4 * k)
        stores, files = set(store_ids), set(file_ids) if file_ids is not None else None
        async with self.engine.connect() as conn:
            top = [(int(seq), float(score)) for seq, score in
                   (await conn.execute(_FTS_TOP, {"match": _fts_match(terms, all_of), "n": n})).all()]
            kept: list[tuple[int, float]] = []
            for part in (top[:k], top[k: 4 * k]):
                if not part or len(kept) >= k:
                    break
                owners = {int(seq): (store, file) for seq, store, file in
                          (await conn.execute(_CHUNK_OWNERS, {"seqs": [seq for seq, _ in part]})).all()}
                kept += [(seq, score) for seq, score in part
                         if (owner := owners.get(seq)) is not None and owner[0] in stores
                         and (files is None or owner[1] in files)]
            if len(kept) >= k or len(top) < 4 * k:  # enough, or every match of the index was looked at
                return TextMatches(kept[:k], dict(top), 0.0 if len(top) < n else top[-1][1])
        statement = _FTS_SEARCH.text.format(files="AND c.file_id IN :files " if file_ids is not None else "")
        params: dict[str, Any] = {"match": _fts_match(terms, all_of), "stores": store_ids, "k": k}
        binds: list[BindParameter[Any]] = [bindparam("stores", expanding=True)]
        if file_ids is not None:
            params["files"] = file_ids
            binds.append(bindparam("files", expanding=True))
        async with self.engine.connect() as conn:
            rows = [(int(seq), float(score)) for seq, score in
                    (await conn.execute(text(statement).bindparams(*binds), params)).all()]
        return TextMatches(rows, dict(rows), rows[-1][1] if len(rows) == k else 0.0)

    async def fts_chunk_stats(self, seqs: list[int]) -> tuple[int, float, dict[int, int], dict[int, str]]:
        """What bm25() reads of the FTS5 index for these chunks (retrieval/bm25.py): the index's row count and
        mean row length in tokens, and each chunk's length; with the chunks' texts."""
        async with self.engine.connect() as conn:
            block = (await conn.execute(_FTS_AVERAGES)).scalar()
            found = (await conn.execute(_FTS_SIZES, {"seqs": seqs})).all() if seqs else []
        averages = _varints(bytes(block)) if block else []
        rows = averages[0] if averages else 0
        mean_length = sum(averages[1:]) / rows if rows else 0.0
        lengths = {int(seq): sum(_varints(bytes(size))) for seq, _, size in found if size is not None}
        return rows, mean_length, lengths, {int(seq): body for seq, body, _ in found}

    # -- PostgreSQL ----------------------------------------------------------------------------------

    async def pg_vector_search(self, store_ids: list[str], dimensions: int, vector: npt.NDArray[np.float32], k: int,
                               file_ids: list[str] | None) -> list[tuple[int, float]]:
        expression, _ops = hnsw_expression(dimensions)
        cast = "halfvec" if "halfvec" in expression else "vector"
        files = "AND file_id = ANY(:files) " if file_ids is not None else ""
        statement = text(
            f"SELECT seq, 1 - ({expression} <=> CAST(:q AS {cast}({dimensions}))) AS similarity "
            f"FROM vector_store_chunks WHERE vector_dims(embedding) = {int(dimensions)} "
            f"AND vector_store_id = ANY(:stores) {files}"
            f"ORDER BY {expression} <=> CAST(:q AS {cast}({dimensions})) LIMIT :k")
        params: dict[str, Any] = {"q": vector_literal(vector), "stores": store_ids, "k": k}
        if file_ids is not None:
            params["files"] = file_ids
        async with self.engine.begin() as conn:
            # relaxed_order: the index scan goes on until k rows pass the filter (pgvector >= 0.8).
            # Both as SET LOCAL would set them (is_local), in one round trip.
            await conn.execute(text("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), "
                                    "set_config('hnsw.ef_search', :ef, true)"), {"ef": str(max(40, min(1000, 2 * k)))})
            rows = (await conn.execute(statement, params)).all()
        return [(int(seq), float(similarity)) for seq, similarity in rows]

    async def pg_lexemes(self, query: str) -> list[str]:
        """The query's distinct lexemes under the `english` configuration (stop words dropped, words stemmed)."""
        statement = text(f"SELECT tsvector_to_array(to_tsvector('{TEXT_SEARCH_CONFIG}', :q))")
        async with self.engine.connect() as conn:
            lexemes = (await conn.execute(statement, {"q": query})).scalar()
        return list(lexemes or [])[:_MAX_TERMS]

    async def pg_lexeme_shares(self) -> tuple[float, dict[str, float], float]:
        """The planner's statistics of the chunks' tsvectors (ANALYZE, autovacuum): the number of chunks, the
        share of chunks holding each of the most common lexemes, and a share for any other lexeme (half the
        least common listed, as the planner estimates it). No statistics: (0, {}, 0)."""
        statement = text(
            "SELECT c.reltuples, s.most_common_elems::text::text[], s.most_common_elem_freqs "
            "FROM pg_class c LEFT JOIN pg_stats s ON s.schemaname = current_schema() "
            "AND s.tablename = 'vector_store_chunks' AND s.attname = 'search_vector' "
            "WHERE c.oid = to_regclass('vector_store_chunks')")
        async with self.engine.connect() as conn:
            row = (await conn.execute(statement)).first()
        if row is None or not row[1] or not row[2]:
            return 0.0, {}, 0.0
        elements, freqs = list(row[1]), [float(f) for f in row[2]]
        # most_common_elem_freqs: one per element, then the minimum, the maximum and the null share.
        shares = dict(zip(elements, freqs[: len(elements)], strict=True))
        return max(0.0, float(row[0])), shares, min(shares.values(), default=0.0) / 2

    async def pg_text_search(self, store_ids: list[str], match: list[str], rank: list[str], k: int,
                             file_ids: list[str] | None, all_of: bool = False) -> list[tuple[int, float]]:
        """The k best chunks holding any of the `match` lexemes (or all), ranked by `ts_rank_cd` over `rank`."""
        if not match:
            return []
        files = "AND file_id = ANY(:files) " if file_ids is not None else ""
        statement = text(
            "SELECT seq, ts_rank_cd(search_vector, CAST(:rank AS tsquery)) AS score FROM vector_store_chunks "
            f"WHERE search_vector @@ CAST(:match AS tsquery) AND vector_store_id = ANY(:stores) {files}"
            "ORDER BY score DESC LIMIT :k")
        params: dict[str, Any] = {"match": _tsquery(match, all_of), "rank": _tsquery(rank), "stores": store_ids,
                                  "k": k}
        if file_ids is not None:
            params["files"] = file_ids
        async with self.engine.connect() as conn:
            rows = (await conn.execute(statement, params)).all()
        return [(int(seq), float(score)) for seq, score in rows]

    async def pg_scores(self, seqs: list[int], dimensions: int, vector: npt.NDArray[np.float32],
                        lexemes: list[str]) -> dict[int, tuple[float, float]]:
        """Both scores of the given chunks: (cosine similarity, ts_rank_cd over the lexemes)."""
        if not seqs:
            return {}
        rank = "ts_rank_cd(search_vector, CAST(:tsq AS tsquery))" if lexemes else "0.0"
        statement = text(f"SELECT seq, 1 - (embedding <=> CAST(:q AS vector)) AS similarity, {rank} AS score "
                         "FROM vector_store_chunks WHERE seq = ANY(:seqs)")
        params: dict[str, Any] = {"q": vector_literal(vector), "seqs": seqs}
        if lexemes:
            params["tsq"] = _tsquery(lexemes)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(statement, params)).all()
        return {int(seq): (float(similarity), float(score)) for seq, similarity, score in rows}
