"""The request body of POST /v1/responses/compact (api-surface.md §1.2 R7)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from parley.schema.id_fields import BodyId
from parley.schema.requests import PromptCacheOptions, ServiceTier, Short64


class CompactRequest(BaseModel):
    """`model` is required; there is no `conversation` field (an unknown field, ignored like any other)."""

    model_config = ConfigDict(extra="allow")  # unknown fields: api.http.FieldPolicy

    model: str
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    previous_response_id: BodyId | None = None
    prompt_cache_key: Short64 | None = None
    prompt_cache_options: PromptCacheOptions | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    service_tier: ServiceTier | None = None
