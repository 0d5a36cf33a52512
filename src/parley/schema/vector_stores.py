"""Request bodies of /v1/vector_stores (api-surface.md §1.5), validated as OpenAI validates them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, field_validator, model_validator

from parley.retrieval.chunking import AUTO, ChunkingStrategy, check_strategy
from parley.schema.id_fields import BodyId, NameText
from parley.schema.requests import _check_metadata

MAX_ATTRIBUTES = 16
MAX_BATCH_FILES = 2000
MAX_STORE_FILES = 500  # file_ids at creation (OpenAI's limit)
MAX_QUERIES = 10
Attributes = dict[str, str | float | bool]


def check_attributes(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if len(value) > MAX_ATTRIBUTES:
        raise ValueError(f"attributes may have at most {MAX_ATTRIBUTES} keys")
    for key, item in value.items():
        if len(key) > 64:
            raise ValueError(f"attribute key {key[:20]!r}... is longer than 64 characters")
        if isinstance(item, str) and len(item) > 512:
            raise ValueError(f"attribute {key!r} is longer than 512 characters")
    return value


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown fields: api.http.FieldPolicy


class StaticChunking(BaseModel):
    max_chunk_size_tokens: StrictInt
    chunk_overlap_tokens: StrictInt


class ChunkingStrategyParam(BaseModel):
    type: Literal["auto", "static"]
    static: StaticChunking | None = None

    @model_validator(mode="after")
    def _static(self) -> ChunkingStrategyParam:
        if self.type == "static":
            if self.static is None:
                raise ValueError("a static chunking strategy needs `static`")
            problem = check_strategy(self.static.max_chunk_size_tokens, self.static.chunk_overlap_tokens)
            if problem:
                raise ValueError(problem)
        return self

    def strategy(self) -> ChunkingStrategy:
        if self.type == "auto" or self.static is None:
            return AUTO
        return ChunkingStrategy(self.static.max_chunk_size_tokens, self.static.chunk_overlap_tokens)


def strategy_of(param: ChunkingStrategyParam | None) -> ChunkingStrategy:
    return param.strategy() if param is not None else AUTO


class ExpiresAfter(BaseModel):
    anchor: Literal["last_active_at"]
    days: StrictInt = Field(ge=1, le=365)


class CreateVectorStoreRequest(_Body):
    name: NameText | None = Field(default=None, max_length=256)
    description: NameText | None = Field(default=None, max_length=512)
    file_ids: list[BodyId] | None = Field(default=None, max_length=MAX_STORE_FILES)
    chunking_strategy: ChunkingStrategyParam | None = None
    expires_after: ExpiresAfter | None = None
    metadata: dict[str, str] | None = None

    _check_md = field_validator("metadata")(_check_metadata)


class UpdateVectorStoreRequest(_Body):
    """`expires_after: null` removes the expiry; an absent field is left as it is."""

    name: NameText | None = Field(default=None, max_length=256)
    expires_after: ExpiresAfter | None = None
    metadata: dict[str, str] | None = None

    _check_md = field_validator("metadata")(_check_metadata)


class CreateVectorStoreFileRequest(_Body):
    file_id: BodyId = Field(min_length=1)
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategyParam | None = None

    _check_attributes = field_validator("attributes")(check_attributes)


class UpdateVectorStoreFileRequest(_Body):
    attributes: Attributes | None

    _check_attributes = field_validator("attributes")(check_attributes)


class BatchFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    file_id: BodyId = Field(min_length=1)
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategyParam | None = None

    _check_attributes = field_validator("attributes")(check_attributes)


class CreateFileBatchRequest(_Body):
    """`file_ids` xor `files`; the global `attributes` and `chunking_strategy` apply to `file_ids` only."""

    file_ids: list[BodyId] | None = Field(default=None, min_length=1, max_length=MAX_BATCH_FILES)
    files: list[BatchFile] | None = Field(default=None, min_length=1, max_length=MAX_BATCH_FILES)
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategyParam | None = None

    _check_attributes = field_validator("attributes")(check_attributes)


class HybridSearchParam(BaseModel):
    model_config = ConfigDict(extra="ignore")

    embedding_weight: StrictFloat = Field(ge=0)
    text_weight: StrictFloat = Field(ge=0)


class RankingOptionsParam(BaseModel):
    model_config = ConfigDict(extra="ignore")

    ranker: Literal["none", "auto", "default-2024-11-15", "default_2024_08_21"] | None = None
    score_threshold: StrictFloat | None = Field(default=None, ge=0, le=1)
    hybrid_search: HybridSearchParam | None = None


class SearchRequest(_Body):
    query: str | list[str]
    filters: dict[str, Any] | None = None  # checked by retrieval/filters.py (params named inside it)
    max_num_results: StrictInt = Field(default=10, ge=1, le=50)
    ranking_options: RankingOptionsParam | None = None
    rewrite_query: StrictBool = False

    @field_validator("query")
    @classmethod
    def _queries(cls, value: str | list[str]) -> str | list[str]:
        queries = [value] if isinstance(value, str) else value
        if not queries or len(queries) > MAX_QUERIES:
            raise ValueError(f"query must be a string or 1 to {MAX_QUERIES} strings")
        if not all(q.strip() for q in queries):
            raise ValueError("query must not be empty")
        if any(len(q) > 4096 for q in queries):
            raise ValueError("a query may have at most 4096 characters")
        return value
