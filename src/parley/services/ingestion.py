"""Ingestion of vector store files as durable background work: extract -> chunk -> embed -> index.

Every process runs one IngestionWorker. It claims waiting files from the database with an atomic conditional
UPDATE (so any process may index any file; at most `max_concurrent` at once here), renews their leases every
lease/3, and stops a file whose row changed meanwhile (cancelled, detached, re-attached). A file whose process
died is claimed again once its lease has run out and indexed from the start: its chunks are written in the one
transaction that completes it (store/sql_ingestion.py), so nothing is duplicated. A file that cannot be read
fails alone, with `last_error`; an embeddings upstream that is down or rate-limiting is retried later.
Extraction and chunking run in threads, embedding on the embedder's own threads: the event loop never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from parley.errors import NotFound, ParleyError, UnreadableFile, UpstreamError
from parley.ids import new_id
from parley.providers.tokens import Encodings
from parley.retrieval.chunking import ENCODING, ChunkingStrategy, chunk_text
from parley.retrieval.embed import Embedder
from parley.retrieval.extract import extract_text
from parley.services.files import FilesService
from parley.store.sql import SqlStore
from parley.store.vector_records import ChunkRow, IngestionJob

log = logging.getLogger("parley.ingestion")

_EMBED_BATCH = 64  # chunks per embed call (the embedder batches further)
_RETRYABLE = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class IngestionLimits:
    max_concurrent: int = 2
    lease_ms: int = 30_000
    poll_s: float = 1.0
    max_attempts: int = 5
    max_file_bytes: int = 128 * 1024 * 1024
    retry_delay_ms: int = 10_000


@dataclass(slots=True)
class IngestionStats:
    """What this process indexed (the benchmark reads it): files, chunks, seconds embedding and overall."""

    files: int = 0
    failed: int = 0
    chunks: int = 0
    embed_s: float = 0.0
    busy_s: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + seconds


class _Failed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class IngestionWorker:
    def __init__(self, store: SqlStore, files: FilesService, embedder: Embedder | None, encodings: Encodings,
                 limits: IngestionLimits) -> None:
        self._store = store
        self._files = files
        self._embedder = embedder
        self._encodings = encodings
        self._limits = limits
        self.worker_id = new_id("ing")
        self.stats = IngestionStats()
        self._running: dict[int, tuple[IngestionJob, asyncio.Task[None]]] = {}
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._dispatch(), name="parley-ingestion"),
                       loop.create_task(self._leases(), name="parley-ingestion-leases")]

    def notify(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """Stop; files being indexed are handed back at once (not after their lease) for the next process."""
        for task in self._loops:
            task.cancel()
        running = list(self._running.values())
        for _job, task in running:
            task.cancel()
        for task in [*self._loops, *(task for _job, task in running)]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for job, _task in running:
            with contextlib.suppress(Exception):
                await self._store.retry_ingestion(job, self.worker_id, 0)

    # -- loops -----------------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._limits.poll_s)
            self._wake.clear()
            free = self._limits.max_concurrent - len(self._running)
            if free <= 0 or self._embedder is None:
                continue
            try:
                jobs = await self._store.claim_ingestion(self.worker_id, self._limits.lease_ms, free)
            except Exception:
                log.exception("claiming ingestion jobs failed")
                continue
            for job in jobs:
                task = asyncio.get_running_loop().create_task(self._execute(job), name=f"ingest-{job.file_id}")
                self._running[job.seq] = (job, task)

    async def _leases(self) -> None:
        while True:
            await asyncio.sleep(self._limits.lease_ms / 3000)
            try:
                held = await self._store.renew_ingestion(self.worker_id, list(self._running), self._limits.lease_ms)
            except Exception:
                log.exception("renewing ingestion leases failed")
                continue
            for seq, (job, task) in list(self._running.items()):
                if seq not in held:  # cancelled, detached or re-attached meanwhile: stop the work
                    log.info("stopping the ingestion of %s into %s: it changed meanwhile", job.file_id,
                             job.vector_store_id)
                    task.cancel()

    async def _execute(self, job: IngestionJob) -> None:
        started = time.monotonic()
        try:
            await self._ingest(job)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("ingestion of %s crashed", job.file_id)
            with contextlib.suppress(Exception):
                await self._store.fail_ingestion(job, self.worker_id, {
                    "code": "server_error", "message": "The server failed while indexing the file."})
        finally:
            self.stats.busy_s += time.monotonic() - started
            self._running.pop(job.seq, None)
            self._wake.set()

    # -- one file ----------------------------------------------------------------------------------

    async def _ingest(self, job: IngestionJob) -> None:
        try:
            if job.attempts > self._limits.max_attempts:
                raise _Failed("server_error", f"Indexing the file was interrupted {job.attempts - 1} times; "
                                              "it was given up.")
            rows, usage = await self._index(job)
        except _Failed as failure:
            await self._fail(job, failure.code, failure.message)
            return
        except UpstreamError as err:
            if err.status in _RETRYABLE and job.attempts < self._limits.max_attempts:
                log.warning("embedding %s failed (%s); retrying later", job.file_id, err.message)
                await self._store.retry_ingestion(job, self.worker_id, self._limits.retry_delay_ms)
                return
            await self._fail(job, "server_error", f"The embedding model failed: {err.message}")
            return
        if await self._store.complete_ingestion(job, self.worker_id, rows, usage):
            self.stats.files += 1
            self.stats.chunks += len(rows)

    async def _fail(self, job: IngestionJob, code: str, message: str) -> None:
        if await self._store.fail_ingestion(job, self.worker_id, {"code": code, "message": message}):
            self.stats.failed += 1
            log.info("vector store file %s in %s failed: %s", job.file_id, job.vector_store_id, message)

    async def _index(self, job: IngestionJob) -> tuple[list[ChunkRow], int]:
        embedder = self._embedder
        if embedder is None:
            raise _Failed("server_error", "This server has no embedding model.")
        await embedder.ready()
        if (embedder.model_id, embedder.dimensions) != (job.embedding_model, job.dimensions):
            raise _Failed("server_error", f"The vector store was indexed with '{job.embedding_model}' but this "
                                          f"server now embeds with '{embedder.model_id}'.")
        clock = time.monotonic()
        try:
            record = await self._files.get(job.project_id, job.file_id)
            data = await self._files.read_bytes(job.project_id, job.file_id, self._limits.max_file_bytes)
        except NotFound:
            raise _Failed("invalid_file", f"File {job.file_id} no longer exists.") from None
        except ParleyError as err:  # too large to index
            raise _Failed("invalid_file", err.message) from None
        self.stats.add("read", time.monotonic() - clock)
        clock = time.monotonic()
        try:
            extracted = await asyncio.to_thread(extract_text, data, record.filename, record.content_type)
        except UnreadableFile as err:
            raise _Failed(err.code or "invalid_file", err.message) from None
        self.stats.add("extract", time.monotonic() - clock)
        clock = time.monotonic()
        encoding = await self._encodings.get(ENCODING)
        strategy = ChunkingStrategy(job.max_chunk_tokens, job.chunk_overlap_tokens)
        chunks = await asyncio.to_thread(chunk_text, encoding, extracted.text, strategy)
        self.stats.add("chunk", time.monotonic() - clock)
        clock = time.monotonic()
        rows: list[ChunkRow] = []
        for start in range(0, len(chunks), _EMBED_BATCH):
            batch = chunks[start:start + _EMBED_BATCH]
            # The batch's text at once: the local model embeds what overlapping chunks share only once.
            first, end = batch[0].start, batch[-1].end
            vectors = await embedder.embed_spans(extracted.text[first:end],
                                                 [(c.start - first, c.end - first) for c in batch])
            rows += [ChunkRow(c.index, c.start, c.end, c.text, v) for c, v in zip(batch, vectors, strict=True)]
        seconds = time.monotonic() - clock
        self.stats.embed_s += seconds
        self.stats.add("embed", seconds)
        usage = sum(len(r.text.encode()) for r in rows) + len(rows) * job.dimensions * 4
        return rows, usage
