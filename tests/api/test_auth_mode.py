"""`auth` decides whether keys are required (in-process app): `auto` closes when a key exists and never
reopens, `keys` is closed even without keys, `none` never checks."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import httpx

from parley.config import EmbeddedConfig, Settings
from parley.testing.in_process import in_process


def _settings(tmp_path: Path, auth: Literal["auto", "keys", "none"]) -> Settings:
    return Settings(data_dir=tmp_path, auth=auth, auth_cache_ttl_s=0, embedded=EmbeddedConfig(enabled=False))


async def _status(http: httpx.AsyncClient, key: str | None) -> int:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return (await http.get("/v1/models", headers=headers)).status_code


async def test_auto_closes_when_a_key_exists_and_stays_closed(tmp_path: Path) -> None:
    async with in_process(_settings(tmp_path, "auto")) as parley:
        store = parley.app.state.runtime.store
        assert await _status(parley.http, None) == 200  # no key yet: local development mode
        record, key = await store.create_key("p", "p")
        assert await _status(parley.http, None) == 401  # a key exists: required from now on
        assert await _status(parley.http, key) == 200
        assert await store.revoke_key(record.id)
        for attempt in (None, key, "sk-random"):
            assert await _status(parley.http, attempt) == 401  # the last key revoked: still closed


async def test_auto_with_a_key_at_start_up_is_closed(tmp_path: Path) -> None:
    async with in_process(_settings(tmp_path, "auto")) as parley:
        await parley.app.state.runtime.store.create_key("p", "p")
    async with in_process(_settings(tmp_path, "auto")) as parley:
        assert await _status(parley.http, None) == 401


async def test_keys_without_any_key_refuses_everyone(tmp_path: Path) -> None:
    async with in_process(_settings(tmp_path, "keys")) as parley:
        assert await _status(parley.http, None) == 401
        assert await _status(parley.http, "sk-anything") == 401


async def test_none_never_checks(tmp_path: Path) -> None:
    async with in_process(_settings(tmp_path, "none")) as parley:
        await parley.app.state.runtime.store.create_key("p", "p")
        assert await _status(parley.http, None) == 200
        assert await _status(parley.http, "sk-anything") == 200
