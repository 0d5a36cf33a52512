"""API keys through the SDK: a key sees only its own project's responses; a missing or wrong key is a 401; the
`auth` setting, not whether keys exist at the moment, decides whether keys are required."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from compat_support import (
    KeyedServer,
    ParleyServer,
    check_error_body,
    create_checked,
    free_port,
    model_toml,
    run_parley,
    wait_for,
)
from openai import AsyncOpenAI, AuthenticationError, NotFoundError, OpenAI

from parley.testing.fake_upstream import FakeUpstream


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


# -- auth is decided by configuration (api/auth.py) --------------------------------------------------------


def _status(server: ParleyServer, key: str | None) -> int:
    headers = {"authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.post(server.base_url + "/responses", json={"model": "echo", "input": "hi"}, headers=headers,
                      timeout=10).status_code


def test_revoking_the_last_key_leaves_the_server_closed(fake: FakeUpstream, tmp_path: Path) -> None:
    config = "auth_cache_ttl_s = 0.2\n" + model_toml("echo", fake.base_url, "echo") + "[embedded]\nenabled = false\n"
    server = ParleyServer(tmp_path, config)
    created = run_parley("keys", "create", "--project", "solo", "--data-dir", str(server.data_dir))
    record = json.loads(created.stdout.strip().splitlines()[-1])
    server.start()
    try:
        assert _status(server, record["key"]) == 200
        assert _status(server, None) == 401
        revoked = run_parley("keys", "revoke", record["id"], "--data-dir", str(server.data_dir))
        assert revoked.returncode == 0, revoked.stderr
        # The server has seen the revocation (its key cache, auth_cache_ttl_s = 0.2, was read again): no key is left.
        assert wait_for(lambda: _status(server, record["key"]) == 401, timeout=60)
        for key in (None, record["key"], "sk-any-key-at-all"):
            assert _status(server, key) == 401, key
        resp = httpx.get(server.base_url + "/models", timeout=10)
        assert resp.status_code == 401
        check_error_body(resp.json(), 401)
    finally:
        server.stop()


def test_auth_keys_without_any_key_refuses_everyone(fake: FakeUpstream, tmp_path: Path) -> None:
    config = 'auth = "keys"\n' + model_toml("echo", fake.base_url, "echo") + "[embedded]\nenabled = false\n"
    server = ParleyServer(tmp_path, config)
    server.start()
    try:
        assert _status(server, None) == 401 and _status(server, "sk-whatever") == 401
    finally:
        server.stop()
    assert "every request is refused" in server.log()


def test_auth_none_is_refused_on_a_non_loopback_address(tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    config.write_text('auth = "none"\n[embedded]\nenabled = false\n')
    out = run_parley("serve", "--host", "0.0.0.0", "--port", str(free_port()), "--data-dir", str(tmp_path / "data"),
                  "--config", str(config))
    assert out.returncode == 2
    assert 'auth = "none"' in out.stderr and "refusing to listen on 0.0.0.0" in out.stderr
