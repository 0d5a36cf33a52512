"""SQL of search over vector store chunks. SQLite: FTS5 BM25 here, vectors loaded for numpy (services/
vector_search.py keeps them in memory). PostgreSQL: full text (`to_tsvector('english')`, GIN index) and pgvector
cosine distance (HNSW index per dimension, iterative scans so a filter on stores or files still fills the page).
Scores returned are "higher is better": -bm25 (FTS5's bm25() is negative), ts_rank_cd, cosine similarity."""

from __future__ import annotations

import re
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
_WORD = re.compile(r"\w+", re.UNICODE)
_MAX_TERMS = 32
_FETCH_BATCH = 5000

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
_FTS_COUNT = text("SELECT count(*) FROM vector_store_chunks_fts WHERE vector_store_chunks_fts MATCH :match")
_FTS_SCORES = text(
    "SELECT rowid, -bm25(vector_store_chunks_fts) FROM vector_store_chunks_fts "
    "WHERE vector_store_chunks_fts MATCH :match AND rowid IN :seqs"
)


def query_terms(query: str) -> list[str]:
    """The distinct words of a query, lower-cased (at most 32): the terms of a full-text OR query."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(query.lower()):
        seen.setdefault(word, None)
    return list(seen)[:_MAX_TERMS]


def _fts_match(terms: list[str]) -> str:
    return " OR ".join(f'"{term}"' for term in terms)  # \w+ words: no quote can occur inside


def _tsquery(terms: list[str]) -> str:
    return " | ".join(f"'{term}'" for term in terms)


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

    async def fts_document_counts(self, terms: list[str]) -> tuple[int, dict[str, int]]:
        """The number of chunks, and of chunks holding each term (all stores: FTS5's statistics are global)."""
        async with self.engine.connect() as conn:
            total = int((await conn.execute(text("SELECT max(seq) FROM vector_store_chunks"))).scalar() or 0)
            counts = {term: int((await conn.execute(_FTS_COUNT, {"match": _fts_match([term])})).scalar() or 0)
                      for term in terms}
        return total, counts

    async def fts_search(self, store_ids: list[str], terms: list[str], k: int,
                         file_ids: list[str] | None) -> list[tuple[int, float]]:
        """The k best BM25 matches in the stores (and files). First the index's best 4k matches of every store,
        kept if they hold at least k of these stores': then they are exactly these stores' k best (any other of
        their chunks scores below all 4k). Otherwise (stores that are a small part of the index) the join query."""
        if not terms:
            return []
        if file_ids is not None and not file_ids:
            return []
        async with self.engine.connect() as conn:
            top = (await conn.execute(_FTS_TOP, {"match": _fts_match(terms), "n": 4 * k})).all()
            if top:
                owners = {int(seq): (store, file) for seq, store, file in
                          (await conn.execute(_CHUNK_OWNERS, {"seqs": [int(seq) for seq, _ in top]})).all()}
                stores, files = set(store_ids), set(file_ids) if file_ids is not None else None
                kept = [(int(seq), float(score)) for seq, score in top
                        if (owner := owners.get(int(seq))) is not None and owner[0] in stores
                        and (files is None or owner[1] in files)]
                if len(kept) >= k or len(top) < 4 * k:  # enough, or every match of the index was seen
                    return kept[:k]
        statement = _FTS_SEARCH.text.format(files="AND c.file_id IN :files " if file_ids is not None else "")
        params: dict[str, Any] = {"match": _fts_match(terms), "stores": store_ids, "k": k}
        binds: list[BindParameter[Any]] = [bindparam("stores", expanding=True)]
        if file_ids is not None:
            params["files"] = file_ids
            binds.append(bindparam("files", expanding=True))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(text(statement).bindparams(*binds), params)).all()
        return [(int(seq), float(score)) for seq, score in rows]

    async def fts_scores(self, seqs: list[int], terms: list[str]) -> dict[int, float]:
        if not terms or not seqs:
            return {}
        statement = _FTS_SCORES.bindparams(bindparam("seqs", expanding=True))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(statement, {"match": _fts_match(terms), "seqs": seqs})).all()
        return {int(seq): float(score) for seq, score in rows}

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
            await conn.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
            await conn.execute(text(f"SET LOCAL hnsw.ef_search = {max(40, min(1000, 2 * int(k)))}"))
            rows = (await conn.execute(statement, params)).all()
        return [(int(seq), float(similarity)) for seq, similarity in rows]

    async def pg_text_search(self, store_ids: list[str], query: str, k: int,
                             file_ids: list[str] | None) -> list[tuple[int, float]]:
        terms = query_terms(query)
        if not terms:
            return []
        files = "AND file_id = ANY(:files) " if file_ids is not None else ""
        statement = text(
            "SELECT seq, ts_rank_cd(search_vector, query) AS score "
            f"FROM vector_store_chunks, to_tsquery('{TEXT_SEARCH_CONFIG}', :tsq) AS query "
            f"WHERE search_vector @@ query AND vector_store_id = ANY(:stores) {files}"
            "ORDER BY score DESC LIMIT :k")
        params: dict[str, Any] = {"tsq": _tsquery(terms), "stores": store_ids, "k": k}
        if file_ids is not None:
            params["files"] = file_ids
        async with self.engine.connect() as conn:
            rows = (await conn.execute(statement, params)).all()
        return [(int(seq), float(score)) for seq, score in rows]

    async def pg_scores(self, seqs: list[int], dimensions: int, vector: npt.NDArray[np.float32],
                        query: str) -> dict[int, tuple[float, float]]:
        """Both scores of the given chunks: (cosine similarity, ts_rank_cd)."""
        if not seqs:
            return {}
        terms = query_terms(query)
        rank = f"ts_rank_cd(search_vector, to_tsquery('{TEXT_SEARCH_CONFIG}', :tsq))" if terms else "0.0"
        statement = text(f"SELECT seq, 1 - (embedding <=> CAST(:q AS vector)) AS similarity, {rank} AS score "
                         "FROM vector_store_chunks WHERE seq = ANY(:seqs)")
        params: dict[str, Any] = {"q": vector_literal(vector), "seqs": seqs}
        if terms:
            params["tsq"] = _tsquery(terms)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(statement, params)).all()
        return {int(seq): (float(similarity), float(score)) for seq, similarity, score in rows}
