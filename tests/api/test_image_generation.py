"""The image_generation tool (issue 18): Parley asks an OpenAI-compatible images upstream (a fake over real HTTP
returning real PNGs) for the image the model calls for, and returns it as an `image_generation_call`."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from openai import AsyncOpenAI
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from parley.config import EmbeddedConfig, FetchConfig, ImagesConfig, ModelConfig, Settings
from parley.testing.fake_agent import AgentUpstream
from parley.testing.fake_images import FakeImages, colour, png
from parley.testing.in_process import InProcess, in_process

EVENTS = TypeAdapter(ResponseStreamEvent)


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[AgentUpstream]:
    upstream = AgentUpstream()
    await upstream.start()
    yield upstream
    await upstream.stop()


@pytest.fixture(scope="module")
async def images() -> AsyncIterator[FakeImages]:
    upstream = FakeImages(key="img-key")
    await upstream.start()
    yield upstream
    await upstream.stop()


@pytest.fixture(scope="module")
async def app(fake: AgentUpstream, images: FakeImages, tmp_path_factory: pytest.TempPathFactory,
              monkeypatch_module: pytest.MonkeyPatch) -> AsyncIterator[InProcess]:
    monkeypatch_module.setenv("PARLEY_TEST_IMAGES_KEY", "img-key")
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("images"), embedded=EmbeddedConfig(enabled=False),
        models=[ModelConfig(id="agent", base_url=fake.base_url, upstream_model="call-agent")],
        images=ImagesConfig(base_url=images.base_url, model="img-1", models=["gpt-image-1"],
                            api_key_env="PARLEY_TEST_IMAGES_KEY"),
        fetch=FetchConfig(allow=["127.0.0.1/32"]),  # the fake serves the web image an edit fetches
    )
    async with in_process(settings) as running:
        yield running


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()


@pytest.fixture(scope="module")
def sdk(app: InProcess) -> AsyncOpenAI:
    return app.sdk()


def _ask(arguments: dict[str, Any]) -> str:
    return json.dumps({"call": "image_generation", "arguments": arguments})


def _size(b64: str) -> tuple[int, int]:
    data = base64.b64decode(b64)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


async def _stream(app: InProcess, body: dict[str, Any]) -> list[dict[str, Any]]:
    async with app.http.stream("POST", "/v1/responses", json={**body, "stream": True}) as resp:
        assert resp.status_code == 200, await resp.aread()
        text = (await resp.aread()).decode()
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    for event in events:
        EVENTS.validate_python(event)
    return events


async def test_generates_an_image(sdk: AsyncOpenAI, images: FakeImages) -> None:
    response = await sdk.responses.create(
        model="agent", input=_ask({"prompt": "a red fox"}),
        tools=[{"type": "image_generation", "size": "48x32", "quality": "low"}])
    call = response.output[0]
    assert call.type == "image_generation_call" and call.status == "completed"
    assert call.result is not None and _size(call.result) == (48, 32)
    assert call.revised_prompt == "revised: a red fox" and call.action == "generate"
    assert call.size == "48x32" and call.quality == "low" and call.output_format == "png"
    sent = images.requests[-1]
    assert sent["endpoint"] == "generations" and sent["model"] == "img-1" and sent["size"] == "48x32"
    assert "stream" not in sent
    assert response.output_text == "done: The image was generated and shown to the user. The prompt used: " \
                                   "revised: a red fox"


async def test_streams_partial_images(app: InProcess, images: FakeImages) -> None:
    body = {"model": "agent", "input": _ask({"prompt": "a boat"}),
            "tools": [{"type": "image_generation", "partial_images": 2, "model": "gpt-image-1"}]}
    events = await _stream(app, body)
    kinds = [e["type"] for e in events if e["type"].startswith("response.image_generation_call.")]
    assert kinds == ["response.image_generation_call.in_progress", "response.image_generation_call.generating",
                     "response.image_generation_call.partial_image", "response.image_generation_call.partial_image",
                     "response.image_generation_call.completed"]
    partials = [e for e in events if e["type"] == "response.image_generation_call.partial_image"]
    assert [p["partial_image_index"] for p in partials] == [0, 1]
    assert _size(partials[0]["partial_image_b64"]) == (64, 64) and partials[0]["output_format"] == "png"
    sent = images.requests[-1]
    assert sent["stream"] is True and sent["partial_images"] == 2 and sent["model"] == "gpt-image-1"
    final = Response.model_validate(events[-1]["response"])
    call = final.output[0]
    assert call.type == "image_generation_call" and call.result is not None
    assert call.result != partials[-1]["partial_image_b64"]
    done = next(e for e in events if e["type"] == "response.output_item.done")
    assert done["item"]["result"] == call.result


async def test_edits_the_image_of_an_earlier_response(sdk: AsyncOpenAI, app: InProcess, images: FakeImages,
                                                     fake: AgentUpstream) -> None:
    tool = {"type": "image_generation", "size": "16x16"}
    first = await sdk.responses.create(model="agent", input=_ask({"prompt": "a cat"}), tools=[tool])  # type: ignore[list-item]
    made = first.output[0]
    assert made.type == "image_generation_call" and made.result is not None
    second = await sdk.responses.create(
        model="agent", previous_response_id=first.id, tools=[tool],  # type: ignore[list-item]
        input=_ask({"prompt": "make it blue", "action": "edit"}))
    edit = second.output[0]
    assert edit.type == "image_generation_call" and edit.action == "edit" and edit.status == "completed"
    sent = images.requests[-1]
    assert sent["endpoint"] == "edits" and sent["files"]["image"] == [base64.b64decode(made.result)]
    assert edit.result == base64.b64encode(png(16, 16, colour(b"make it blue", base64.b64decode(made.result)))).decode()
    # The first call is replayed to the model as the call it made and what it was told, never as the image.
    sent_to_model = json.dumps(fake.requests[-2]["messages"])
    assert "revised: a cat" in sent_to_model and made.result not in sent_to_model
    listed = (await app.http.get(f"/v1/responses/{first.id}")).json()
    assert listed["output"][0]["result"] == made.result


async def test_edits_an_image_the_user_sent_with_a_mask(sdk: AsyncOpenAI, images: FakeImages) -> None:
    source = png(8, 8, (1, 2, 3))
    mask = png(8, 8, (0, 0, 0))
    url = "data:image/png;base64," + base64.b64encode(source).decode()
    tool = {"type": "image_generation", "action": "edit", "input_fidelity": "high",
            "input_image_mask": {"image_url": "data:image/png;base64," + base64.b64encode(mask).decode()}}
    response = await sdk.responses.create(
        model="agent", tools=[tool],  # type: ignore[list-item]
        input=[{"role": "user", "content": [{"type": "input_image", "image_url": url, "detail": "auto"},
                                            {"type": "input_text", "text": _ask({"prompt": "add a hat"})}]}])
    call = response.output[0]
    assert call.type == "image_generation_call" and call.action == "edit" and call.status == "completed"
    sent = images.requests[-1]
    assert sent["files"]["image"] == [source] and sent["files"]["mask"] == [mask]
    assert sent["input_fidelity"] == "high"


async def test_an_edit_without_an_image_fails_the_call(sdk: AsyncOpenAI) -> None:
    response = await sdk.responses.create(model="agent", input=_ask({"prompt": "bluer", "action": "edit"}),
                                          tools=[{"type": "image_generation"}])
    call = response.output[0]
    assert call.type == "image_generation_call" and call.status == "failed" and call.result is None
    assert "no image in the conversation" in response.output_text


@pytest.mark.parametrize(("prompt", "told"), [
    ("refuse this", "rejected the request"),
    ("boom", "failed"),
])
async def test_upstream_failures_fail_the_call(sdk: AsyncOpenAI, prompt: str, told: str) -> None:
    response = await sdk.responses.create(model="agent", input=_ask({"prompt": prompt}),
                                          tools=[{"type": "image_generation"}])
    assert response.status == "completed"
    call = response.output[0]
    assert call.type == "image_generation_call" and call.status == "failed"
    assert "The image could not be made" in response.output_text and told in response.output_text


async def test_a_stream_error_midway_fails_the_call(app: InProcess) -> None:
    events = await _stream(app, {"model": "agent", "input": _ask({"prompt": "midstream"}),
                                 "tools": [{"type": "image_generation", "partial_images": 1}]})
    kinds = [e["type"] for e in events]
    assert "response.image_generation_call.partial_image" in kinds
    assert "response.image_generation_call.completed" not in kinds
    final = Response.model_validate(events[-1]["response"])
    assert final.status == "completed" and final.output[0].status == "failed"  # type: ignore[union-attr]


async def test_store_false_replay_and_input_items(sdk: AsyncOpenAI, app: InProcess, fake: AgentUpstream) -> None:
    first = await sdk.responses.create(model="agent", input=_ask({"prompt": "a tree"}), store=False,
                                       tools=[{"type": "image_generation"}])
    item = first.output[0].model_dump(exclude_none=True)
    # The client sends the item back itself: the model sees the call and what it was told, not the image.
    second = await sdk.responses.create(model="agent", tools=[{"type": "image_generation"}],
                                        input=[{"role": "user", "content": "hi"}, item,  # type: ignore[list-item]
                                               {"role": "user", "content": "thanks"}])
    assert second.output_text == "echo: thanks"
    sent = json.dumps(fake.requests[-1]["messages"])
    assert "image_generation" in sent and item["result"] not in sent
    listed = (await app.http.get(f"/v1/responses/{second.id}/input_items", params={"order": "asc"})).json()["data"]
    assert listed[1]["type"] == "image_generation_call" and listed[1]["result"] == item["result"]


@pytest.mark.parametrize(("tool", "param", "code"), [
    ({"type": "image_generation", "model": "dall-e-9"}, "tools[0].model", "model_not_found"),
    ({"type": "image_generation", "output_format": "gif", "partial_images": 1}, "tools[0].partial_images", None),
    ({"type": "image_generation", "partial_images": 4}, "tools[0].partial_images", None),
    ({"type": "image_generation", "size": "big"}, "tools[0].size", None),
    ({"type": "image_generation", "input_image_mask": {"image_url": "data:image/png;base64,AAAA"}},
     "tools[0].input_image_mask.image_url", None),
    ({"type": "image_generation", "input_image_mask": {"file_id": "file-nope"}},
     "tools[0].input_image_mask.file_id", None),
])
async def test_bad_declarations(app: InProcess, tool: dict[str, Any], param: str, code: str | None) -> None:
    response = await app.http.post("/v1/responses", json={"model": "agent", "input": "x", "tools": [tool]})
    assert response.status_code in (400, 404), response.text
    error = response.json()["error"]
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code


async def test_refused_without_an_images_upstream(fake: AgentUpstream, tmp_path_factory: pytest.TempPathFactory,
                                                  ) -> None:
    settings = Settings(data_dir=tmp_path_factory.mktemp("no-images"), embedded=EmbeddedConfig(enabled=False),
                        models=[ModelConfig(id="agent", base_url=fake.base_url, upstream_model="call-agent")])
    async with in_process(settings) as running:
        response = await running.http.post("/v1/responses", json={"model": "agent", "input": "x",
                                                                   "tools": [{"type": "image_generation"}]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unsupported_tool" and error["param"] == "tools[0].type"


# -- the paths every item takes: conversations, background runs and their replayed stream, compaction ----------


async def test_a_conversation_keeps_the_image_for_a_later_edit(sdk: AsyncOpenAI, images: FakeImages) -> None:
    conversation = await sdk.conversations.create()
    tool = {"type": "image_generation", "size": "16x16"}
    first = await sdk.responses.create(model="agent", conversation=conversation.id, tools=[tool],  # type: ignore[list-item]
                                       input=_ask({"prompt": "a hill"}))
    made = first.output[0]
    assert made.type == "image_generation_call" and made.result is not None
    items = [item async for item in sdk.conversations.items.list(conversation.id, order="asc")]
    stored = [item for item in items if item.type == "image_generation_call"]
    assert len(stored) == 1 and stored[0].result == made.result  # type: ignore[union-attr]
    await sdk.responses.create(model="agent", conversation=conversation.id, tools=[tool],  # type: ignore[list-item]
                               input=_ask({"prompt": "add snow", "action": "edit"}))
    assert images.requests[-1]["files"]["image"] == [base64.b64decode(made.result)]


async def test_a_background_run_and_its_replayed_stream(sdk: AsyncOpenAI, app: InProcess) -> None:
    created = await sdk.responses.create(model="agent", background=True, input=_ask({"prompt": "a road"}),
                                         tools=[{"type": "image_generation", "partial_images": 1}])
    # The replayed stream follows the run live to its end (no polling).
    async with app.http.stream("GET", f"/v1/responses/{created.id}", params={"stream": "true"}) as resp:
        text = (await resp.aread()).decode()
    done = await sdk.responses.retrieve(created.id)
    assert done.status == "completed" and done.output[0].type == "image_generation_call"
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    for event in events:
        EVENTS.validate_python(event)
    kinds = [e["type"] for e in events]
    assert "response.image_generation_call.partial_image" in kinds
    assert "response.image_generation_call.completed" in kinds
    later = next(e["sequence_number"] for e in events if e["type"] == "response.image_generation_call.generating")
    async with app.http.stream("GET", f"/v1/responses/{created.id}",
                               params={"stream": "true", "starting_after": str(later)}) as resp:
        resumed = [json.loads(line[6:]) for line in (await resp.aread()).decode().splitlines()
                   if line.startswith("data: {")]
    assert resumed[0]["sequence_number"] == later + 1
    assert resumed[0]["type"] == "response.image_generation_call.partial_image"


async def test_compaction_takes_image_items(app: InProcess, sdk: AsyncOpenAI, fake: AgentUpstream) -> None:
    first = await sdk.responses.create(model="agent", input=_ask({"prompt": "a moon"}),
                                       tools=[{"type": "image_generation"}])
    compacted = await app.http.post("/v1/responses/compact", json={"model": "agent",
                                                                  "previous_response_id": first.id})
    assert compacted.status_code == 200, compacted.text
    sent = json.dumps(fake.requests[-1]["messages"])
    made = first.output[0]
    assert made.type == "image_generation_call" and made.result is not None
    assert "revised: a moon" in sent and made.result not in sent  # the call as text, never the image


async def test_a_resent_image_must_be_base64(app: InProcess) -> None:
    item = {"type": "image_generation_call", "id": "ig_1", "status": "completed", "result": "not base64!"}
    response = await app.http.post("/v1/responses", json={"model": "agent", "input": [item]})
    assert response.status_code == 400 and response.json()["error"]["param"] == "input[0].result"


async def test_tool_choice_forces_the_image_call(sdk: AsyncOpenAI, fake: AgentUpstream) -> None:
    response = await sdk.responses.create(model="agent", input=_ask({"prompt": "a kite"}),
                                          tools=[{"type": "image_generation"}],
                                          tool_choice={"type": "image_generation"})
    assert response.output[0].type == "image_generation_call"
    first_turn = fake.requests[-2]
    assert first_turn["tool_choice"] == {"type": "function", "function": {"name": "image_generation"}}


@pytest.mark.parametrize("where", ["fake", "private"])
async def test_an_image_on_the_web_is_fetched_through_the_guard(sdk: AsyncOpenAI, images: FakeImages,
                                                                where: str) -> None:
    url = (f"http://127.0.0.1:{images.port}/pictures/12x12.png" if where == "fake"
           else "http://10.255.255.1/pictures/12x12.png")  # a private address: refused, never connected to
    response = await sdk.responses.create(
        model="agent", tools=[{"type": "image_generation", "action": "edit"}],
        input=[{"role": "user", "content": [{"type": "input_image", "image_url": url, "detail": "auto"},
                                            {"type": "input_text", "text": _ask({"prompt": "brighter"})}]}])
    call = response.output[0]
    assert call.type == "image_generation_call"
    if where == "fake":
        assert call.status == "completed" and images.requests[-1]["files"]["image"] == [png(12, 12, (9, 9, 9))]
    else:
        assert call.status == "failed" and "could not be read" in response.output_text


async def test_a_turn_with_a_client_tool_next_to_the_image_call_ends_the_response(
        sdk: AsyncOpenAI, fake: AgentUpstream) -> None:
    before = len(fake.requests)
    plan = json.dumps([[{"call": "image_generation", "arguments": {"prompt": "a map"}},
                        {"call": "apply_patch", "arguments": {"type": "delete_file", "path": "old.txt"}}]])
    response = await sdk.responses.create(model="agent", input=plan,
                                          tools=[{"type": "image_generation"}, {"type": "apply_patch"}])
    assert len(fake.requests) == before + 1  # no second model turn: the patch goes to the client first
    assert sorted(item.type for item in response.output) == ["apply_patch_call", "image_generation_call"]
    assert response.status == "completed"
