"""Stored state through the SDK: retrieve, delete, input_items pagination, previous_response_id chains, store=false."""

from __future__ import annotations

from typing import Any

import pytest
from compat_support import acreate_checked, check_error_body, check_response, create_checked, upstream_request
from openai import AsyncOpenAI, BadRequestError, NotFoundError, OpenAI
from openai.types.responses import ResponseItem
from pydantic import TypeAdapter

from parley.testing.fake_upstream import FakeUpstream

RESPONSE_ITEM = TypeAdapter(ResponseItem)


def test_retrieve_and_delete(client: OpenAI) -> None:
    body, created = create_checked(client, model="echo", input="keep me")
    raw = client.responses.with_raw_response.retrieve(created.id)
    retrieved_body = raw.http_response.json()
    check_response(retrieved_body)
    assert retrieved_body == body
    assert raw.parse().output_text == "echo: keep me"

    client.responses.delete(created.id)  # the SDK returns None; test_delete_wire_body checks the body
    with pytest.raises(NotFoundError) as info:
        client.responses.retrieve(created.id)
    assert info.value.status_code == 404
    error = check_error_body(info.value.response.json(), 404)
    assert created.id in error["message"]
    with pytest.raises(NotFoundError):
        client.responses.delete(created.id)
    with pytest.raises(NotFoundError):
        client.responses.input_items.list(created.id)


def test_delete_wire_body(client: OpenAI) -> None:
    _, created = create_checked(client, model="echo", input="delete body")
    raw = client.responses.with_raw_response.delete(created.id)
    assert raw.http_response.json() == {"id": created.id, "object": "response.deleted", "deleted": True}


def test_retrieve_unknown_id(client: OpenAI) -> None:
    with pytest.raises(NotFoundError) as info:
        client.responses.retrieve("resp_does_not_exist")
    check_error_body(info.value.response.json(), 404)


def _five_item_input(tag: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": f"{tag} one"},
        {"role": "assistant", "content": f"{tag} two"},
        {"role": "user", "content": f"{tag} three"},
        {"role": "assistant", "content": f"{tag} four"},
        {"role": "user", "content": f"{tag} five"},
    ]


def _texts(items: list[Any]) -> list[str]:
    return [item.content[0].text for item in items]


def _roles(items: list[Any]) -> list[str]:
    return [item.role for item in items]


def test_input_items_pagination(client: OpenAI) -> None:
    _, created = create_checked(client, model="echo", input=_five_item_input("pg"))
    assert created.output_text == "echo: pg five"

    raw = client.responses.input_items.with_raw_response.list(created.id, limit=2, order="asc")
    body = raw.http_response.json()
    assert body["object"] == "list" and body["has_more"] is True
    assert body["first_id"] == body["data"][0]["id"] and body["last_id"] == body["data"][-1]["id"]
    for item in body["data"]:
        RESPONSE_ITEM.validate_python(item)
        assert item["id"]
    first = raw.parse()
    assert _texts(first.data) == ["pg one", "pg two"]

    second = client.responses.input_items.list(created.id, limit=2, order="asc", after=first.data[-1].id)
    assert _texts(second.data) == ["pg three", "pg four"] and second.has_more is True
    third = client.responses.input_items.list(created.id, limit=2, order="asc", after=second.data[-1].id)
    assert _texts(third.data) == ["pg five"] and third.has_more is False

    desc = client.responses.input_items.list(created.id, limit=3, order="desc")
    assert _texts(desc.data) == ["pg five", "pg four", "pg three"] and desc.has_more is True
    desc_next = client.responses.input_items.list(created.id, limit=3, order="desc", after=desc.data[-1].id)
    assert _texts(desc_next.data) == ["pg two", "pg one"] and desc_next.has_more is False

    # Default order is desc; the SDK's auto-pagination follows `after` until has_more is false.
    everything = list(client.responses.input_items.list(created.id, limit=2, order="asc"))
    assert _texts(everything) == [f"pg {n}" for n in ("one", "two", "three", "four", "five")]
    assert len({item.id for item in everything}) == 5
    assert _texts(list(client.responses.input_items.list(created.id))) == _texts(everything)[::-1]
    assert _roles(everything) == ["user", "assistant", "user", "assistant", "user"]


async def test_input_items_auto_pagination_async(aclient: AsyncOpenAI) -> None:
    _, created = await acreate_checked(aclient, model="echo", input=_five_item_input("apg"))
    items = [item async for item in aclient.responses.input_items.list(created.id, limit=2, order="asc")]
    assert _texts(items) == [f"apg {n}" for n in ("one", "two", "three", "four", "five")]


