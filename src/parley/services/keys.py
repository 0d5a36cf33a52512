"""API keys: who a request comes from (`Caller`), and managing keys (`/v1/organization/keys`, `parley keys`).

Two roles. A project key uses the API of its project: it may expire, be limited to some models, and carry
rate limits and budgets (services/limits.py). An admin key belongs to no project and uses only the
`/v1/organization/*` endpoints (usage, costs, keys), as OpenAI's admin keys do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from parley.config import RateLimits
from parley.errors import InvalidRequest, NotFound, PermissionDenied
from parley.store.base import ApiKeyRecord, KeySpec, KeyStore


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sends a request. `project_id` is None for an admin key; `key_id` is None when no key is required
    (local development mode, where the caller is the `default` project and may use the admin endpoints too)."""

    project_id: str | None
    key_id: str | None = None
    admin: bool = False
    allowed_models: frozenset[str] | None = None  # None: every model
    limits: RateLimits | None = None

    @classmethod
    def of_key(cls, record: ApiKeyRecord) -> Caller:
        if record.role == "admin":
            return cls(None, record.id, admin=True)
        allowed = frozenset(record.allowed_models) if record.allowed_models is not None else None
        return cls(record.project_id, record.id, allowed_models=allowed, limits=record.limits)

    @property
    def project(self) -> str:
        """The project this caller acts in; an admin key has none (403)."""
        self.check_project()
        assert self.project_id is not None
        return self.project_id

    def check_project(self) -> None:
        if self.project_id is None:
            raise PermissionDenied("An admin key can only be used with the /v1/organization endpoints; "
                                   "use a project key for this request.")

    def may_use(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models

    def check_model(self, model: str, param: str = "model") -> None:
        """A model outside the key's allowed list is a 404 as if it did not exist (as OpenAI answers a project
        without access to a model)."""
        if not self.may_use(model):
            raise NotFound(f"The model '{model}' does not exist or you do not have access to it.", param=param,
                           code="model_not_found")

    def check_admin(self) -> None:
        if not self.admin:
            raise PermissionDenied("This endpoint needs an admin key (parley keys create --role admin).")


def key_object(record: ApiKeyRecord, secret: str | None = None) -> dict[str, Any]:
    """A key as the API shows it: never its secret, except `value` once, when it is created."""
    body: dict[str, Any] = {
        "object": "organization.api_key",
        "id": record.id,
        "name": record.name,
        "role": record.role,
        "project_id": record.project_id or None,
        "redacted_value": record.key_prefix + "****",
        "created_at": record.created_at,
        "expires_at": record.expires_at,
        "revoked_at": record.revoked_at,
        "allowed_models": list(record.allowed_models) if record.allowed_models is not None else None,
        "limits": record.limits.model_dump(exclude_none=True) if record.limits is not None else None,
    }
    if secret is not None:
        body["value"] = secret
    return body


class KeysService:
    def __init__(self, store: KeyStore, clock: Any = time.time) -> None:
        self._store = store
        self._clock = clock

    async def create(self, project_id: str | None, spec: KeySpec) -> dict[str, Any]:
        if spec.role == "project" and not project_id:
            raise InvalidRequest("A project key needs 'project_id'.", param="project_id")
        self._check(spec)
        record, secret = await self._store.create_key(project_id or "", spec.name or project_id or "admin", spec)
        return key_object(record, secret)

    async def list(self, project_id: str | None, after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Keys (revoked ones too) in creation order; `after` is a key id."""
        records = await self._store.list_keys(project_id)
        if after is not None:
            index = next((i for i, r in enumerate(records) if r.id == after), None)
            if index is None:
                raise InvalidRequest(f"No key with id '{after}'.", param="after")
            records = records[index + 1:]
        return [key_object(r) for r in records[:limit]], len(records) > limit

    async def retrieve(self, key_id: str) -> dict[str, Any]:
        record = await self._store.get_key(key_id)
        if record is None:
            raise NotFound(f"No key with id '{key_id}'.", param="key_id")
        return key_object(record)

    async def update(self, key_id: str, spec: KeySpec) -> dict[str, Any]:
        self._check(spec)
        record = await self._store.update_key(key_id, spec)
        if record is None:
            raise NotFound(f"No active key with id '{key_id}'.", param="key_id")
        return key_object(record)

    async def revoke(self, key_id: str) -> dict[str, Any]:
        if not await self._store.revoke_key(key_id):
            raise NotFound(f"No active key with id '{key_id}'.", param="key_id")
        return {"object": "organization.api_key.deleted", "id": key_id, "deleted": True}

    def _check(self, spec: KeySpec) -> None:
        if "expires_at" not in spec.keep and spec.expires_at is not None and spec.expires_at <= self._clock():
            raise InvalidRequest("'expires_at' must be in the future.", param="expires_at")
        if spec.role == "admin" and (spec.allowed_models is not None or spec.limits is not None):
            raise InvalidRequest("An admin key makes no model requests: it takes no allowed_models or limits.",
                                 param="allowed_models" if spec.allowed_models is not None else "limits")
