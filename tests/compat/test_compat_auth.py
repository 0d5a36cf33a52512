"""API keys through the SDK: a key sees only its own project's responses; a missing or wrong key is a 401."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from compat_support import KeyedServer, check_error_body, create_checked
from openai import AsyncOpenAI, AuthenticationError, NotFoundError, OpenAI


@pytest.fixture(scope="module")
def clients(keyed_server: KeyedServer) -> Iterator[tuple[OpenAI, OpenAI]]:
    url = keyed_server.server.base_url
    with OpenAI(base_url=url, api_key=keyed_server.key_a, max_retries=0) as a, \
            OpenAI(base_url=url, api_key=keyed_server.key_b, max_retries=0) as b:
        yield a, b


def test_projects_are_isolated(clients: tuple[OpenAI, OpenAI]) -> None:
    client_a, client_b = clients
    _, response = create_checked(client_a, model="echo", input="project a secret")
    assert client_a.responses.retrieve(response.id).output_text == "echo: project a secret"
    assert len(client_a.responses.input_items.list(response.id).data) == 1

    with pytest.raises(NotFoundError) as info:
        client_b.responses.retrieve(response.id)
    check_error_body(info.value.response.json(), 404)
    with pytest.raises(NotFoundError):
        client_b.responses.input_items.list(response.id)
    with pytest.raises(NotFoundError):
        client_b.responses.delete(response.id)
    with pytest.raises(NotFoundError) as chained:
        client_b.responses.create(model="echo", input="steal", previous_response_id=response.id)
    assert chained.value.param == "previous_response_id"
    # B's failed delete did not touch A's response.
    assert client_a.responses.retrieve(response.id).id == response.id


def test_wrong_key_is_401(keyed_server: KeyedServer) -> None:
    with OpenAI(base_url=keyed_server.server.base_url, api_key="sk-not-a-real-key", max_retries=0) as bad:
        with pytest.raises(AuthenticationError) as info:
            bad.responses.create(model="echo", input="hi")
        with pytest.raises(AuthenticationError):
            bad.models.list()
    assert info.value.status_code == 401
    error = check_error_body(info.value.response.json(), 401)
    assert error["code"] == "invalid_api_key"
    assert "sk-not-a-real-key" not in error["message"]  # the key is never echoed in full


def test_missing_key_is_401(keyed_server: KeyedServer) -> None:
    resp = httpx.post(keyed_server.server.base_url + "/responses", json={"model": "echo", "input": "hi"}, timeout=10)
    assert resp.status_code == 401
    check_error_body(resp.json(), 401)
    resp = httpx.get(keyed_server.server.base_url + "/responses/resp_x", timeout=10,
                     headers={"authorization": "Basic abc"})
    assert resp.status_code == 401


async def test_async_client_with_key(keyed_server: KeyedServer) -> None:
    url = keyed_server.server.base_url
    async with AsyncOpenAI(base_url=url, api_key=keyed_server.key_b, max_retries=0) as client_b, \
            AsyncOpenAI(base_url=url, api_key=keyed_server.key_a, max_retries=0) as client_a:
        response = await client_b.responses.create(model="echo", input="project b")
        assert response.output_text == "echo: project b"
        assert (await client_b.responses.retrieve(response.id)).id == response.id
        with pytest.raises(NotFoundError):
            await client_a.responses.retrieve(response.id)
