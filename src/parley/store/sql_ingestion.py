"""SQL of ingestion jobs: a vector store file `in_progress` is a job, claimed by one worker at a time with a lease
it renews (as background responses are, store/sql_background.py). Its chunks are written in the one transaction
that completes it, after deleting any earlier ones: a job run twice (a worker died after its lease ran out, or
the file was re-attached) never leaves duplicate chunks, and a job whose row changed meanwhile (cancelled,
detached, claimed by another worker) writes nothing."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import orjson
from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from parley.store import tables
from parley.store.sql_vector_stores import bump_generation
from parley.store.vector_records import ChunkRow, IngestionJob

_vs = tables.vector_stores
_vf = tables.vector_store_files
_vc = tables.vector_store_chunks
_INSERT_BATCH = 500


def _now_ms() -> int:
    return int(time.time() * 1000)


def _claimable(now: int) -> Any:
    return and_(_vf.c.status == "in_progress", or_(_vf.c.lease_until.is_(None), _vf.c.lease_until < now))


class SqlIngestion:
    engine: AsyncEngine

    async def claim_ingestion(self, worker_id: str, lease_ms: int, limit: int) -> list[IngestionJob]:
        """Atomically take up to `limit` waiting files (or files whose worker stopped renewing), oldest first."""
        now = _now_ms()
        claimed: list[IngestionJob] = []
        async with self.engine.begin() as conn:
            candidates = (await conn.execute(
                select(_vf.c.seq).where(_claimable(now)).order_by(_vf.c.seq).limit(limit))).scalars().all()
            for seq in candidates:
                result = await conn.execute(
                    update(_vf).where(_vf.c.seq == seq, _claimable(now))
                    .values(worker_id=worker_id, lease_until=now + lease_ms, attempts=_vf.c.attempts + 1))
                if result.rowcount:
                    job = await _job(conn, seq)
                    if job is not None:
                        claimed.append(job)
        return claimed

    async def renew_ingestion(self, worker_id: str, seqs: list[int], lease_ms: int) -> set[int]:
        """Extend this worker's leases; returns the jobs it still holds (the others were cancelled, detached or
        taken over: their work must stop)."""
        if not seqs:
            return set()
        mine = and_(_vf.c.worker_id == worker_id, _vf.c.seq.in_(seqs), _vf.c.status == "in_progress")
        async with self.engine.begin() as conn:
            await conn.execute(update(_vf).where(mine).values(lease_until=_now_ms() + lease_ms))
            held = (await conn.execute(select(_vf.c.seq).where(mine))).scalars().all()
        return {int(seq) for seq in held}

    async def complete_ingestion(self, job: IngestionJob, worker_id: str, chunks: list[ChunkRow],
                                 usage_bytes: int) -> bool:
        """Replace the file's chunks and mark it completed, if the job is still this worker's."""
        postgres = self.engine.dialect.name == "postgresql"
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(_vf).where(_vf.c.seq == job.seq, _vf.c.worker_id == worker_id, _vf.c.status == "in_progress")
                .values(status="completed", usage_bytes=usage_bytes, chunk_count=len(chunks), last_error=None,
                        worker_id=None, lease_until=None))
            if not result.rowcount:
                return False  # nothing was written
            await conn.execute(delete(_vc).where(_vc.c.vector_store_id == job.vector_store_id,
                                                 _vc.c.file_id == job.file_id))
            rows = [{"vector_store_id": job.vector_store_id, "file_id": job.file_id, "position": c.position,
                     "start_char": c.start, "end_char": c.end, "text": c.text,
                     "embedding": c.embedding if postgres else np.asarray(c.embedding, "<f4").tobytes()}
                    for c in chunks]
            for start in range(0, len(rows), _INSERT_BATCH):
                await conn.execute(insert(_vc), rows[start:start + _INSERT_BATCH])
            await conn.execute(bump_generation(job.vector_store_id))
        return True

    async def fail_ingestion(self, job: IngestionJob, worker_id: str, error: dict[str, str]) -> bool:
        """The file failed: its status says why, and it has no chunks (not even a previous attachment's)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(_vf).where(_vf.c.seq == job.seq, _vf.c.worker_id == worker_id, _vf.c.status == "in_progress")
                .values(status="failed", last_error=orjson.dumps(error).decode(), usage_bytes=0, chunk_count=0,
                        worker_id=None, lease_until=None))
            if not result.rowcount:
                return False
            deleted = await conn.execute(delete(_vc).where(_vc.c.vector_store_id == job.vector_store_id,
                                                           _vc.c.file_id == job.file_id))
            if deleted.rowcount:
                await conn.execute(bump_generation(job.vector_store_id))
        return True

    async def retry_ingestion(self, job: IngestionJob, worker_id: str, delay_ms: int) -> bool:
        """Give the job back, to be claimed again (by any worker) after `delay_ms`."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(_vf).where(_vf.c.seq == job.seq, _vf.c.worker_id == worker_id, _vf.c.status == "in_progress")
                .values(worker_id=None, lease_until=_now_ms() + delay_ms))
        return bool(result.rowcount)


async def _job(conn: AsyncConnection, seq: int) -> IngestionJob | None:
    query = (select(_vf.c.seq, _vf.c.vector_store_id, _vf.c.file_id, _vf.c.project_id, _vf.c.filename,
                    _vf.c.max_chunk_tokens, _vf.c.chunk_overlap_tokens, _vf.c.attempts, _vs.c.embedding_model,
                    _vs.c.dimensions)
             .join(_vs, _vs.c.id == _vf.c.vector_store_id).where(_vf.c.seq == seq))
    row = (await conn.execute(query)).first()
    if row is None:
        return None
    return IngestionJob(int(row.seq), row.vector_store_id, row.file_id, row.project_id, row.filename,
                        int(row.max_chunk_tokens), int(row.chunk_overlap_tokens), int(row.attempts),
                        row.embedding_model, int(row.dimensions))
