"""GET /v1/responses/list (the console's explorer): stored responses of the key's project, newest first, filtered
by model, status, metadata and creation time, paged by id; every bad parameter is a 400 naming it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from parley.config import EmbeddedConfig, ModelConfig, Settings
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import InProcess, in_process


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream()
    await upstream.start()
    yield upstream
    await upstream.stop()


@pytest.fixture(scope="module")
async def made(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[
        tuple[InProcess, list[dict[str, Any]]]]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("response-list"), embedded=EmbeddedConfig(enabled=False),
                        models=[ModelConfig(id="echo", base_url=fake.base_url, upstream_model="echo"),
                                ModelConfig(id="other", base_url=fake.base_url, upstream_model="echo")])
    async with in_process(settings) as app:
        created = []
        for model, metadata in (("echo", {"team": "a"}), ("echo", {"team": "b"}), ("other", {"team": "a"}),
                                ("echo", {})):
            resp = await app.http.post("/v1/responses", json={"model": model, "input": "hi", "metadata": metadata})
            assert resp.status_code == 200
            created.append(resp.json())
        unstored = await app.http.post("/v1/responses", json={"model": "echo", "input": "hi", "store": False})
        assert unstored.status_code == 200
        yield app, created


async def _ids(app: InProcess, query: str) -> list[str]:
    resp = await app.http.get(f"/v1/responses/list{query}")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "list"
    return [r["id"] for r in body["data"]]


async def test_lists_newest_first_without_output(made: tuple[InProcess, list[dict[str, Any]]]) -> None:
    app, created = made
    resp = await app.http.get("/v1/responses/list")
    body = resp.json()
    assert [r["id"] for r in body["data"]] == [r["id"] for r in reversed(created)]  # store:false is not listed
    assert all("output" not in r and r["object"] == "response" for r in body["data"])
    assert body["data"][0]["usage"]["total_tokens"] > 0
    assert body["first_id"] == created[-1]["id"] and body["has_more"] is False
    assert await _ids(app, "?order=asc") == [r["id"] for r in created]


async def test_filters(made: tuple[InProcess, list[dict[str, Any]]]) -> None:
    app, created = made
    ids = [r["id"] for r in created]
    assert await _ids(app, "?model=other") == [ids[2]]
    assert await _ids(app, "?model=echo&metadata[team]=a") == [ids[0]]
    assert await _ids(app, "?metadata[team]=a") == [ids[2], ids[0]]
    assert await _ids(app, "?metadata[team]=c") == []
    assert await _ids(app, "?status=completed") == list(reversed(ids))
    assert await _ids(app, "?status=failed") == []
    first = created[0]["created_at"]
    assert await _ids(app, f"?created_after={first}") == list(reversed(ids))
    assert await _ids(app, f"?created_before={first}") == []
    assert await _ids(app, f"?created_after={created[-1]['created_at'] + 1}") == []


async def test_pages_by_id(made: tuple[InProcess, list[dict[str, Any]]]) -> None:
    app, created = made
    ids = [r["id"] for r in reversed(created)]
    resp = await app.http.get("/v1/responses/list?limit=3")
    assert [r["id"] for r in resp.json()["data"]] == ids[:3] and resp.json()["has_more"] is True
    assert await _ids(app, f"?limit=3&after={ids[2]}") == ids[3:]
    assert await _ids(app, f"?limit=2&before={ids[3]}") == ids[1:3]


@pytest.mark.parametrize(("query", "param"), [
    ("?status=done", "status"), ("?limit=0", "limit"), ("?order=up", "order"), ("?created_after=x", "created_after"),
    ("?created_before=-1", "created_before"), ("?after=resp_nope", "after"), ("?colour=red", "colour"),
    ("?metadata[]=x", "metadata[]"), ("?status=completed&status=failed", "status"),
    ("?metadata[team]=a&metadata[team]=b", "metadata[team]"), (f"?metadata[{'k' * 65}]=x", f"metadata[{'k' * 65}]"),
    (f"?metadata[k]={'v' * 513}", "metadata[k]"),
])
async def test_bad_parameters_are_400_naming_them(made: tuple[InProcess, list[dict[str, Any]]], query: str,
                                                   param: str) -> None:
    app, _ = made
    resp = await app.http.get(f"/v1/responses/list{query}")
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param
