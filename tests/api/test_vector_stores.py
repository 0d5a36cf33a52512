"""/v1/vector_stores in-process with the official SDK and the local embedding model: stores, files, batches,
the poll helpers, search with filters and ranking options, pagination, failures, validation, isolation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from parley.config import EmbeddedConfig, EmbeddingsConfig, Settings, VectorStoresConfig
from parley.testing.fake_embeddings import FakeEmbeddings
from parley.testing.in_process import InProcess, in_process

STORE_KEYS = {"id", "object", "created_at", "name", "description", "usage_bytes", "file_counts", "status",
              "last_active_at", "metadata", "expires_after", "expires_at"}
FILE_KEYS = {"id", "object", "created_at", "vector_store_id", "status", "usage_bytes", "last_error", "attributes",
             "chunking_strategy"}
POLL = 20  # ms between the SDK's polls

DOCS = {
    "cats.md": "# Cats\nCats are small carnivorous mammals. Domestic cats purr, hunt mice and sleep most of the day.",
    "volcano.md": "# Volcanoes\nA volcano is a rupture in the crust where lava, ash and gases escape from a magma "
                  "chamber. Mount Etna in Sicily is one of the most active volcanoes in Europe.",
    "pasta.md": "# Pasta\nCook spaghetti in salted boiling water for nine minutes, then toss it with tomato sauce "
                "and basil. Carbonara uses eggs, pecorino and guanciale.",
}


@pytest.fixture(scope="module")
async def parley(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcess]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("vs"), embedded=EmbeddedConfig(enabled=False),
                        vector_stores=VectorStoresConfig(poll_s=0.02))
    async with in_process(settings) as app:
        yield app


@pytest.fixture(scope="module")
def client(parley: InProcess) -> AsyncOpenAI:
    return parley.sdk()


@pytest.fixture(scope="module")
async def docs(client: AsyncOpenAI) -> dict[str, str]:
    """name -> file id of DOCS, uploaded once."""
    ids = {}
    for name, text in DOCS.items():
        ids[name] = (await client.files.create(file=(name, text.encode()), purpose="assistants")).id
    return ids


@pytest.fixture(scope="module")
async def store(client: AsyncOpenAI, docs: dict[str, str]) -> str:
    """A store holding DOCS, with attributes."""
    created = await client.vector_stores.create(name="knowledge")
    topics = {"cats.md": ("animals", 2019), "volcano.md": ("geology", 2021), "pasta.md": ("food", 2023)}
    batch = await client.vector_stores.file_batches.create_and_poll(
        created.id, files=[{"file_id": docs[name], "attributes": {"topic": topic, "year": year}}
                           for name, (topic, year) in topics.items()], poll_interval_ms=POLL)
    assert batch.status == "completed" and batch.file_counts.completed == 3
    return created.id


def _error(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


async def test_create_and_poll_with_files(client: AsyncOpenAI, parley: InProcess, docs: dict[str, str]) -> None:
    raw = await parley.http.post("/v1/vector_stores", json={
        "name": "two docs", "description": "cats and pasta", "file_ids": [docs["cats.md"], docs["pasta.md"]],
        "metadata": {"team": "kitchen"}, "expires_after": {"anchor": "last_active_at", "days": 7},
        "chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 20}},
    })
    assert raw.status_code == 200, raw.text
    body = raw.json()
    assert set(body) == STORE_KEYS and body["id"].startswith("vs_") and body["object"] == "vector_store"
    assert body["expires_after"] == {"anchor": "last_active_at", "days": 7}
    assert body["expires_at"] == body["last_active_at"] + 7 * 86400
    done = await client.vector_stores.files.list(body["id"])
    assert {f.id for f in done.data} == {docs["cats.md"], docs["pasta.md"]}
    for f in done.data:
        polled = await client.vector_stores.files.poll(f.id, vector_store_id=body["id"], poll_interval_ms=POLL)
        assert polled.status == "completed" and polled.usage_bytes > 0 and polled.last_error is None
        assert polled.chunking_strategy is not None and polled.chunking_strategy.type == "static"
        assert polled.chunking_strategy.static.max_chunk_size_tokens == 100  # type: ignore[union-attr]
    store = await client.vector_stores.retrieve(body["id"])
    assert store.status == "completed" and store.file_counts.completed == 2 and store.file_counts.total == 2
    assert store.usage_bytes == sum(f.usage_bytes for f in (await client.vector_stores.files.list(store.id)).data)
    assert store.metadata == {"team": "kitchen"}

    also = await client.vector_stores.files.create_and_poll(docs["volcano.md"], vector_store_id=store.id,
                                                            poll_interval_ms=POLL, attributes={"kind": "geo"})
    assert also.status == "completed" and also.attributes == {"kind": "geo"}


async def test_files_upload_and_poll_attributes_content_detach(client: AsyncOpenAI, parley: InProcess) -> None:
    vs = await client.vector_stores.create(name="files")
    text = "Alpha paragraph about rivers.\n\n" + "The Danube flows through ten countries. " * 200
    uploaded = await client.vector_stores.files.upload_and_poll(
        vector_store_id=vs.id, file=("rivers.txt", text.encode()), poll_interval_ms=POLL)
    assert uploaded.status == "completed" and uploaded.vector_store_id == vs.id
    raw = (await parley.http.get(f"/v1/vector_stores/{vs.id}/files/{uploaded.id}")).json()
    assert set(raw) == FILE_KEYS and raw["object"] == "vector_store.file"
    assert raw["chunking_strategy"] == {"type": "static", "static": {"max_chunk_size_tokens": 800,
                                                                     "chunk_overlap_tokens": 400}}
    content = await client.vector_stores.files.content(uploaded.id, vector_store_id=vs.id)
    assert "".join(part.text for part in content.data) == text  # the chunks, without their overlaps
    updated = await client.vector_stores.files.update(uploaded.id, vector_store_id=vs.id,
                                                      attributes={"river": "danube", "km": 2850, "navigable": True})
    assert updated.attributes == {"river": "danube", "km": 2850, "navigable": True}
    hits = await client.vector_stores.search(vs.id, query="Danube", filters={"type": "gte", "key": "km",
                                                                              "value": 1000})
    assert hits.data and hits.data[0].attributes == updated.attributes
    deleted = await client.vector_stores.files.delete(uploaded.id, vector_store_id=vs.id)
    assert deleted.deleted and deleted.object == "vector_store.file.deleted"
    assert (await client.vector_stores.search(vs.id, query="Danube")).data == []
    await client.files.retrieve(uploaded.id)  # the File itself is kept
    with pytest.raises(openai.NotFoundError):
        await client.vector_stores.files.retrieve(uploaded.id, vector_store_id=vs.id)


async def test_search(client: AsyncOpenAI, parley: InProcess, store: str, docs: dict[str, str]) -> None:
    raw = await parley.http.post(f"/v1/vector_stores/{store}/search", json={"query": "Which volcano is in Sicily?"})
    page = raw.json()
    assert page["object"] == "vector_store.search_results.page" and page["has_more"] is False
    assert page["next_page"] is None and page["search_query"] == ["Which volcano is in Sicily?"]
    results = await client.vector_stores.search(store, query="Which volcano is in Sicily?")
    top = results.data[0]
    assert top.file_id == docs["volcano.md"] and top.filename == "volcano.md" and "Etna" in top.content[0].text
    assert top.attributes == {"topic": "geology", "year": 2021}
    assert all(0 <= r.score <= 1 for r in results.data)
    assert [r.score for r in results.data] == sorted((r.score for r in results.data), reverse=True)

    filtered = await client.vector_stores.search(store, query="Which volcano is in Sicily?", filters={
        "type": "and", "filters": [{"type": "ne", "key": "topic", "value": "geology"},
                                   {"type": "in", "key": "year", "value": [2019, 2023]}]})
    assert {r.file_id for r in filtered.data} <= {docs["cats.md"], docs["pasta.md"]} and filtered.data
    several = await client.vector_stores.search(store, query=["purring pets", "spaghetti sauce"], max_num_results=2)
    assert {r.filename for r in several.data} == {"cats.md", "pasta.md"}
    keywords = await client.vector_stores.search(store, query="guanciale", ranking_options={
        "ranker": "auto", "hybrid_search": {"embedding_weight": 0, "text_weight": 1}})  # type: ignore[typeddict-unknown-key]
    assert [r.filename for r in keywords.data] == ["pasta.md"]
    strict = await client.vector_stores.search(store, query="volcano", ranking_options={"score_threshold": 0.99})
    assert strict.data == []
    rewritten = await parley.http.post(f"/v1/vector_stores/{store}/search",
                                       json={"query": "  lava   ash ", "rewrite_query": True})
    assert rewritten.json()["search_query"] == ["lava ash"]


@pytest.mark.parametrize(("body", "param"), [
    ({}, "query"),
    ({"query": ""}, "query"),
    ({"query": "x", "max_num_results": 0}, "max_num_results"),
    ({"query": "x", "max_num_results": 51}, "max_num_results"),
    ({"query": "x", "filters": {"type": "eq", "key": "a"}}, "filters.value"),
    ({"query": "x", "filters": {"type": "and", "filters": [{"type": "bad", "key": "a", "value": 1}]}},
     "filters.filters[0].type"),
    ({"query": "x", "ranking_options": {"score_threshold": 1.5}}, "ranking_options.score_threshold"),
    ({"query": "x", "ranking_options": {"ranker": "best"}}, "ranking_options.ranker"),
    ({"query": "x", "ranking_options": {"hybrid_search": {"embedding_weight": 0, "text_weight": 0}}},
     "ranking_options.hybrid_search"),
])
async def test_search_validation(parley: InProcess, store: str, body: dict[str, Any], param: str) -> None:
    error = _error(await parley.http.post(f"/v1/vector_stores/{store}/search", json=body))
    assert error["param"] == param, error


@pytest.mark.parametrize(("path", "body", "param"), [
    ("", {"chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 50,
                                                             "chunk_overlap_tokens": 0}}}, "chunking_strategy"),
    ("", {"chunking_strategy": {"type": "static", "static": {"max_chunk_size_tokens": 800,
                                                             "chunk_overlap_tokens": 500}}}, "chunking_strategy"),
    ("", {"expires_after": {"anchor": "created_at", "days": 1}}, "expires_after.anchor"),
    ("", {"file_ids": ["file-nope"]}, "file_ids[0]"),
    ("/files", {"file_id": "file-nope"}, "file_id"),
    ("/files", {"file_id": "x", "attributes": {f"k{i}": i for i in range(17)}}, "attributes"),
    ("/file_batches", {}, "file_ids"),
    ("/file_batches", {"file_ids": ["a"], "files": [{"file_id": "a"}]}, "file_ids"),
])
async def test_create_validation(parley: InProcess, store: str, path: str, body: dict[str, Any],
                                 param: str) -> None:
    url = "/v1/vector_stores" + (f"/{store}{path}" if path else "")
    error = _error(await parley.http.post(url, json=body), 404 if param in ("file_id", "file_ids[0]") else 400)
    assert error["param"] == param, error


async def test_unreadable_file_fails_alone(client: AsyncOpenAI) -> None:
    vs = await client.vector_stores.create(name="mixed")
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    batch = await client.vector_stores.file_batches.upload_and_poll(
        vs.id, files=[("photo.png", png), ("notes.txt", b"plain notes about tides")], poll_interval_ms=POLL)
    assert batch.status == "completed" and (batch.file_counts.completed, batch.file_counts.failed) == (1, 1)
    failed = await client.vector_stores.file_batches.list_files(batch.id, vector_store_id=vs.id, filter="failed")
    (photo,) = failed.data
    assert photo.last_error is not None and photo.last_error.code == "unsupported_file"
    assert photo.last_error.message
    completed = await client.vector_stores.files.list(vs.id, filter="completed")
    assert len(completed.data) == 1
    assert (await client.vector_stores.search(vs.id, query="tides")).data[0].filename == "notes.txt"


async def test_pagination_update_delete(client: AsyncOpenAI) -> None:
    made = [await client.vector_stores.create(name=f"page-{i}", metadata={"i": str(i)}) for i in range(5)]
    first = await client.vector_stores.list(limit=2)
    assert len(first.data) == 2 and first.has_more
    ids = [vs.id async for vs in await client.vector_stores.list(limit=2)]
    assert ids[:5] == [vs.id for vs in reversed(made)]  # newest first, across pages
    ascending = [vs.id async for vs in await client.vector_stores.list(limit=3, order="asc")]
    assert ascending == list(reversed(ids))
    renamed = await client.vector_stores.update(made[0].id, name="renamed", metadata={"new": "yes"},
                                                expires_after={"anchor": "last_active_at", "days": 3})
    assert (renamed.name, renamed.metadata, renamed.expires_after.days) == ("renamed", {"new": "yes"}, 3)  # type: ignore[union-attr]
    cleared = await client.vector_stores.update(made[0].id, expires_after=None)
    assert cleared.expires_after is None and cleared.expires_at is None and cleared.name == "renamed"
    for vs in made:
        deleted = await client.vector_stores.delete(vs.id)
        assert deleted.deleted and deleted.object == "vector_store.deleted"
    with pytest.raises(openai.NotFoundError):
        await client.vector_stores.retrieve(made[0].id)


async def test_deleting_a_file_removes_it_from_stores(client: AsyncOpenAI) -> None:
    vs = await client.vector_stores.create(name="hooks")
    f = await client.vector_stores.files.upload_and_poll(vector_store_id=vs.id, file=("moon.txt", b"the moon"),
                                                         poll_interval_ms=POLL)
    await client.files.delete(f.id)
    assert (await client.vector_stores.files.list(vs.id)).data == []
    assert (await client.vector_stores.search(vs.id, query="moon")).data == []


async def test_stores_are_invisible_to_other_projects(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, embedded=EmbeddedConfig(enabled=False), auth="keys", auth_cache_ttl_s=0,
                        vector_stores=VectorStoresConfig(poll_s=0.02))
    async with in_process(settings) as app:
        store = app.app.state.runtime.store
        _, key_a = await store.create_key("project-a", "a")
        _, key_b = await store.create_key("project-b", "b")
        a, b = app.sdk(key_a), app.sdk(key_b)
        vs = await a.vector_stores.create(name="private")
        f = await a.vector_stores.files.upload_and_poll(vector_store_id=vs.id, file=("s.txt", b"secret plans"),
                                                        poll_interval_ms=POLL)
        for call in (b.vector_stores.retrieve, b.vector_stores.delete, b.vector_stores.files.list):
            with pytest.raises(openai.NotFoundError):
                await call(vs.id)
        with pytest.raises(openai.NotFoundError) as missing:
            await b.vector_stores.search(vs.id, query="secret")
        assert missing.value.body["param"] == "vector_store_id"  # type: ignore[index]
        with pytest.raises(openai.NotFoundError):  # nor can B attach A's file to its own store
            await b.vector_stores.files.create(vector_store_id=(await b.vector_stores.create()).id, file_id=f.id)
        assert [s.id async for s in await b.vector_stores.list()] != [vs.id]
        runtime = app.app.state.runtime
        hits = await runtime.vector_stores.search("project-a", [vs.id], ["secret"], max_num_results=5)
        assert hits[0].file_id == f.id and hits[0].text == "secret plans" and (hits[0].start, hits[0].end) == (0, 12)
        with pytest.raises(Exception) as foreign:
            await runtime.vector_stores.search("project-b", [vs.id], ["secret"])
        assert getattr(foreign.value, "param", None) == "vector_store_ids[0]"


async def test_a_store_indexed_with_another_embedding_model_is_a_clear_409(tmp_path: Path) -> None:
    """The embedding model is recorded per store: after the operator changes [embeddings], searching or adding to
    a store indexed with the old model is refused by name, never a silently meaningless search."""
    fake = FakeEmbeddings(dimensions=32)
    await fake.start()

    def settings(model: str) -> Settings:
        return Settings(data_dir=tmp_path, embedded=EmbeddedConfig(enabled=False),
                        vector_stores=VectorStoresConfig(poll_s=0.02),
                        embeddings=EmbeddingsConfig(base_url=fake.base_url, model=model))

    try:
        async with in_process(settings("hash-a")) as app:
            sdk = app.sdk()
            vs = await sdk.vector_stores.create(name="old")
            f = await sdk.vector_stores.files.upload_and_poll(vector_store_id=vs.id, file=("a.txt", b"apples"),
                                                              poll_interval_ms=POLL)
            assert f.status == "completed", f.last_error
            assert (await sdk.vector_stores.search(vs.id, query="apples")).data
        async with in_process(settings("hash-b")) as app:
            searched = await app.http.post(f"/v1/vector_stores/{vs.id}/search", json={"query": "apples"})
            error = _error(searched, 409)
            assert error["code"] == "embedding_model_mismatch" and error["param"] == "vector_store_id"
            assert "hash-a" in error["message"] and "hash-b" in error["message"]
            uploaded = await app.sdk().files.create(file=("b.txt", b"pears"), purpose="assistants")
            attached = await app.http.post(f"/v1/vector_stores/{vs.id}/files", json={"file_id": uploaded.id})
            assert _error(attached, 409)["code"] == "embedding_model_mismatch"
            # Text-only ranking needs no embedding: it still works.
            text_only = await app.http.post(f"/v1/vector_stores/{vs.id}/search", json={
                "query": "apples", "ranking_options": {"hybrid_search": {"embedding_weight": 0, "text_weight": 1}}})
            assert text_only.status_code == 200 and text_only.json()["data"], text_only.text
    finally:
        await fake.stop()
