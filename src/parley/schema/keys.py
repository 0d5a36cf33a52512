"""Bodies of the key admin API (`POST /v1/organization/keys`, `POST /v1/organization/keys/{id}`). No I/O."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from parley.config import RateLimits
from parley.schema.id_fields import BodyId, NameText

UPDATABLE = frozenset({"name", "expires_at", "allowed_models", "limits"})


class CreateKeyRequest(BaseModel):
    """A new key. Unknown keys: api.http.FieldPolicy."""

    model_config = ConfigDict(extra="allow")

    name: NameText = Field(default="", max_length=256)
    role: Literal["project", "admin"] = "project"
    project_id: BodyId | None = Field(default=None, min_length=1, max_length=128)
    expires_at: int | None = Field(default=None, ge=0, description="Unix seconds; null: never")
    allowed_models: list[str] | None = Field(default=None, description="null: every model")
    limits: RateLimits | None = None


class UpdateKeyRequest(BaseModel):
    """Fields present replace the key's (null clears: no expiry, every model, no limits); absent ones stay."""

    model_config = ConfigDict(extra="allow")

    name: NameText | None = Field(default=None, max_length=256)
    expires_at: int | None = Field(default=None, ge=0)
    allowed_models: list[str] | None = None
    limits: RateLimits | None = None