def test_input_items_bad_limit(client: OpenAI) -> None:
    _, created = create_checked(client, model="echo", input="limits")
    with pytest.raises(BadRequestError) as info:
        client.responses.input_items.list(created.id, limit=0)
    assert check_error_body(info.value.response.json(), 400)["param"] == "limit"


def test_previous_response_chain(client: OpenAI, fake: FakeUpstream) -> None:
    _, first = create_checked(client, model="echo", input="chain-first marker-chain")
    _, second = create_checked(client, model="echo", input="chain-second", previous_response_id=first.id)
    assert second.output_text == "echo: chain-second"
    assert second.previous_response_id == first.id
    _, third = create_checked(client, model="echo", input="chain-third", previous_response_id=second.id)
    assert third.output_text == "echo: chain-third"

    sent = upstream_request(fake.requests, "chain-third")["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("user", "chain-first marker-chain"),
        ("assistant", "echo: chain-first marker-chain"),
        ("user", "chain-second"),
        ("assistant", "echo: chain-second"),
        ("user", "chain-third"),
    ]


async def test_previous_response_chain_async_streaming(aclient: AsyncOpenAI, fake: FakeUpstream) -> None:
    _, first = await acreate_checked(aclient, model="echo", input="async-chain-first")
    async with aclient.responses.stream(
        model="echo", input="async-chain-second", previous_response_id=first.id
    ) as stream:
        final = await stream.get_final_response()
    assert final.output_text == "echo: async-chain-second"
    sent = upstream_request(fake.requests, "async-chain-second")["messages"]
    assert [m["content"] for m in sent] == ["async-chain-first", "echo: async-chain-first", "async-chain-second"]
    retrieved = await aclient.responses.retrieve(final.id)
    assert retrieved.previous_response_id == first.id and retrieved.output_text == final.output_text


def test_instructions_not_carried_over(client: OpenAI, fake: FakeUpstream) -> None:
    _, first = create_checked(client, model="echo", input="instr-first", instructions="Talk like a robot.")
    sent_first = upstream_request(fake.requests, "instr-first")["messages"]
    assert sent_first[0] == {"role": "system", "content": "Talk like a robot."}
    _, second = create_checked(client, model="echo", input="instr-second", previous_response_id=first.id)
    assert second.instructions is None
    sent = upstream_request(fake.requests, "instr-second")["messages"]
    assert all(m["role"] != "system" for m in sent), sent
    assert "Talk like a robot." not in str(sent)
    _, third = create_checked(client, model="echo", input="instr-third", previous_response_id=second.id,
                              instructions="New rules.")
    assert third.instructions == "New rules."
    sent = upstream_request(fake.requests, "instr-third")["messages"]
    assert [m["content"] for m in sent if m["role"] == "system"] == ["New rules."]


def test_store_false(client: OpenAI, fake: FakeUpstream) -> None:
    body, unstored = create_checked(client, model="echo", input="do not keep", store=False)
    assert body["store"] is False and unstored.output_text == "echo: do not keep"
    with pytest.raises(NotFoundError):
        client.responses.retrieve(unstored.id)
    with pytest.raises(NotFoundError) as info:
        client.responses.create(model="echo", input="follow-up", previous_response_id=unstored.id)
    error = check_error_body(info.value.response.json(), 404)
    assert error["param"] == "previous_response_id"


def test_store_false_streaming(client: OpenAI) -> None:
    events = list(client.responses.create(model="echo", input="stream, do not keep", store=False, stream=True))
    final = events[-1]
    assert final.type == "response.completed"
    with pytest.raises(NotFoundError):
        client.responses.retrieve(final.response.id)


def test_previous_response_deleted_is_404(client: OpenAI) -> None:
    _, first = create_checked(client, model="echo", input="soon gone")
    client.responses.delete(first.id)
    with pytest.raises(NotFoundError) as info:
        client.responses.create(model="echo", input="after delete", previous_response_id=first.id)
    assert check_error_body(info.value.response.json(), 404)["param"] == "previous_response_id"


def test_retrieve_and_list_with_include(client: OpenAI) -> None:
    # The SDK sends include[]=...: accepted on retrieve and on input_items.
    _, created = create_checked(client, model="echo", input="with include")
    include: list[Any] = ["message.output_text.logprobs"]
    assert client.responses.retrieve(created.id, include=include).id == created.id
    items = client.responses.input_items.list(created.id, include=include)
    assert _texts(items.data) == ["with include"]


def test_cancel_non_background_is_400(client: OpenAI) -> None:
    _, created = create_checked(client, model="echo", input="not background")
    with pytest.raises(BadRequestError) as info:
        client.responses.cancel(created.id)
    check_error_body(info.value.response.json(), 400)
    assert client.responses.retrieve(created.id).status == "completed"
