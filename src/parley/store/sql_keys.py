"""SQL implementation of KeyStore, mixed into SqlStore: API keys, stored as the SHA-256 of their secret.

A key's secret is returned once, when it is created; the table keeps its hash (looked up on every request,
never logged: SQLAlchemy runs with `hide_parameters`) and its first characters (shown in listings).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import replace
from typing import Any

import orjson
from sqlalchemy import RowMapping, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from parley.config import RateLimits
from parley.ids import new_id
from parley.store import tables
from parley.store.base import ApiKeyRecord, KeySpec

_KEY = tables.api_keys
_COLUMNS = (_KEY.c.id, _KEY.c.project_id, _KEY.c.name, _KEY.c.key_prefix, _KEY.c.created_at, _KEY.c.revoked_at,
            _KEY.c.role, _KEY.c.expires_at, _KEY.c.allowed_models, _KEY.c.limits)


def hash_key(secret: str) -> str:
    # Keys are 256-bit random tokens, so a fast hash is enough (no password stretching needed).
    return hashlib.sha256(secret.encode()).hexdigest()


def _record(row: RowMapping) -> ApiKeyRecord:
    allowed = tuple(orjson.loads(row["allowed_models"])) if row["allowed_models"] is not None else None
    limits = RateLimits.model_validate_json(row["limits"]) if row["limits"] is not None else None
    revoked, expires = row["revoked_at"], row["expires_at"]
    return ApiKeyRecord(row["id"], row["project_id"], row["name"], row["key_prefix"], int(row["created_at"]),
                        None if revoked is None else int(revoked), row["role"],
                        None if expires is None else int(expires), allowed, limits)


def _spec_values(spec: KeySpec) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": spec.name,
        "expires_at": spec.expires_at,
        "allowed_models": orjson.dumps(list(spec.allowed_models)).decode() if spec.allowed_models is not None
        else None,
        "limits": spec.limits.model_dump_json(exclude_none=True) if spec.limits is not None else None,
    }
    return {name: value for name, value in values.items() if name not in spec.keep}


class SqlKeys:
    engine: AsyncEngine

    async def create_key(self, project_id: str, name: str, spec: KeySpec | None = None) -> tuple[ApiKeyRecord, str]:
        spec = spec or KeySpec()
        secret = ("sk-parley-admin-" if spec.role == "admin" else "sk-parley-") + secrets.token_urlsafe(32)
        key_id = new_id("key")
        values = {**_spec_values(replace(spec, name=name, keep=frozenset())),
                  "id": key_id, "project_id": "" if spec.role == "admin" else project_id,
                  "key_hash": hash_key(secret), "key_prefix": secret[:14], "created_at": int(time.time()),
                  "revoked_at": None, "role": spec.role}
        async with self.engine.begin() as conn:
            await conn.execute(_KEY.insert().values(**values))
        record = await self.get_key(key_id)
        assert record is not None
        return record, secret

    async def list_keys(self, project_id: str | None = None) -> list[ApiKeyRecord]:
        query = select(*_COLUMNS)
        if project_id is not None:
            query = query.where(_KEY.c.project_id == project_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(_KEY.c.created_at, _KEY.c.id))).all()
        return [_record(row._mapping) for row in rows]

    async def get_key(self, key_id: str) -> ApiKeyRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(*_COLUMNS).where(_KEY.c.id == key_id))).first()
        return _record(row._mapping) if row else None

    async def update_key(self, key_id: str, spec: KeySpec) -> ApiKeyRecord | None:
        values = _spec_values(spec)
        if values:
            async with self.engine.begin() as conn:
                result = await conn.execute(
                    update(_KEY).where(_KEY.c.id == key_id, _KEY.c.revoked_at.is_(None)).values(**values))
            if not result.rowcount:
                return None
        record = await self.get_key(key_id)
        return record if record is not None and record.revoked_at is None else None

    async def revoke_key(self, key_id: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(_KEY).where(_KEY.c.id == key_id, _KEY.c.revoked_at.is_(None)).values(revoked_at=int(time.time()))
            )
        return bool(result.rowcount)

    async def find_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The active (not revoked) key with this hash; whether it has expired is the caller's check."""
        query = select(*_COLUMNS).where(_KEY.c.key_hash == key_hash, _KEY.c.revoked_at.is_(None))
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _record(row._mapping) if row else None

    async def any_active_key(self) -> bool:
        async with self.engine.connect() as conn:
            count = (await conn.execute(select(func.count()).where(_KEY.c.revoked_at.is_(None)))).scalar_one()
        return bool(count)
