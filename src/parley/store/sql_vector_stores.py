"""SQL of vector stores, their files and file batches (migration 6), mixed into SqlStore. Chunks and search:
store/sql_vector_search.py; ingestion jobs: store/sql_ingestion.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Row, and_, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from parley.errors import InvalidRequest
from parley.store import tables
from parley.store.base import PageQuery
from parley.store.pages import keyset_page
from parley.store.vector_records import (
    BatchRecord,
    FileCounts,
    NewStoreFile,
    StoreFileInfo,
    StoreFileRecord,
    VectorStoreRecord,
)

_vs = tables.vector_stores
_vf = tables.vector_store_files
_vb = tables.vector_store_file_batches
_vc = tables.vector_store_chunks
_FILE_COLUMNS = (_vf.c.vector_store_id, _vf.c.file_id, _vf.c.project_id, _vf.c.batch_id, _vf.c.filename,
                 _vf.c.created_at, _vf.c.status, _vf.c.usage_bytes, _vf.c.chunk_count, _vf.c.last_error,
                 _vf.c.attributes, _vf.c.max_chunk_tokens, _vf.c.chunk_overlap_tokens)
UNSET: Any = object()  # "not given" for nullable fields of an update


def _store(row: Row[Any]) -> VectorStoreRecord:
    return VectorStoreRecord(row.id, row.project_id, row.name, row.description, int(row.created_at),
                             int(row.last_active_at), row.expires_days, orjson.loads(row.metadata),
                             row.embedding_model, int(row.dimensions), int(row.generation))


def _file(row: Any) -> StoreFileRecord:
    return StoreFileRecord(row.vector_store_id, row.file_id, row.project_id, row.batch_id, row.filename,
                           int(row.created_at), row.status, int(row.usage_bytes), int(row.chunk_count),
                           orjson.loads(row.last_error) if row.last_error else None, orjson.loads(row.attributes),
                           int(row.max_chunk_tokens), int(row.chunk_overlap_tokens))


def _batch(row: Row[Any]) -> BatchRecord:
    return BatchRecord(row.id, row.vector_store_id, row.project_id, int(row.created_at),
                       None if row.cancelled_at is None else int(row.cancelled_at))


def bump_generation(store_id: str) -> Any:
    return update(_vs).where(_vs.c.id == store_id).values(generation=_vs.c.generation + 1)


class SqlVectorStores:
    engine: AsyncEngine

    # -- stores ------------------------------------------------------------------------------------

    async def insert_vector_store(self, record: VectorStoreRecord, files: Sequence[NewStoreFile] = (),
                                  now: int = 0) -> None:
        """The store, with `files` attached at `now` in the same transaction: a crash never leaves a store without
        the files it was created with."""
        async with self.engine.begin() as conn:
            await conn.execute(insert(_vs).values(
                id=record.id, project_id=record.project_id, name=record.name, description=record.description,
                created_at=record.created_at, last_active_at=record.last_active_at, expires_days=record.expires_days,
                metadata=orjson.dumps(record.metadata).decode(), embedding_model=record.embedding_model,
                dimensions=record.dimensions, generation=0,
            ))
            if files:
                await _attach(conn, record.project_id, record.id, files, now, None)

    async def get_vector_stores(self, project_id: str, store_ids: list[str]) -> dict[str, VectorStoreRecord]:
        query = select(_vs).where(_vs.c.project_id == project_id, _vs.c.id.in_(store_ids))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {row.id: _store(row) for row in rows}

    async def list_vector_stores(self, project_id: str, page: PageQuery) -> tuple[list[VectorStoreRecord], bool]:
        query = select(_vs).where(_vs.c.project_id == project_id)
        async with self.engine.connect() as conn:

            async def locate(store_id: str, param: str) -> int:
                return await _seq_of(conn, _vs.c.seq, and_(_vs.c.project_id == project_id, _vs.c.id == store_id),
                                     f"No vector store with id '{store_id}'.", param)

            rows, has_more = await keyset_page(conn, query, _vs.c.seq, page, locate)
        return [_store(row) for row in rows], has_more

    async def update_vector_store(self, project_id: str, store_id: str, *, name: str | None = None,
                                  expires_days: Any = UNSET, metadata: dict[str, str] | None = None,
                                  last_active_at: int | None = None) -> VectorStoreRecord | None:
        values: dict[str, Any] = {}
        if name is not None:
            values["name"] = name
        if expires_days is not UNSET:
            values["expires_days"] = expires_days
        if metadata is not None:
            values["metadata"] = orjson.dumps(metadata).decode()
        if last_active_at is not None:
            values["last_active_at"] = last_active_at
        where = (_vs.c.project_id == project_id, _vs.c.id == store_id)
        async with self.engine.begin() as conn:
            if values:
                await conn.execute(update(_vs).where(*where).values(**values))
            row = (await conn.execute(select(_vs).where(*where))).first()
        return _store(row) if row is not None else None

    async def touch_vector_stores(self, store_ids: list[str], now: int, older_than: int) -> None:
        """last_active_at = now where it is older than `older_than` (a search keeps its stores from expiring
        without a write per search)."""
        async with self.engine.begin() as conn:
            await conn.execute(update(_vs).where(_vs.c.id.in_(store_ids), _vs.c.last_active_at < older_than)
                               .values(last_active_at=now))

    async def delete_vector_store(self, project_id: str, store_id: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(_vs).where(_vs.c.project_id == project_id, _vs.c.id == store_id))
            if not result.rowcount:
                return False
            for table in (_vf, _vb, _vc):
                await conn.execute(delete(table).where(table.c.vector_store_id == store_id))
        return True

    async def file_counts(self, store_ids: list[str], batch_id: str | None = None) -> dict[str, FileCounts]:
        """Files by status and bytes used, per store (or of one batch)."""
        where: list[ColumnElement[bool]] = [_vf.c.vector_store_id.in_(store_ids)]
        if batch_id is not None:
            where.append(_vf.c.batch_id == batch_id)
        query = (select(_vf.c.vector_store_id, _vf.c.status, func.count(), func.sum(_vf.c.usage_bytes))
                 .where(*where).group_by(_vf.c.vector_store_id, _vf.c.status))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        counts: dict[str, dict[str, int]] = {store_id: {} for store_id in store_ids}
        for store_id, status, count, used in rows:
            entry = counts[store_id]
            entry[status] = int(count)
            entry["usage_bytes"] = entry.get("usage_bytes", 0) + int(used or 0)
        return {store_id: FileCounts(**entry) for store_id, entry in counts.items()}

    # -- files -------------------------------------------------------------------------------------

    async def attach_files(self, project_id: str, store_id: str, files: list[NewStoreFile], now: int,
                           batch: BatchRecord | None = None) -> bool:
        """Attach (or re-attach, replacing the earlier attachment) files as waiting ingestion jobs, with the
        batch if any, in one transaction. False if the store is gone."""
        async with self.engine.begin() as conn:
            exists = (await conn.execute(
                select(_vs.c.id).where(_vs.c.project_id == project_id, _vs.c.id == store_id))).first()
            if exists is None:
                return False
            await _attach(conn, project_id, store_id, files, now, batch)
        return True

    async def get_store_file(self, store_id: str, file_id: str) -> StoreFileRecord | None:
        query = select(*_FILE_COLUMNS).where(_vf.c.vector_store_id == store_id, _vf.c.file_id == file_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _file(row) if row is not None else None

    async def list_store_files(self, store_id: str, status: str | None, page: PageQuery,
                               batch_id: str | None = None) -> tuple[list[StoreFileRecord], bool]:
        where: list[ColumnElement[bool]] = [_vf.c.vector_store_id == store_id]
        if status is not None:
            where.append(_vf.c.status == status)
        if batch_id is not None:
            where.append(_vf.c.batch_id == batch_id)
        query = select(*_FILE_COLUMNS).where(*where)
        async with self.engine.connect() as conn:

            async def locate(file_id: str, param: str) -> int:
                return await _seq_of(conn, _vf.c.seq, and_(_vf.c.vector_store_id == store_id,
                                                           _vf.c.file_id == file_id),
                                     f"No file with id '{file_id}' in this vector store.", param)

            rows, has_more = await keyset_page(conn, query, _vf.c.seq, page, locate)
        return [_file(row) for row in rows], has_more

    async def update_store_file_attributes(self, store_id: str, file_id: str,
                                           attributes: dict[str, Any]) -> StoreFileRecord | None:
        where = (_vf.c.vector_store_id == store_id, _vf.c.file_id == file_id)
        async with self.engine.begin() as conn:
            result = await conn.execute(update(_vf).where(*where).values(attributes=orjson.dumps(attributes).decode()))
            if not result.rowcount:
                return None
            await conn.execute(bump_generation(store_id))
            row = (await conn.execute(select(*_FILE_COLUMNS).where(*where))).first()
        return _file(row) if row is not None else None

    async def detach_file(self, store_id: str, file_id: str) -> bool:
        """The file leaves the store with its chunks (its ingestion, if running, finds its row gone)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(_vf).where(_vf.c.vector_store_id == store_id, _vf.c.file_id == file_id))
            if not result.rowcount:
                return False
            await conn.execute(delete(_vc).where(_vc.c.vector_store_id == store_id, _vc.c.file_id == file_id))
            await conn.execute(bump_generation(store_id))
        return True

    async def detach_file_everywhere(self, project_id: str, file_id: str) -> list[str]:
        """A deleted file leaves every store of its project; returns those stores."""
        query = select(_vf.c.vector_store_id).where(_vf.c.project_id == project_id, _vf.c.file_id == file_id)
        async with self.engine.connect() as conn:
            store_ids = list((await conn.execute(query)).scalars())
        return [store_id for store_id in store_ids if await self.detach_file(store_id, file_id)]

    async def store_files_info(self, store_ids: list[str]) -> dict[str, dict[str, StoreFileInfo]]:
        """Per store, its files' names and attributes (what search results show and filters test)."""
        query = select(_vf.c.vector_store_id, _vf.c.file_id, _vf.c.filename, _vf.c.attributes).where(
            _vf.c.vector_store_id.in_(store_ids))
        out: dict[str, dict[str, StoreFileInfo]] = {store_id: {} for store_id in store_ids}
        async with self.engine.connect() as conn:
            for store_id, file_id, filename, attributes in (await conn.execute(query)).all():
                out[store_id][file_id] = StoreFileInfo(file_id, filename, orjson.loads(attributes))
        return out

    # -- batches -----------------------------------------------------------------------------------

    async def get_batch(self, store_id: str, batch_id: str) -> BatchRecord | None:
        query = select(_vb).where(_vb.c.vector_store_id == store_id, _vb.c.id == batch_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _batch(row) if row is not None else None

    async def cancel_batch(self, batch_id: str, now: int) -> bool:
        """Cancel the batch's files still in progress (their workers find them cancelled); False if none was."""
        async with self.engine.begin() as conn:
            result = await conn.execute(update(_vf).where(_vf.c.batch_id == batch_id, _vf.c.status == "in_progress")
                                        .values(status="cancelled", worker_id=None, lease_until=None))
            if not result.rowcount:
                return False
            await conn.execute(update(_vb).where(_vb.c.id == batch_id).values(cancelled_at=now))
        return True


async def _seq_of(conn: AsyncConnection, key: Any, where: ColumnElement[bool], message: str, param: str) -> int:
    seq = (await conn.execute(select(key).where(where))).scalar()
    if seq is None:
        raise InvalidRequest(message, param=param)
    return int(seq)


async def _attach(conn: AsyncConnection, project_id: str, store_id: str, files: Sequence[NewStoreFile], now: int,
                  batch: BatchRecord | None) -> None:
    """Attach (or re-attach, replacing the earlier attachment) files to an existing store, with the batch if any."""
    if batch is not None:
        await conn.execute(insert(_vb).values(id=batch.id, vector_store_id=store_id, project_id=project_id,
                                              created_at=batch.created_at, cancelled_at=None))
    ids = [f.file_id for f in files]
    for start in range(0, len(ids), 500):
        await conn.execute(delete(_vf).where(_vf.c.vector_store_id == store_id,
                                             _vf.c.file_id.in_(ids[start:start + 500])))
    await conn.execute(insert(_vf), [{
        "vector_store_id": store_id, "file_id": f.file_id, "project_id": project_id,
        "batch_id": batch.id if batch else None, "filename": f.filename, "created_at": now,
        "status": "in_progress", "usage_bytes": 0, "chunk_count": 0, "last_error": None,
        "attributes": orjson.dumps(f.attributes).decode(), "max_chunk_tokens": f.max_chunk_tokens,
        "chunk_overlap_tokens": f.chunk_overlap_tokens, "worker_id": None, "lease_until": None,
        "attempts": 0,
    } for f in files])
    await conn.execute(bump_generation(store_id))  # attributes may have changed
