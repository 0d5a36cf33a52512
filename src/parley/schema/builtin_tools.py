"""Parameters of the built-in (server-run) tools a request may declare in `tools` (api-surface.md §4).

Each tool type Parley runs maps to its parameter model, the tool it is, and the function name the model
calls it by. Unknown keys inside a tool entry are ignored (clients send fields newer than the SDK's types);
known ones are validated. Tool types absent here are refused with `unsupported_tool` (schema/tools.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class HybridSearch(_Lenient):
    embedding_weight: float = Field(ge=0)
    text_weight: float = Field(ge=0)


class RankingOptions(_Lenient):
    ranker: Literal["none", "auto", "default-2024-11-15", "default_2024_08_21"] | None = None
    score_threshold: float | None = Field(default=None, ge=0, le=1)
    hybrid_search: HybridSearch | None = None


class FileSearchParams(_Lenient):
    type: Literal["file_search"]
    vector_store_ids: list[str] = Field(min_length=1, max_length=16)
    max_num_results: int | None = Field(default=None, ge=1, le=50)
    filters: dict[str, Any] | None = None  # comparison or compound filter, checked by the vector stores service
    ranking_options: RankingOptions | None = None


# tool type -> (the tool it is, the function name the model calls, its parameters)
BUILTIN_PARAMS: Mapping[str, tuple[str, str, type[BaseModel]]] = MappingProxyType({
    "file_search": ("file_search", "file_search", FileSearchParams),
})
