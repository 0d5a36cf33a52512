"""Persistence contracts, one small protocol per aggregate. Implementations: store/sql.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

Item = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: str
    project_id: str
    name: str
    key_prefix: str
    created_at: int
    revoked_at: int | None


@dataclass(frozen=True, slots=True)
class PageQuery:
    limit: int = 20
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None
    before: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    data: list[Item]
    has_more: bool


class ResponseStore(Protocol):
    async def save_response(self, project_id: str, response: dict[str, Any], input_items: list[Item]) -> None:
        """Store a finished response: its row, its new input items and its output items, atomically."""

    async def get_response(self, project_id: str, response_id: str) -> dict[str, Any] | None: ...

    async def delete_response(self, project_id: str, response_id: str) -> bool: ...

    async def load_context(self, project_id: str, response_id: str) -> list[Item] | None:
        """Inputs and outputs of the whole previous_response_id chain, oldest first, in O(1) queries."""

    async def find_items(self, project_id: str, item_ids: list[str]) -> dict[str, Item]: ...

    async def list_input_items(self, project_id: str, response_id: str, page: PageQuery) -> Page | None: ...


class KeyStore(Protocol):
    async def create_key(self, project_id: str, name: str) -> tuple[ApiKeyRecord, str]: ...

    async def list_keys(self, project_id: str | None = None) -> list[ApiKeyRecord]: ...

    async def revoke_key(self, key_id: str) -> bool: ...

    async def find_key(self, key_hash: str) -> ApiKeyRecord | None: ...

    async def any_active_key(self) -> bool: ...
