"""What the store keeps of vector stores, their files, batches, ingestion jobs and chunks (frozen records)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

DAY_S = 86400


@dataclass(frozen=True, slots=True)
class VectorStoreRecord:
    id: str
    project_id: str
    name: str
    description: str | None
    created_at: int
    last_active_at: int
    expires_days: int | None
    metadata: dict[str, str]
    embedding_model: str
    dimensions: int
    generation: int = 0

    @property
    def expires_at(self) -> int | None:
        return None if self.expires_days is None else self.last_active_at + self.expires_days * DAY_S

    def expired(self, now: int) -> bool:
        expires_at = self.expires_at
        return expires_at is not None and now >= expires_at


@dataclass(frozen=True, slots=True)
class FileCounts:
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    usage_bytes: int = 0

    @property
    def total(self) -> int:
        return self.in_progress + self.completed + self.failed + self.cancelled

    def wire(self) -> dict[str, int]:
        return {"in_progress": self.in_progress, "completed": self.completed, "failed": self.failed,
                "cancelled": self.cancelled, "total": self.total}


@dataclass(frozen=True, slots=True)
class StoreFileRecord:
    """A file attached to a store (its `id` on the wire is the file's id)."""

    vector_store_id: str
    file_id: str
    project_id: str
    batch_id: str | None
    filename: str
    created_at: int
    status: str
    usage_bytes: int
    chunk_count: int
    last_error: dict[str, str] | None
    attributes: dict[str, Any]
    max_chunk_tokens: int
    chunk_overlap_tokens: int


@dataclass(frozen=True, slots=True)
class NewStoreFile:
    file_id: str
    filename: str
    attributes: dict[str, Any]
    max_chunk_tokens: int
    chunk_overlap_tokens: int


@dataclass(frozen=True, slots=True)
class BatchRecord:
    id: str
    vector_store_id: str
    project_id: str
    created_at: int
    cancelled_at: int | None = None


@dataclass(frozen=True, slots=True)
class IngestionJob:
    """A claimed file: what the worker needs to index it, and the row (`seq`) its lease is on."""

    seq: int
    vector_store_id: str
    file_id: str
    project_id: str
    filename: str
    max_chunk_tokens: int
    chunk_overlap_tokens: int
    attempts: int
    embedding_model: str
    dimensions: int


@dataclass(frozen=True, slots=True)
class ChunkRow:
    """A chunk to store: offsets in the file's text, the text and its unit-length embedding."""

    position: int
    start: int
    end: int
    text: str
    embedding: npt.NDArray[np.float32] = field(repr=False)


@dataclass(frozen=True, slots=True)
class ChunkText:
    seq: int
    vector_store_id: str
    file_id: str
    position: int
    start: int
    end: int
    text: str


@dataclass(frozen=True, slots=True)
class StoreFileInfo:
    """What search shows of a file: its name and attributes (and its status, for filters on files)."""

    file_id: str
    filename: str
    attributes: dict[str, Any]
