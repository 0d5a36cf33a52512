"""Request bodies of /v1/conversations (api-surface.md §1.3); items are validated by schema.items."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from parley.schema.requests import _check_metadata

# "You may add up to 20 items at a time" (types/conversations/item_create_params.py).
MAX_ITEMS_PER_CALL = 20


class CreateConversationRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown fields: api.http.FieldPolicy

    items: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_ITEMS_PER_CALL)
    metadata: dict[str, str] | None = None

    _check_md = field_validator("metadata")(_check_metadata)


class UpdateConversationRequest(BaseModel):
    """`metadata` is required (it may be null) and replaces the whole map."""

    model_config = ConfigDict(extra="allow")  # unknown fields: api.http.FieldPolicy

    metadata: dict[str, str] | None

    _check_md = field_validator("metadata")(_check_metadata)


class AddItemsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown fields: api.http.FieldPolicy

    items: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_ITEMS_PER_CALL)
