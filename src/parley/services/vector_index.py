"""SQLite's vector search: each store's embeddings as one float32 matrix in memory, searched with numpy.

The matrix of a store is loaded once and refreshed when the store's `generation` moves: chunks that are gone
are dropped, and only chunks newer than the last one loaded are read (chunk numbers are never reused). Stores
are evicted least recently used past `max_bytes`. Per app instance; nothing global.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from parley.store.vector_records import VectorStoreRecord


class ChunkVectors(Protocol):
    async def chunk_seqs(self, store_id: str) -> npt.NDArray[np.int64]: ...

    async def chunk_vectors(self, store_id: str, after_seq: int,
                            dimensions: int) -> tuple[npt.NDArray[np.int64], list[str], npt.NDArray[np.float32]]: ...


@dataclass(frozen=True, slots=True)
class StoreMatrix:
    """One store's chunks: `seqs` ascending, the file of each row (an index into `files`), the unit vectors."""

    generation: int
    seqs: npt.NDArray[np.int64]
    file_index: npt.NDArray[np.int32]
    files: tuple[str, ...]
    matrix: npt.NDArray[np.float32]

    @property
    def nbytes(self) -> int:
        return int(self.matrix.nbytes + self.seqs.nbytes + self.file_index.nbytes)

    def top(self, query: npt.NDArray[np.float32], k: int,
            allowed: frozenset[str] | None) -> list[tuple[int, float]]:
        """The k most similar chunks (of allowed files): (seq, cosine similarity)."""
        if not len(self.seqs):
            return []
        sims = self.matrix @ query
        if allowed is not None:
            ok = np.fromiter((name in allowed for name in self.files), dtype=bool, count=len(self.files))
            sims = np.where(ok[self.file_index], sims, -np.inf)
        k = min(k, len(sims))
        best = np.argpartition(-sims, k - 1)[:k]
        return [(int(self.seqs[i]), float(sims[i])) for i in best if np.isfinite(sims[i])]

    def similarities(self, query: npt.NDArray[np.float32], seqs: list[int]) -> dict[int, float]:
        wanted = np.asarray(seqs, dtype=np.int64)
        rows = np.searchsorted(self.seqs, wanted)
        rows = np.minimum(rows, max(0, len(self.seqs) - 1))
        found = (self.seqs[rows] == wanted) if len(self.seqs) else np.zeros(len(wanted), dtype=bool)
        sims = self.matrix[rows[found]] @ query if found.any() else np.zeros(0, dtype=np.float32)
        return {int(seq): float(sim) for seq, sim in zip(wanted[found], sims, strict=True)}


class VectorIndex:
    def __init__(self, source: ChunkVectors, max_bytes: int) -> None:
        self._source = source
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, StoreMatrix] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}

    async def matrix(self, store: VectorStoreRecord) -> StoreMatrix:
        cached = self._entries.get(store.id)
        if cached is not None and cached.generation == store.generation:
            self._entries.move_to_end(store.id)
            return cached
        lock = self._locks.setdefault(store.id, asyncio.Lock())
        async with lock:  # one refresh per store at a time; others wait for it
            cached = self._entries.get(store.id)
            if cached is None or cached.generation != store.generation:
                cached = await self._refresh(store, cached)
                self._entries[store.id] = cached
                self._evict()
            self._entries.move_to_end(store.id)
            return cached

    def forget(self, store_id: str) -> None:
        self._entries.pop(store_id, None)

    async def _refresh(self, store: VectorStoreRecord, cached: StoreMatrix | None) -> StoreMatrix:
        if cached is None or not len(cached.seqs):
            seqs, files, matrix = await self._source.chunk_vectors(store.id, 0, store.dimensions)
            names = tuple(dict.fromkeys(files))
            codes = {name: i for i, name in enumerate(names)}
            index = np.fromiter((codes[f] for f in files), dtype=np.int32, count=len(files))
            return StoreMatrix(store.generation, seqs, index, names, matrix)
        current = await self._source.chunk_seqs(store.id)
        keep = np.isin(cached.seqs, current, assume_unique=True)
        seqs, files, matrix = await self._source.chunk_vectors(store.id, int(cached.seqs[-1]), store.dimensions)
        known = list(cached.files)
        codes = {name: i for i, name in enumerate(known)}
        for name in files:
            if name not in codes:
                codes[name] = len(known)
                known.append(name)
        index = np.fromiter((codes[f] for f in files), dtype=np.int32, count=len(files))
        return StoreMatrix(store.generation, np.concatenate([cached.seqs[keep], seqs]),
                           np.concatenate([cached.file_index[keep], index]), tuple(known),
                           np.concatenate([cached.matrix[keep], matrix]))

    def _evict(self) -> None:
        total = sum(entry.nbytes for entry in self._entries.values())
        while total > self._max_bytes and len(self._entries) > 1:
            _store_id, entry = self._entries.popitem(last=False)
            total -= entry.nbytes
