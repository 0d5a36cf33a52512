"""Compaction through the official SDK (in-process app, real upstream HTTP): POST /v1/responses/compact and
its round trip, forged items, compaction_trigger, and automatic compaction with `context_management`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI
from openai.types.responses import CompactedResponse, Response, ResponseStreamEvent
from pydantic import TypeAdapter

from parley.config import EmbeddedConfig, ModelConfig, ProfileOverrides, Settings
from parley.services.compaction import SUMMARY_PREFIX
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import in_process

EVENTS = TypeAdapter(ResponseStreamEvent)
# What the fake upstream's `summary` model answers a summarisation request (the transcript has 11 words),
# as the model then sees it.
SUMMARY = SUMMARY_PREFIX + "SUMMARY(11 words)"
OLD_TURNS: list[dict[str, Any]] = [
    {"role": "user", "content": "alpha question"},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "beta secret answer"}]},
    {"role": "user", "content": "gamma follow up"},
]


class Env:
    def __init__(self, http: httpx.AsyncClient, client: AsyncOpenAI, fake: FakeUpstream) -> None:
        self.http = http
        self.client = client
        self.fake = fake

    @property
    def sent(self) -> dict[str, Any]:
        return self.fake.requests[-1]


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    fake = FakeUpstream()
    await fake.start()
    models = [
        ModelConfig(id="summary", base_url=fake.base_url, upstream_model="summary"),
        ModelConfig(id="reasoning", base_url=fake.base_url, upstream_model="reasoning",
                    quirks=ProfileOverrides(reasoning_passback=True)),
    ]
    settings = Settings(data_dir=tmp_path_factory.mktemp("compaction"), models=models,
                        embedded=EmbeddedConfig(enabled=False))
    async with in_process(settings) as parley:
        yield Env(parley.http, parley.sdk(), fake)
    await fake.stop()


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


def _texts(messages: list[dict[str, Any]]) -> list[str]:
    """Message texts; any summary message (whatever transcript it summarised) reads as "<summary>"."""
    texts = [m["content"] if isinstance(m["content"], str) else m["content"][0]["text"] for m in messages]
    return ["<summary>" if t.startswith(SUMMARY_PREFIX + "SUMMARY(") else t for t in texts]


async def _compact(env: Env, **params: Any) -> tuple[CompactedResponse, list[dict[str, Any]]]:
    """responses.compact through the SDK; also the raw output items (the SDK types `output` as output items,
    so the user messages it holds would not round-trip through model_dump unchanged)."""
    raw = await env.client.responses.with_raw_response.compact(**params)
    body = raw.http_response.json()
    output: list[dict[str, Any]] = body["output"]
    # The SDK's parse() does not validate: validate the wire body against the SDK type itself (all but the
    # user messages, which its output-item union does not admit).
    CompactedResponse.model_validate({**body, "output": [o for o in output if o["type"] != "message"]})
    return raw.parse(), output


def _is_summary_request(body: dict[str, Any]) -> bool:
    messages = body["messages"]
    return len(messages) == 2 and messages[0]["role"] == "system" and "ummar" in messages[0]["content"]


async def test_compact_then_send_the_output_back(env: Env) -> None:
    compacted, output = await _compact(env, model="summary", input=OLD_TURNS)
    assert isinstance(compacted, CompactedResponse) and compacted.object == "response.compaction"
    assert compacted.id and isinstance(compacted.created_at, int)
    assert [(o["type"], o.get("role")) for o in output] == [
        ("message", "user"), ("message", "user"), ("compaction", None)]
    assert compacted.output[-1].type == "compaction"
    compaction = output[-1]
    assert compaction["id"].startswith("cmp_") and compaction["encrypted_content"]
    assert "beta secret answer" not in compaction["encrypted_content"]  # sealed, not readable
    assert compacted.usage.output_tokens > 0 and compacted.usage.total_tokens > 0
    summarised = env.sent
    assert _is_summary_request(summarised) and "beta secret answer" in summarised["messages"][1]["content"]

    follow_up = await env.client.responses.create(
        model="summary", input=[*output, {"role": "user", "content": "delta now"}])
    assert follow_up.status == "completed"
    messages = env.sent["messages"]
    assert [m["role"] for m in messages] == ["user", "user", "system", "user"]
    assert _texts(messages) == ["alpha question", "gamma follow up", "<summary>", "delta now"]
    assert messages[2]["content"] == SUMMARY
    assert not any("beta secret answer" in text for text in _texts(messages))


async def test_compact_includes_the_previous_response_chain(env: Env) -> None:
    first = await env.client.responses.create(model="summary", input="first question")
    _, raw = await _compact(env, model="summary", previous_response_id=first.id, input="second question")
    assert [o["content"][0]["text"] for o in raw[:-1]] == ["first question", "second question"]
    assert raw[-1]["type"] == "compaction"
    assert "echo: first question" in env.sent["messages"][1]["content"]  # the assistant turn was summarised


async def test_compacting_a_compacted_context_keeps_the_old_summary(env: Env) -> None:
    _, once = await _compact(env, model="summary", input=OLD_TURNS)
    _, twice = await _compact(env, model="summary", input=[*once, {"role": "user", "content": "more"}])
    transcript = env.sent["messages"][1]["content"]
    assert SUMMARY in transcript and "beta secret answer" not in transcript
    assert [o["type"] for o in twice] == ["message", "message", "message", "compaction"]


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"input": "x"}, 400, "model"),
    ({"model": "summary", "input": [{"role": "robot", "content": "x"}]}, 400, "input[0].role"),
    ({"model": "summary", "input": [{"type": "compaction_trigger"}, {"role": "user", "content": "x"}]}, 400,
     "input[0]"),
    ({"model": "summary", "input": [{"role": "user", "content": "x"}, {"type": "compaction_trigger"}]}, 400,
     "input[1].type"),
    ({"model": "summary", "previous_response_id": "resp_nope", "input": "x"}, 404, "previous_response_id"),
    ({"model": "summary"}, 400, "input"),
])
async def test_compact_validation(env: Env, body: dict[str, Any], status: int, param: str) -> None:
    count = len(env.fake.requests)
    assert _error(await env.http.post("/v1/responses/compact", json=body), status)["param"] == param
    assert len(env.fake.requests) == count  # nothing reached the upstream


async def test_forged_compaction_items_are_400s(env: Env) -> None:
    forged = await env.http.post("/v1/responses", json={"model": "summary", "input": [
        {"role": "user", "content": "x"}, {"type": "compaction", "encrypted_content": "prl1.AAAAforged"}]})
    error = _error(forged, 400)
    assert error["param"] == "input[1].encrypted_content" and error["code"] == "invalid_encrypted_content"

    # A genuine sealed token made for another purpose (reasoning) does not open as a compaction.
    reasoning = await env.client.responses.create(model="reasoning", input="think", store=False,
                                                  include=["reasoning.encrypted_content"])
    token = reasoning.output[0].encrypted_content  # type: ignore[union-attr]
    assert token
    swapped = await env.http.post("/v1/responses", json={"model": "summary", "input": [
        {"type": "compaction", "encrypted_content": token}, {"role": "user", "content": "x"}]})
    assert _error(swapped, 400)["param"] == "input[0].encrypted_content"
    trigger = await env.http.post("/v1/responses", json={"model": "summary", "input": [
        {"role": "user", "content": "x"}, {"type": "compaction_trigger"}]})
    assert _error(trigger, 400)["code"] == "unsupported_value"


# -- context_management ------------------------------------------------------------------------------


async def test_auto_compaction_emits_an_item_and_compacts_the_context(env: Env) -> None:
    first = await env.client.responses.create(model="summary", input="first long question about the moon")
    count = len(env.fake.requests)
    second = await env.client.responses.create(
        model="summary", previous_response_id=first.id, input="next",
        context_management=[{"type": "compaction", "compact_threshold": 5}])
    Response.model_validate(second.model_dump())
    assert [o.type for o in second.output] == ["compaction", "message"]
    summary_call, model_call = env.fake.requests[count:]
    assert _is_summary_request(summary_call)
    assert "echo: first long question" in summary_call["messages"][1]["content"]
    assert _texts(model_call["messages"]) == [
        "first long question about the moon", "next", "<summary>"]

    # Later turns honour the stored compaction item: the old assistant turn stays out of the context.
    await env.client.responses.create(model="summary", previous_response_id=second.id, input="third")
    texts = _texts(env.sent["messages"])
    assert texts[:3] == ["first long question about the moon", "next", "<summary>"]
    assert texts[3:] == ["echo: next", "third"]  # second's own answer, then the new input


async def test_auto_compaction_streams_the_item_first(env: Env) -> None:
    first = await env.client.responses.create(model="summary", input="one two three four five six")
    stream = await env.client.responses.create(
        model="summary", previous_response_id=first.id, input="go on", stream=True,
        context_management=[{"type": "compaction", "compact_threshold": 5}])
    events = [e async for e in stream]
    for event in events:
        EVENTS.validate_python(event.model_dump())
    kinds = [e.type for e in events]
    assert kinds[:5] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.output_item.done", "response.output_item.added"]
    added = events[2]
    assert added.item.type == "compaction" and added.output_index == 0  # type: ignore[union-attr]
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output[0].id == added.item.id and final.output[1].type == "message"  # type: ignore[union-attr]
    assert [e.sequence_number for e in events] == list(range(len(events)))


async def test_no_compaction_under_the_threshold(env: Env) -> None:
    first = await env.client.responses.create(model="summary", input="short")
    count = len(env.fake.requests)
    second = await env.client.responses.create(
        model="summary", previous_response_id=first.id, input="again",
        context_management=[{"type": "compaction", "compact_threshold": 100_000}])
    assert [o.type for o in second.output] == ["message"] and len(env.fake.requests) == count + 1
    assert _texts(env.sent["messages"]) == ["short", "echo: short", "again"]


async def test_auto_compaction_in_a_conversation(env: Env) -> None:
    conv = await env.client.conversations.create(items=OLD_TURNS)  # type: ignore[arg-type]
    resp = await env.client.responses.create(
        model="summary", conversation=conv.id, input="what now",
        context_management=[{"type": "compaction", "compact_threshold": 5}])
    assert [o.type for o in resp.output] == ["compaction", "message"]
    items = [i async for i in env.client.conversations.items.list(conv.id, order="asc")]
    assert [i.type for i in items] == ["message"] * 4 + ["compaction", "message"]
    await env.client.responses.create(model="summary", conversation=conv.id, input="and then")
    texts = _texts(env.sent["messages"])
    assert "beta secret answer" not in texts and texts[-1] == "and then"
    assert texts[:4] == ["alpha question", "gamma follow up", "what now", "<summary>"]


async def test_context_management_takes_one_entry(env: Env) -> None:
    two = await env.http.post("/v1/responses", json={"model": "summary", "input": "x", "context_management": [
        {"type": "compaction"}, {"type": "compaction"}]})
    assert _error(two, 400)["param"] == "context_management"
    bad = await env.http.post("/v1/responses", json={"model": "summary", "input": "x", "context_management": [
        {"type": "other"}]})
    assert _error(bad, 400)["param"] == "context_management[0].type"
