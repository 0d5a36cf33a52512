"""Prompt templates through HTTP: the /v1/prompts admin API (httpx) and `prompt` on POST /v1/responses
(official SDK, in-process app, real upstream HTTP), including project isolation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.responses import Response as SdkResponse
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from parley.config import EmbeddedConfig, ModelConfig, Settings
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import in_process

EVENTS = TypeAdapter(ResponseStreamEvent)
IMAGE_URL = "https://example.com/cat.png"
TEMPLATE = {
    "instructions": "You are a {{tone}} assistant.",
    "input": [
        {"role": "user", "content": [
            {"type": "input_text", "text": "Describe this picture for {{audience}}:"},
            {"type": "input_text", "text": "{{photo}}"},
        ]},
    ],
    "model": "echo",
    "metadata": {"team": "docs"},
}
VARIABLES: dict[str, Any] = {
    "tone": "cheerful", "audience": "children", "photo": {"type": "input_image", "image_url": IMAGE_URL},
}


class Env:
    def __init__(self, http: httpx.AsyncClient, client: AsyncOpenAI, fake: FakeUpstream) -> None:
        self.http = http
        self.client = client
        self.fake = fake

    @property
    def sent(self) -> dict[str, Any]:
        return self.fake.requests[-1]

    async def create_prompt(self, body: dict[str, Any]) -> dict[str, Any]:
        created = await self.http.post("/v1/prompts", json=body)
        assert created.status_code == 200, created.text
        prompt: dict[str, Any] = created.json()
        return prompt


def _settings(data_dir: Path, fake: FakeUpstream, **extra: Any) -> Settings:
    models = [ModelConfig(id=name, base_url=fake.base_url, upstream_model="echo") for name in ("echo", "other")]
    return Settings(data_dir=data_dir, models=models, embedded=EmbeddedConfig(enabled=False), **extra)


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream()
    await upstream.start()
    yield upstream
    await upstream.stop()


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream) -> AsyncIterator[Env]:
    async with in_process(_settings(tmp_path_factory.mktemp("prompts"), fake)) as parley:
        yield Env(parley.http, parley.sdk(), fake)


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


# -- prompt on POST /v1/responses --------------------------------------------------------------------


async def test_prompt_with_image_variable_renders_into_the_upstream_call(env: Env) -> None:
    prompt = await env.create_prompt(TEMPLATE)
    response = await env.client.responses.create(
        prompt={"id": prompt["id"], "variables": VARIABLES}, input="Keep it short."
    )
    assert response.status == "completed"
    assert response.model == "echo"  # from the template: the request has no model
    assert response.instructions == "You are a cheerful assistant."
    assert response.prompt is not None
    assert (response.prompt.id, response.prompt.version) == (prompt["id"], "1")
    assert response.prompt.variables is not None
    photo = response.prompt.variables["photo"]
    assert not isinstance(photo, str) and photo.type == "input_image"
    assert env.sent["messages"] == [
        {"role": "system", "content": "You are a cheerful assistant."},
        {"role": "user", "content": [
            {"type": "text", "text": "Describe this picture for children:"},
            {"type": "image_url", "image_url": {"url": IMAGE_URL, "detail": "auto"}},
        ]},
        {"role": "user", "content": "Keep it short."},
    ]
    stored = await env.client.responses.input_items.list(response.id, order="asc")
    assert [item.type for item in stored.data] == ["message", "message"]
    first = stored.data[0]
    assert first.type == "message" and [part.type for part in first.content] == ["input_text", "input_image"]


async def test_response_with_prompt_validates_against_the_sdk_types(env: Env) -> None:
    prompt = await env.create_prompt(TEMPLATE)
    raw = await env.http.post("/v1/responses", json={"prompt": {"id": prompt["id"], "variables": VARIABLES}})
    assert raw.status_code == 200, raw.text
    body = raw.json()
    parsed = SdkResponse.model_validate(body)
    assert parsed.prompt is not None and parsed.prompt.version == "1"
    assert body["prompt"]["variables"]["photo"] == {"type": "input_image", "image_url": IMAGE_URL, "detail": "auto"}
    retrieved = await env.http.get(f"/v1/responses/{body['id']}")
    assert retrieved.json()["prompt"] == body["prompt"]


async def test_request_instructions_follow_and_request_model_wins(env: Env) -> None:
    prompt = await env.create_prompt({"instructions": "Rule {{n}}.", "model": "echo"})
    second = await env.http.post(f"/v1/prompts/{prompt['id']}/versions", json={"instructions": "New rule {{n}}."})
    assert second.json()["version"] == "2"
    response = await env.client.responses.create(
        model="other", instructions="Also be kind.", input="hi",
        prompt={"id": prompt["id"], "version": "1", "variables": {"n": {"type": "input_text", "text": "7"}}},
    )
    assert response.model == "other"
    assert response.instructions == "Rule 7.\n\nAlso be kind."
    assert response.prompt is not None and response.prompt.version == "1"
    assert env.sent["messages"][0]["content"] == "Rule 7.\n\nAlso be kind."
    latest = await env.client.responses.create(model="echo", input="hi", prompt={"id": prompt["id"],
                                                                                  "variables": {"n": "8"}})
    assert latest.instructions == "New rule 8." and latest.prompt is not None and latest.prompt.version == "2"


async def test_streaming_with_prompt_echoes_the_resolved_version(env: Env) -> None:
    prompt = await env.create_prompt({"instructions": "Be {{mood}}.", "input": "Say {{word}}", "model": "echo"})
    stream = await env.client.responses.create(
        prompt={"id": prompt["id"], "variables": {"mood": "calm", "word": "owl"}}, stream=True
    )
    events = [EVENTS.validate_python(event.model_dump()) async for event in stream]
    assert events[0].type == "response.created"
    assert events[0].response.prompt is not None and events[0].response.prompt.version == "1"
    final = events[-1]
    assert final.type == "response.completed"
    assert final.response.output_text == "echo: Say owl"


@pytest.mark.parametrize(
    ("prompt", "status", "param"),
    [
        ({"id": "pmpt_missing"}, 404, "prompt.id"),
        ({"version": "9"}, 404, "prompt.version"),
        ({"version": "latest"}, 404, "prompt.version"),
        ({"variables": {"tone": "calm", "audience": "all"}}, 400, "prompt.variables"),
        ({"variables": {**VARIABLES, "tone": {"type": "input_image", "image_url": IMAGE_URL}}}, 400,
         "prompt.variables.tone"),
        ({"variables": {**VARIABLES, "audience": 42}}, 400, "prompt.variables.audience"),
    ],
)
async def test_prompt_errors_name_the_parameter(env: Env, prompt: dict[str, Any], status: int, param: str) -> None:
    created = await env.create_prompt(TEMPLATE)
    before = len(env.fake.requests)
    with pytest.raises(openai.APIStatusError) as caught:
        await env.client.responses.create(input="hi", prompt={"id": created["id"], **prompt})  # type: ignore[call-overload]
    assert caught.value.status_code == status
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == param
    assert len(env.fake.requests) == before  # nothing reached the upstream


async def test_no_model_in_request_or_template_is_a_400(env: Env) -> None:
    prompt = await env.create_prompt({"instructions": "Hi"})
    with pytest.raises(openai.BadRequestError) as caught:
        await env.client.responses.create(input="hi", prompt={"id": prompt["id"]})
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "model"


# -- the admin API -----------------------------------------------------------------------------------


async def test_prompt_crud(env: Env) -> None:
    created = await env.create_prompt(TEMPLATE)
    assert created["id"].startswith("pmpt_") and created["object"] == "prompt" and created["version"] == "1"
    assert {k: created[k] for k in ("instructions", "input", "model", "metadata")} == TEMPLATE
    assert isinstance(created["created_at"], int)
    pid = created["id"]

    v2 = await env.http.post(f"/v1/prompts/{pid}/versions", json={"instructions": "v2"})
    assert (v2.status_code, v2.json()["id"], v2.json()["version"]) == (200, pid, "2")
    assert v2.json()["input"] is None and v2.json()["metadata"] == {}  # a version is a whole template

    latest = (await env.http.get(f"/v1/prompts/{pid}")).json()
    assert latest["version"] == "2" and latest["instructions"] == "v2"
    first = (await env.http.get(f"/v1/prompts/{pid}/versions/1")).json()
    assert first == created

    listed = (await env.http.get("/v1/prompts", params={"limit": 100})).json()
    assert listed["object"] == "list" and listed["has_more"] is False
    mine = [p for p in listed["data"] if p["id"] == pid]
    assert len(mine) == 1 and mine[0]["version"] == "2"
    assert listed["first_id"] == listed["data"][0]["id"] and listed["last_id"] == listed["data"][-1]["id"]

    deleted = await env.http.delete(f"/v1/prompts/{pid}")
    assert deleted.json() == {"id": pid, "object": "prompt.deleted", "deleted": True}
    assert _error(await env.http.get(f"/v1/prompts/{pid}"), 404)["param"] == "prompt_id"
    assert _error(await env.http.get(f"/v1/prompts/{pid}/versions/1"), 404)["param"] == "prompt_id"
    assert _error(await env.http.delete(f"/v1/prompts/{pid}"), 404)["param"] == "prompt_id"


async def test_list_prompts_pages(env: Env) -> None:
    ids = [(await env.create_prompt({"instructions": f"p{n}"}))["id"] for n in range(3)]
    page = (await env.http.get("/v1/prompts", params={"limit": 2})).json()
    assert [p["id"] for p in page["data"]] == ids[::-1][:2] and page["has_more"] is True
    rest = (await env.http.get("/v1/prompts", params={"limit": 2, "after": page["last_id"]})).json()
    assert rest["data"][0]["id"] == ids[0]
    assert _error(await env.http.get("/v1/prompts", params={"after": "pmpt_nope"}), 400)["param"] == "after"
    assert _error(await env.http.get("/v1/prompts", params={"limit": 0}), 400)["param"] == "limit"


async def test_admin_not_found(env: Env) -> None:
    created = await env.create_prompt({"instructions": "x"})
    assert _error(await env.http.get(f"/v1/prompts/{created['id']}/versions/2"), 404)["param"] == "version"
    assert _error(await env.http.get(f"/v1/prompts/{created['id']}/versions/x"), 404)["param"] == "version"
    missing = await env.http.post("/v1/prompts/pmpt_missing/versions", json={"instructions": "x"})
    assert _error(missing, 404)["param"] == "prompt_id"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"instructions": 5}, "instructions"),
        ({"model": ["a"]}, "model"),
        ({"metadata": {"k": 1}}, "metadata.k"),
        ({"input": [{"role": "robot", "content": "hi"}]}, "input[0].role"),
        ({"input": [{"role": "user", "content": [{"type": "output_text", "text": "x"}]}]},
         "input[0].content[0].type"),
    ],
)
async def test_invalid_prompt_body_is_a_400(env: Env, body: dict[str, Any], param: str) -> None:
    assert _error(await env.http.post("/v1/prompts", json=body), 400)["param"] == param


async def test_empty_body_is_a_400(env: Env) -> None:
    error = _error(await env.http.post("/v1/prompts", content=b""), 400)
    assert error["code"] == "invalid_json"


# -- project isolation -------------------------------------------------------------------------------


async def test_prompts_are_invisible_to_other_projects(tmp_path: Path, fake: FakeUpstream) -> None:
    async with in_process(_settings(tmp_path, fake, auth_cache_ttl_s=0)) as parley:
        store = parley.app.state.runtime.store
        _, key_a = await store.create_key("project-a", "a")
        _, key_b = await store.create_key("project-b", "b")
        transport = httpx.ASGITransport(app=parley.app)
        a = httpx.AsyncClient(transport=transport, base_url="http://parley",
                              headers={"authorization": f"Bearer {key_a}"})
        b = httpx.AsyncClient(transport=transport, base_url="http://parley",
                              headers={"authorization": f"Bearer {key_b}"})
        try:
            created = (await a.post("/v1/prompts", json={"instructions": "secret", "model": "echo"})).json()
            pid = created["id"]
            assert _error(await b.get(f"/v1/prompts/{pid}"), 404)["param"] == "prompt_id"
            assert _error(await b.post(f"/v1/prompts/{pid}/versions", json={}), 404)["param"] == "prompt_id"
            assert _error(await b.delete(f"/v1/prompts/{pid}"), 404)["param"] == "prompt_id"
            assert (await b.get("/v1/prompts")).json()["data"] == []
            used = await b.post("/v1/responses", json={"input": "hi", "prompt": {"id": pid}})
            assert _error(used, 404)["param"] == "prompt.id"
            assert [p["id"] for p in (await a.get("/v1/prompts")).json()["data"]] == [pid]
            ok = await a.post("/v1/responses", json={"input": "hi", "prompt": {"id": pid}})
            assert ok.status_code == 200 and ok.json()["instructions"] == "secret"
            async with httpx.AsyncClient(transport=transport, base_url="http://parley") as anonymous:
                assert _error(await anonymous.get("/v1/prompts"), 401)["code"] == "invalid_api_key"
        finally:
            await a.aclose()
            await b.aclose()
