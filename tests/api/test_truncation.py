"""POST /v1/responses/input_tokens and `truncation` through the official SDK (in-process app, the fake
upstream over real HTTP): counts, validation, and the context window boundary."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from parley.config import EmbeddedConfig, ModelConfig, ProfileOverrides, Settings
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import in_process

WINDOW = 4096
TIKTOKEN = ProfileOverrides(tokenizer="tiktoken:o200k_base")
WEATHER = {
    "type": "function", "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
}


class Env:
    def __init__(self, client: AsyncOpenAI, http: httpx.AsyncClient, fake: FakeUpstream) -> None:
        self.client = client
        self.http = http
        self.fake = fake

    @property
    def sent(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self.fake.requests[-1]["messages"]
        return messages

    async def count(self, items: list[dict[str, Any]], tools: list[Any] | None = None) -> int:
        counted = await self.client.responses.input_tokens.count(
            model="tik", input=items, tools=tools or [],  # type: ignore[arg-type]
        )
        assert counted.object == "response.input_tokens"
        return counted.input_tokens


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    fake = FakeUpstream()
    await fake.start()
    models = [
        ModelConfig(id="tik", base_url=fake.base_url, upstream_model="echo", context_window=WINDOW, quirks=TIKTOKEN),
        ModelConfig(id="vllm", base_url=fake.base_url, upstream_model="echo", context_window=WINDOW, profile="vllm"),
    ]
    data_dir: Path = tmp_path_factory.mktemp("truncation")
    async with in_process(Settings(data_dir=data_dir, models=models, embedded=EmbeddedConfig(enabled=False))) as p:
        yield Env(p.sdk(), p.http, fake)
    await fake.stop()


def _msg(role: str, text: str) -> dict[str, Any]:
    kind = "output_text" if role == "assistant" else "input_text"
    return {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}


def _turns(count: int, words: int = 150) -> list[dict[str, Any]]:
    """Alternating user/assistant messages of `words` distinct-ish words each (~1 token per word)."""
    return [
        _msg("user" if i % 2 == 0 else "assistant", f"turn{i} " + " ".join(f"w{i}x{j}" for j in range(words)))
        for i in range(count)
    ]


# -- input_tokens --------------------------------------------------------------------------------


async def test_input_tokens_counts_offline_with_tiktoken(env: Env) -> None:
    counted = await env.client.responses.input_tokens.count(model="tik", input="hello world")
    assert counted.object == "response.input_tokens"
    assert counted.input_tokens == 9  # 3 per message + "user" + "hello world" (2) + 3 priming the reply
    fuller = await env.client.responses.input_tokens.count(
        model="tik", input="hello world", instructions="hi", tools=[WEATHER],  # type: ignore[list-item]
    )
    assert fuller.input_tokens > 9 + 5  # the instructions message and the tool definition count too


async def test_input_tokens_includes_the_previous_response_chain(env: Env) -> None:
    first = await env.client.responses.create(model="tik", input="hello world")
    alone = await env.client.responses.input_tokens.count(model="tik", input="and more")
    chained = await env.client.responses.input_tokens.count(
        model="tik", input="and more", previous_response_id=first.id
    )
    # The chain adds the first user message (9 - 3 priming) and the assistant reply.
    assert chained.input_tokens > alone.input_tokens + 6


async def test_input_tokens_through_the_vllm_tokenizer(env: Env) -> None:
    before = len(env.fake.tokenize_requests)
    counted = await env.client.responses.input_tokens.count(model="vllm", input="hello big world")
    assert counted.input_tokens == 3 + 3 + 2  # the fake's chat template
    assert env.fake.tokenize_requests[before:] == [
        ("/tokenize", {"model": "echo", "messages": [{"role": "user", "content": "hello big world"}]})
    ]


async def test_input_tokens_validates_like_create(env: Env) -> None:
    with pytest.raises(openai.BadRequestError) as bad_model:
        await env.client.responses.input_tokens.count(model="nope", input="hi")
    assert bad_model.value.code == "model_not_found" and bad_model.value.param == "model"
    with pytest.raises(openai.NotFoundError) as missing:
        await env.client.responses.input_tokens.count(model="tik", input="hi", previous_response_id="resp_missing")
    assert missing.value.param == "previous_response_id"
    with pytest.raises(openai.BadRequestError) as bad_item:
        await env.client.responses.input_tokens.count(
            model="tik", input=[{"type": "function_call_output", "call_id": "nope", "output": "x"}],
        )
    assert bad_item.value.param == "input[0].call_id"


async def test_input_tokens_route_is_post_only(env: Env) -> None:
    got = await env.http.get("/v1/responses/input_tokens")
    assert got.status_code == 404  # GET is "retrieve response 'input_tokens'"
    assert got.json()["error"]["param"] == "response_id"
    posted = await env.http.post("/v1/responses/input_tokens", json={"model": "tik", "input": "hello world"})
    assert posted.status_code == 200
    assert posted.json() == {"object": "response.input_tokens", "input_tokens": 9}


# -- truncation ----------------------------------------------------------------------------------


async def test_truncation_at_the_boundary(env: Env) -> None:
    context = _turns(6)
    tokens = await env.count(context)
    reserve = WINDOW - tokens  # the window minus max_output_tokens is exactly the context
    assert reserve >= 16

    fits = await env.client.responses.create(
        model="tik", input=context, max_output_tokens=reserve, truncation="disabled",  # type: ignore[arg-type]
    )
    assert fits.status == "completed" and fits.truncation == "disabled"
    assert len(env.sent) == 6 and env.sent[0]["content"].startswith("turn0 ")

    longer = [*context, _msg("user", "turn6 one more question")]
    auto = await env.client.responses.create(
        model="tik", input=longer, max_output_tokens=reserve, truncation="auto",  # type: ignore[arg-type]
    )
    assert auto.status == "completed" and auto.truncation == "auto"
    assert [m["content"].split()[0] for m in env.sent] == ["turn1", "turn2", "turn3", "turn4", "turn5", "turn6"]
    # What is stored is the request's input, untruncated.
    stored = [item async for item in env.client.responses.input_items.list(auto.id, order="asc")]
    assert len(stored) == 7

    sent_before = len(env.fake.requests)
    with pytest.raises(openai.BadRequestError) as info:
        await env.client.responses.create(
            model="tik", input=longer, max_output_tokens=reserve, truncation="disabled",  # type: ignore[arg-type]
        )
    assert info.value.code == "context_length_exceeded" and info.value.param == "input"
    assert len(env.fake.requests) == sent_before  # refused before reaching the upstream


async def test_truncation_drops_a_function_call_with_its_output(env: Env) -> None:
    tail = [_msg("assistant", "turn3 " + " ".join(f"a{j}" for j in range(100))), _msg("user", "turn4 what now?")]
    items = [
        _turns(1)[0],
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"location": "Paris"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny " * 200},
        *tail,
    ]
    reserve = WINDOW - await env.count(tail, [WEATHER])  # room for exactly the last two items (and the tool)
    response = await env.client.responses.create(
        model="tik", input=items, tools=[WEATHER], max_output_tokens=reserve, truncation="auto",  # type: ignore[arg-type]
    )
    assert response.status == "completed"
    # Dropping the first message alone is not enough; the call cannot go without its output: both went.
    assert [m["role"] for m in env.sent] == ["assistant", "user"]
    assert env.sent[0]["content"].startswith("turn3") and "tool_calls" not in env.sent[0]


async def test_truncation_auto_never_drops_the_newest_user_input(env: Env) -> None:
    huge = _msg("user", " ".join(f"q{j}" for j in range(3000)))
    with pytest.raises(openai.BadRequestError) as info:
        await env.client.responses.create(
            model="tik", input=[*_turns(2), huge], max_output_tokens=2048, truncation="auto",  # type: ignore[arg-type]
        )
    assert info.value.code == "context_length_exceeded"


async def test_small_requests_are_not_counted(env: Env) -> None:
    before = len(env.fake.tokenize_requests)
    response = await env.client.responses.create(model="vllm", input="hello there")
    assert response.status == "completed" and response.truncation == "disabled"
    assert len(env.fake.tokenize_requests) == before  # the hot path does not ask the tokenizer
    big = _turns(30, words=100)  # ~3000 words: might not fit in 4096 - 2048
    with pytest.raises(openai.BadRequestError) as info:
        await env.client.responses.create(model="vllm", input=big, max_output_tokens=2048)  # type: ignore[arg-type]
    assert info.value.code == "context_length_exceeded"
    assert env.fake.tokenize_requests[-1][0] == "/tokenize"
