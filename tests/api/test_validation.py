"""Every bad input gets a 400 in the OpenAI error shape naming the parameter (in-process app, real upstream HTTP)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.app import create_app
from parley.config import EmbeddedConfig, ModelConfig, Settings
from parley.testing.fake_upstream import FakeUpstream


@pytest.fixture(scope="module")
async def client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    fake = FakeUpstream()
    await fake.start()
    data_dir: Path = tmp_path_factory.mktemp("api")
    settings = Settings(
        data_dir=data_dir, max_body_bytes=64 * 1024,
        models=[ModelConfig(id="fake", base_url=fake.base_url, upstream_model="echo")],
        embedded=EmbeddedConfig(enabled=False),
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://parley/v1") as http:
            yield http
    await fake.stop()


BAD_BODIES: list[tuple[dict[str, Any], str | None, str | None]] = [
    ({"temperature": 3}, "temperature", None),
    ({"top_p": 1.5}, "top_p", None),
    ({"top_logprobs": 21}, "top_logprobs", None),
    ({"max_output_tokens": 5}, "max_output_tokens", None),
    ({"max_tool_calls": 0}, "max_tool_calls", None),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", None),
    ({"metadata": {"k": "v" * 513}}, "metadata", None),
    ({"safety_identifier": "x" * 65}, "safety_identifier", None),
    ({"truncation": "sometimes"}, "truncation", None),
    ({"include": ["nope"]}, "include[0]", None),
    ({"service_tier": "turbo"}, "service_tier", None),
    ({"reasoning": {"effort": "extreme"}}, "reasoning.effort", None),
    ({"text": {"format": {"type": "json_schema", "name": "bad name!", "schema": {}}}}, "text.format.name", None),
    ({"previous_response_id": "resp_x", "conversation": "conv_x"}, "previous_response_id", None),
    ({"stream_options": {"include_obfuscation": False}}, "stream_options", None),
    ({"model": "nope"}, "model", "model_not_found"),
    ({"model": None}, "model", "missing_required_parameter"),
    ({"input": [{"type": "bogus"}]}, "input[0]", None),
    ({"input": [{"role": "wizard", "content": "x"}]}, "input[0].role", None),
    ({"input": [{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]},
     "input[0].content[0].type", None),
    ({"input": [{"type": "function_call_output", "call_id": "c1", "output": "x"}]}, "input[0].call_id", None),
    ({"tools": [{"type": "function", "name": "bad name"}]}, "tools[0].name", None),
    ({"tools": [{"type": "teleport"}]}, "tools[0].type", None),
    ({"tools": [{"type": "image_generation"}]}, "tools[0].type", "unsupported_tool"),
    ({"tool_choice": {"type": "function", "name": "missing"}}, "tool_choice.name", None),
    ({"tool_choice": "required"}, "tool_choice", None),
    ({"background": True, "store": False}, "background", None),
    ({"context_management": [{"type": "compaction"}] * 2}, "context_management", None),
    ({"context_management": [{"type": "compaction", "compact_threshold": 0}]},
     "context_management[0].compact_threshold", None),
    ({"input": [{"type": "compaction_trigger"}, {"role": "user", "content": "x"}]}, "input[0]", None),
    ({"moderation": {"model": "omni-moderation-latest"}}, "moderation", "unsupported_value"),
]


@pytest.mark.parametrize(("patch", "param", "code"), BAD_BODIES)
async def test_bad_field_is_a_400_naming_param(
    client: httpx.AsyncClient, patch: dict[str, Any], param: str | None, code: str | None
) -> None:
    body = {"model": "fake", "input": "hi", **patch}
    resp = await client.post("/responses", json=body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    assert resp.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b""])
async def test_unparseable_body(client: httpx.AsyncClient, raw: bytes) -> None:
    resp = await client.post("/responses", content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] in ("invalid_json", "invalid_type")


async def test_unknown_fields_are_ignored(client: httpx.AsyncClient) -> None:
    resp = await client.post("/responses", json={"model": "fake", "input": "hi", "verbosity": "low", "zzz": 1})
    assert resp.status_code == 200
    assert resp.json()["output"][0]["content"][0]["text"] == "echo: hi"


async def test_body_over_limit_is_413(client: httpx.AsyncClient) -> None:
    resp = await client.post("/responses", json={"model": "fake", "input": "x" * 70_000})
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "request_too_large"


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    resp = await client.get("/nothing-here")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "unknown_url"
    resp = await client.put("/responses")
    assert resp.status_code == 405 and "error" in resp.json()


async def test_unknown_ids_are_404(client: httpx.AsyncClient) -> None:
    for method, path in [("GET", "/responses/resp_nope"), ("DELETE", "/responses/resp_nope"),
                         ("GET", "/responses/resp_nope/input_items"), ("GET", "/models/nope")]:
        resp = await client.request(method, path)
        assert resp.status_code == 404, (method, path)
    resp = await client.post("/responses", json={"model": "fake", "input": "x", "previous_response_id": "resp_no"})
    assert resp.status_code == 404 and resp.json()["error"]["param"] == "previous_response_id"
    resp = await client.post("/responses", json={"model": "fake", "input": [{"type": "item_reference", "id": "x"}]})
    assert resp.status_code == 404 and resp.json()["error"]["param"] == "input[0].id"


async def test_item_reference_resolves_a_stored_item(client: httpx.AsyncClient) -> None:
    first = (await client.post("/responses", json={"model": "fake", "input": "remember me"})).json()
    answer_id = first["output"][0]["id"]
    resp = await client.post("/responses", json={
        "model": "fake", "input": [{"type": "item_reference", "id": answer_id}, {"role": "user", "content": "ok"}],
    })
    assert resp.status_code == 200
    items = (await client.get(f"/responses/{resp.json()['id']}/input_items", params={"order": "asc"})).json()
    assert items["data"][0]["id"] == answer_id and items["data"][0]["role"] == "assistant"


async def test_models_listing(client: httpx.AsyncClient) -> None:
    data = (await client.get("/models")).json()
    assert [m["id"] for m in data["data"]] == ["fake"]
    assert (await client.get("/models/fake")).json()["object"] == "model"
