"""Conversations through the official SDK (in-process app, real upstream HTTP): CRUD, item pagination,
`conversation` on create, the append rule (store=false, failures, concurrency) and project isolation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.conversations import Conversation, ConversationItem, ConversationItemList
from pydantic import TypeAdapter

from parley.config import EmbeddedConfig, ModelConfig, Settings
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import in_process

ITEM = TypeAdapter(ConversationItem)


class Env:
    def __init__(self, http: httpx.AsyncClient, client: AsyncOpenAI, fake: FakeUpstream) -> None:
        self.http = http
        self.client = client
        self.fake = fake

    @property
    def sent(self) -> dict[str, Any]:
        return self.fake.requests[-1]

    async def item_ids(self, conversation_id: str) -> list[str]:
        return [i.id async for i in self.client.conversations.items.list(conversation_id, order="asc", limit=100)]


def _settings(data_dir: Path, fake: FakeUpstream, **extra: Any) -> Settings:
    models = [ModelConfig(id=name, base_url=fake.base_url, upstream_model=name) for name in ("echo", "slow", "drop")]
    return Settings(data_dir=data_dir, models=models, embedded=EmbeddedConfig(enabled=False), **extra)


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream()
    await upstream.start()
    yield upstream
    await upstream.stop()


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream) -> AsyncIterator[Env]:
    async with in_process(_settings(tmp_path_factory.mktemp("conversations"), fake)) as parley:
        yield Env(parley.http, parley.sdk(), fake)


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def _texts(messages: list[dict[str, Any]]) -> list[str]:
    return [m["content"] if isinstance(m["content"], str) else m["content"][0]["text"] for m in messages]


# -- CRUD and items ----------------------------------------------------------------------------------


async def test_conversation_crud(env: Env) -> None:
    conv = await env.client.conversations.create(
        items=[{"role": "user", "content": "hello"}], metadata={"topic": "demo"})
    assert isinstance(conv, Conversation) and conv.id.startswith("conv_") and conv.object == "conversation"
    assert conv.metadata == {"topic": "demo"} and isinstance(conv.created_at, int)
    Conversation.model_validate(conv.model_dump())  # strict validation, not just the SDK's lenient build
    assert await env.client.conversations.retrieve(conv.id) == conv

    updated = await env.client.conversations.update(conv.id, metadata={"topic": "changed", "n": "2"})
    assert updated.metadata == {"topic": "changed", "n": "2"} and updated.created_at == conv.created_at
    cleared = await env.client.conversations.update(conv.id, metadata=None)
    assert cleared.metadata == {}

    deleted = await env.client.conversations.delete(conv.id)
    assert deleted.id == conv.id and deleted.deleted is True and deleted.object == "conversation.deleted"
    with pytest.raises(openai.NotFoundError):
        await env.client.conversations.retrieve(conv.id)
    with pytest.raises(openai.NotFoundError):
        await env.client.conversations.items.list(conv.id)


async def test_items_pagination_retrieve_and_delete(env: Env) -> None:
    first = [{"role": "user", "content": f"item {n}"} for n in range(20)]
    conv = await env.client.conversations.create(items=first)  # type: ignore[arg-type]
    added = await env.client.conversations.items.create(
        conv.id, items=[{"role": "user", "content": f"item {n}"} for n in range(20, 25)])
    assert isinstance(added, ConversationItemList) and len(added.data) == 5 and added.has_more is False
    assert added.first_id == added.data[0].id and added.last_id == added.data[-1].id
    for item in added.data:
        ITEM.validate_python(item.model_dump())

    # Auto-pagination follows `last_id` as the next `after` (api-surface.md §8.4), in both orders.
    ascending = [i async for i in env.client.conversations.items.list(conv.id, order="asc", limit=7)]
    texts = [i.content[0].text for i in ascending]  # type: ignore[union-attr]
    assert texts == [f"item {n}" for n in range(25)]
    descending = [i.id async for i in env.client.conversations.items.list(conv.id, limit=6)]
    assert descending == [i.id for i in reversed(ascending)]
    page = await env.client.conversations.items.list(conv.id, limit=3, after=ascending[10].id, order="asc")
    assert [i.id for i in page.data] == [i.id for i in ascending[11:14]] and page.has_more

    one = await env.client.conversations.items.retrieve(ascending[3].id, conversation_id=conv.id)
    assert one.id == ascending[3].id and one.type == "message" and one.role == "user"  # type: ignore[union-attr]
    after_delete = await env.client.conversations.items.delete(ascending[3].id, conversation_id=conv.id)
    assert isinstance(after_delete, Conversation) and after_delete.id == conv.id
    assert ascending[3].id not in await env.item_ids(conv.id)
    with pytest.raises(openai.NotFoundError):
        await env.client.conversations.items.retrieve(ascending[3].id, conversation_id=conv.id)


@pytest.mark.parametrize(("method", "path", "body", "param"), [
    ("POST", "/v1/conversations", {"items": [{"role": "user", "content": "x"}] * 21}, "items"),
    ("POST", "/v1/conversations", {"items": [{"role": "robot", "content": "x"}]}, "items[0].role"),
    ("POST", "/v1/conversations", {"items": [{"type": "nope"}]}, "items[0]"),
    ("POST", "/v1/conversations", {"metadata": {"k": "v" * 513}}, "metadata"),
    ("POST", "/v1/conversations", {"items": [{"type": "item_reference", "id": "msg_missing"}]}, "items[0].id"),
    ("POST", "/v1/conversations", {"items": [{"type": "compaction_trigger"}, {"role": "user", "content": "x"}]},
     "items[0]"),
    ("POST", "/v1/conversations", {"items": [{"type": "compaction", "encrypted_content": "forged"}]},
     "items[0].encrypted_content"),
    ("POST", "{conv}", {}, "metadata"),
    ("POST", "{conv}/items", {"items": []}, "items"),
    ("POST", "{conv}/items", {"items": [{"role": "user", "content": 5}]}, "items[0].content"),
    ("GET", "{conv}/items?limit=0", None, "limit"),
    ("GET", "{conv}/items?limit=101", None, "limit"),
    ("GET", "{conv}/items?order=up", None, "order"),
    ("GET", "{conv}/items?after=msg_unknown", None, "after"),
    ("GET", "{conv}/items?include[]=nonsense", None, "include"),
])
async def test_bad_input_is_a_400_naming_the_param(
    env: Env, method: str, path: str, body: dict[str, Any] | None, param: str
) -> None:
    conv = await env.client.conversations.create()
    url = path.replace("{conv}", f"/v1/conversations/{conv.id}")
    response = await env.http.request(method, url, json=body) if body is not None else await env.http.request(
        method, url)
    error = _error(response, 404 if param == "items[0].id" else 400)
    assert error["param"] == param


async def test_unknown_conversation_and_item_are_404s(env: Env) -> None:
    assert _error(await env.http.get("/v1/conversations/conv_nope"), 404)["param"] == "conversation_id"
    assert _error(await env.http.post("/v1/conversations/conv_nope", json={"metadata": {}}), 404)["param"] == (
        "conversation_id")
    assert _error(await env.http.delete("/v1/conversations/conv_nope"), 404)["param"] == "conversation_id"
    assert _error(await env.http.get("/v1/conversations/conv_nope/items"), 404)["param"] == "conversation_id"
    conv = await env.client.conversations.create()
    missing = await env.http.get(f"/v1/conversations/{conv.id}/items/msg_nope")
    assert _error(missing, 404)["param"] == "item_id"
    assert _error(await env.http.delete(f"/v1/conversations/{conv.id}/items/msg_nope"), 404)["param"] == "item_id"


# -- conversation on POST /v1/responses --------------------------------------------------------------


async def test_create_prepends_history_and_appends_the_turn(env: Env) -> None:
    conv = await env.client.conversations.create(items=[
        {"role": "user", "content": "My name is Ada."},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello Ada."}]},
    ])
    before = await env.item_ids(conv.id)
    first = await env.client.responses.create(model="echo", conversation=conv.id, input="What is my name?")
    assert first.conversation is not None and first.conversation.id == conv.id
    messages = env.sent["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert _texts(messages) == ["My name is Ada.", "Hello Ada.", "What is my name?"]

    items = [i async for i in env.client.conversations.items.list(conv.id, order="asc")]
    assert [i.id for i in items[:2]] == before and len(items) == 4
    assert items[2].content[0].text == "What is my name?"  # type: ignore[union-attr]
    assert items[3].id == first.output[0].id and items[3].role == "assistant"  # type: ignore[union-attr]

    # The {id} form, streamed: the next turn sees the first one, and is appended after it.
    stream = await env.client.responses.create(model="echo", conversation={"id": conv.id}, input="Again?",
                                               stream=True)
    events = [e async for e in stream]
    done = events[-1]
    assert done.type == "response.completed" and done.response.conversation.id == conv.id  # type: ignore[union-attr]
    assert _texts(env.sent["messages"])[-2:] == ["echo: What is my name?", "Again?"]
    ids = await env.item_ids(conv.id)
    assert len(ids) == 6 and ids[-1] == done.response.output[0].id  # type: ignore[union-attr]


async def test_store_false_still_appends_to_the_conversation(env: Env) -> None:
    conv = await env.client.conversations.create()
    resp = await env.client.responses.create(model="echo", conversation=conv.id, input="unstored", store=False)
    assert resp.store is False
    with pytest.raises(openai.NotFoundError):
        await env.client.responses.retrieve(resp.id)
    items = [i async for i in env.client.conversations.items.list(conv.id, order="asc")]
    assert [i.type for i in items] == ["message", "message"]
    assert items[1].id == resp.output[0].id


async def test_failed_response_appends_nothing(env: Env) -> None:
    conv = await env.client.conversations.create(items=[{"role": "user", "content": "before"}])
    stream = await env.client.responses.create(model="drop", conversation=conv.id, input="lost", stream=True)
    events = [e async for e in stream]
    assert events[-1].type == "response.failed"
    with pytest.raises(openai.InternalServerError):  # the non-streamed failure is an HTTP error
        await env.client.responses.create(model="drop", conversation=conv.id, input="lost too")
    assert len(await env.item_ids(conv.id)) == 1


async def test_unknown_conversation_on_create_is_a_404(env: Env) -> None:
    unknown = await env.http.post("/v1/responses", json={"model": "echo", "input": "x", "conversation": "conv_nope"})
    assert _error(unknown, 404)["param"] == "conversation"
    conv = await env.client.conversations.create()
    both = await env.http.post("/v1/responses", json={
        "model": "echo", "input": "x", "conversation": conv.id, "previous_response_id": "resp_x"})
    assert _error(both, 400)["param"] == "previous_response_id"
    counted = await env.http.post("/v1/responses/input_tokens", json={
        "model": "echo", "conversation": "conv_nope", "input": "x"})
    assert _error(counted, 404)["param"] == "conversation"


async def test_concurrent_responses_never_interleave(env: Env) -> None:
    conv = await env.client.conversations.create(items=[{"role": "user", "content": "start"}])

    async def turn(n: int) -> list[str]:
        # `slow` streams for about a second, so all ten runs overlap.
        resp = await env.client.responses.create(
            model="slow", conversation=conv.id,
            input=[{"role": "user", "content": f"turn {n} a"}, {"role": "user", "content": f"turn {n} b"}])
        return [resp.output[0].id]

    outputs = await asyncio.gather(*(turn(n) for n in range(10)))
    items = [i async for i in env.client.conversations.items.list(conv.id, order="asc", limit=100)]
    assert len(items) == 1 + 10 * 3
    texts = [i.content[0].text for i in items]  # type: ignore[union-attr]
    ids = [i.id for i in items]
    for n, output in enumerate(outputs):
        start = texts.index(f"turn {n} a")
        assert texts[start + 1] == f"turn {n} b"  # its own input, contiguous ...
        assert ids[start + 2] == output[0]  # ... then its own output, nothing in between


# -- project isolation -------------------------------------------------------------------------------


async def test_conversations_are_invisible_to_other_projects(tmp_path: Path, fake: FakeUpstream) -> None:
    async with in_process(_settings(tmp_path, fake, auth_cache_ttl_s=0)) as parley:
        store = parley.app.state.runtime.store
        _, key_a = await store.create_key("project-a", "a")
        _, key_b = await store.create_key("project-b", "b")
        a, b = parley.sdk(key_a), parley.sdk(key_b)
        conv = await a.conversations.create(items=[{"role": "user", "content": "secret"}])
        item_id = (await a.conversations.items.list(conv.id)).data[0].id
        for call in (
            b.conversations.retrieve(conv.id),
            b.conversations.update(conv.id, metadata={"x": "y"}),
            b.conversations.items.list(conv.id),
            b.conversations.items.retrieve(item_id, conversation_id=conv.id),
            b.conversations.items.create(conv.id, items=[{"role": "user", "content": "intruder"}]),
            b.conversations.items.delete(item_id, conversation_id=conv.id),
            b.responses.create(model="echo", conversation=conv.id, input="leak?"),
            b.conversations.delete(conv.id),
        ):
            with pytest.raises(openai.NotFoundError):
                await call
        assert [i.id async for i in a.conversations.items.list(conv.id)] == [item_id]
        assert (await a.conversations.retrieve(conv.id)).metadata == {}

