"""Keys (in-process app, httpx): the admin API at /v1/organization/keys, roles, expiry and allowed models."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import update

from parley.config import EmbeddedConfig, ModelConfig, Settings
from parley.store import tables
from parley.store.base import KeySpec
from parley.store.sql import SqlStore
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import in_process


@dataclass
class Env:
    http: httpx.AsyncClient
    admin: str
    store: SqlStore


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    fake = FakeUpstream()
    await fake.start()
    models = [ModelConfig(id=name, base_url=fake.base_url, upstream_model="echo") for name in ("echo", "other")]
    settings = Settings(data_dir=tmp_path_factory.mktemp("keys"), models=models, auth="keys", auth_cache_ttl_s=0,
                        embedded=EmbeddedConfig(enabled=False))
    async with in_process(settings) as parley:
        store: SqlStore = parley.app.state.runtime.store
        _, admin = await store.create_key("", "ops", KeySpec("ops", "admin"))
        yield Env(parley.http, admin, store)
    await fake.stop()


async def test_create_use_update_and_revoke_a_project_key(env: Env) -> None:
    created = await env.http.post("/v1/organization/keys", headers=bearer(env.admin), json={
        "name": "ci", "project_id": "team", "allowed_models": ["echo"],
        "limits": {"requests_per_minute": 100, "spend_per_month_usd": 25}})
    assert created.status_code == 200
    key = created.json()
    secret = key.pop("value")
    assert secret.startswith("sk-parley-") and key["redacted_value"] == secret[:14] + "****"
    assert key == {"object": "organization.api_key", "id": key["id"], "name": "ci", "role": "project",
                   "project_id": "team", "redacted_value": key["redacted_value"], "created_at": key["created_at"],
                   "expires_at": None, "revoked_at": None, "allowed_models": ["echo"],
                   "limits": {"requests_per_minute": 100, "spend_per_month_usd": 25.0}}
    ok = await env.http.post("/v1/responses", headers=bearer(secret), json={"model": "echo", "input": "hi"})
    assert ok.status_code == 200 and ok.headers["x-ratelimit-limit-requests"] == "100"

    # A model outside the list does not exist for this key (as OpenAI answers a project without access).
    other = await env.http.post("/v1/responses", headers=bearer(secret), json={"model": "other", "input": "hi"})
    assert other.status_code == 404 and other.json()["error"]["code"] == "model_not_found"
    listed = (await env.http.get("/v1/models", headers=bearer(secret))).json()
    assert [m["id"] for m in listed["data"]] == ["echo"]
    assert (await env.http.get("/v1/models/other", headers=bearer(secret))).status_code == 404

    updated = await env.http.post(f"/v1/organization/keys/{key['id']}", headers=bearer(env.admin),
                                  json={"allowed_models": None, "limits": None})
    assert updated.json()["allowed_models"] is None and updated.json()["limits"] is None
    assert updated.json()["name"] == "ci"  # fields not sent stay
    again = await env.http.post("/v1/responses", headers=bearer(secret), json={"model": "other", "input": "hi"})
    assert again.status_code == 200 and "x-ratelimit-limit-requests" not in again.headers

    fetched = (await env.http.get(f"/v1/organization/keys/{key['id']}", headers=bearer(env.admin))).json()
    assert fetched["allowed_models"] is None and "value" not in fetched
    page = (await env.http.get("/v1/organization/keys", params={"project_id": "team"},
                               headers=bearer(env.admin))).json()
    assert page["object"] == "list" and [k["id"] for k in page["data"]] == [key["id"]]

    deleted = await env.http.delete(f"/v1/organization/keys/{key['id']}", headers=bearer(env.admin))
    assert deleted.json() == {"object": "organization.api_key.deleted", "id": key["id"], "deleted": True}
    assert (await env.http.post("/v1/responses", headers=bearer(secret),
                                json={"model": "echo", "input": "hi"})).status_code == 401


async def test_an_expired_key_is_refused(env: Env) -> None:
    created = (await env.http.post("/v1/organization/keys", headers=bearer(env.admin), json={
        "project_id": "team", "expires_at": int(time.time()) + 3600})).json()
    assert (await env.http.get("/v1/models", headers=bearer(created["value"]))).status_code == 200
    # Its expiry passes (moved to a second ago in the database, as an hour later would find it; no cache here,
    # auth_cache_ttl_s = 0): instead of a key made to expire in 2 s, whose "still valid" check raced the clock.
    async with env.store.engine.begin() as conn:
        await conn.execute(update(tables.api_keys).where(tables.api_keys.c.id == created["id"])
                           .values(expires_at=int(time.time()) - 1))
    refused = await env.http.get("/v1/models", headers=bearer(created["value"]))
    assert refused.status_code == 401 and "expired" in refused.json()["error"]["message"]
    assert created["value"] not in refused.text


async def test_admin_keys_manage_keys_and_project_keys_do_not(env: Env) -> None:
    admin = (await env.http.post("/v1/organization/keys", headers=bearer(env.admin),
                                 json={"role": "admin", "name": "second admin"})).json()
    assert admin["role"] == "admin" and admin["project_id"] is None and admin["value"].startswith("sk-parley-admin-")
    project = (await env.http.post("/v1/organization/keys", headers=bearer(admin["value"]),
                                   json={"project_id": "team"})).json()
    refused = await env.http.get("/v1/organization/keys", headers=bearer(project["value"]))
    assert refused.status_code == 403
    on_project = await env.http.get("/v1/conversations/conv_x", headers=bearer(admin["value"]))
    assert on_project.status_code == 403


@pytest.mark.parametrize("body, param", [
    ({"role": "project"}, "project_id"),
    ({"project_id": "p", "expires_at": 5}, "expires_at"),
    ({"role": "admin", "allowed_models": ["echo"]}, "allowed_models"),
    ({"project_id": "p", "limits": {"requests_per_minute": 0}}, "limits.requests_per_minute"),
    ({"project_id": "p", "role": "root"}, "role"),
])
async def test_invalid_key_bodies_name_the_parameter(env: Env, body: dict[str, object], param: str) -> None:
    resp = await env.http.post("/v1/organization/keys", headers=bearer(env.admin), json=body)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == param


async def test_unknown_keys_are_404(env: Env) -> None:
    for method, path in (("GET", "/v1/organization/keys/key_x"), ("DELETE", "/v1/organization/keys/key_x")):
        resp = await env.http.request(method, path, headers=bearer(env.admin))
        assert resp.status_code == 404
