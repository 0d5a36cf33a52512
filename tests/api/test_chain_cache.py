"""The chain cache and the prefix memos end to end: two Parley apps on one database, one caching chains and
translations and one not, continue the same chains; the upstream must be sent the same context by both, before
and after a deletion, across tool calls, across models of different profiles, and store:false is continued by
neither."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from parley.config import EmbeddedConfig, ModelConfig, Settings
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import in_process

WEATHER = {
    "type": "function", "name": "get_weather",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}


class Pair:
    def __init__(self, cached: AsyncOpenAI, uncached: AsyncOpenAI, fake: FakeUpstream) -> None:
        self.cached, self.uncached, self.fake = cached, uncached, fake

    async def both(self, **request: Any) -> tuple[Any, dict[str, Any]]:
        """The same request through both apps: the cached app's response and what the upstream was sent,
        asserted equal for both."""
        first = await self.cached.responses.create(**request)
        sent_cached = self.fake.requests[-1]
        await self.uncached.responses.create(**request)
        sent_uncached = self.fake.requests[-1]
        assert sent_cached["messages"] == sent_uncached["messages"]
        return first, sent_cached


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    fake = FakeUpstream()
    await fake.start()
    models = [ModelConfig(id=name, base_url=fake.base_url, upstream_model=name) for name in ("echo", "tools")]

    def settings(cache: int) -> Settings:
        return Settings(data_dir=tmp_path, models=models, embedded=EmbeddedConfig(enabled=False),
                        chain_cache_bytes=cache)

    async with in_process(settings(1024 * 1024)) as cached, in_process(settings(0)) as uncached:
        assert cached.app.state.runtime.store.chains is not None
        assert uncached.app.state.runtime.store.chains is None
        yield Pair(cached.sdk(), uncached.sdk(), fake)
    await fake.stop()


async def test_same_context_with_cache_on_and_off(pair: Pair) -> None:
    ids: list[str] = []
    previous = None
    for n in range(12):
        request: dict[str, Any] = {"model": "echo", "input": f"question {n}"}
        if previous is not None:
            request["previous_response_id"] = previous
        response, sent = await pair.both(**request)
        assert len(sent["messages"]) == 2 * n + 1
        previous = response.id
        ids.append(previous)
    # A tool call and its output in the chain.
    call, _ = await pair.both(model="tools", input="Weather in Paris?", tools=[WEATHER], previous_response_id=previous)
    function_call = call.output[0]
    assert function_call.type == "function_call"
    answered, sent = await pair.both(model="echo", previous_response_id=call.id, tools=[WEATHER], input=[
        {"type": "function_call_output", "call_id": function_call.call_id, "output": "22C"}])
    assert sent["messages"][-1]["content"] == "22C"
    # Deleted through the app that does not cache: the caching app must not keep serving it.
    await pair.uncached.responses.delete(ids[3])
    _, sent = await pair.both(model="echo", previous_response_id=answered.id, input="after the deletion")
    assert not any(m.get("content") == "question 3" for m in sent["messages"])
    assert any(m.get("content") == "question 4" for m in sent["messages"])
    assert not any(m.get("content") == "question 0" for m in sent["messages"])  # the chain stops there


async def test_store_false_is_continued_by_neither(pair: Pair) -> None:
    root, _ = await pair.both(model="echo", input="hello")
    unstored = await pair.cached.responses.create(model="echo", input="secret", previous_response_id=root.id,
                                                  store=False)
    for client in (pair.cached, pair.uncached):
        with pytest.raises(openai.NotFoundError):
            await client.responses.create(model="echo", input="next", previous_response_id=unstored.id)


@pytest.fixture
async def profiles(tmp_path: Path) -> AsyncIterator[Pair]:
    """Models with different endpoint profiles over one upstream: the translated form of the same chain differs
    (developer role, content as a string or parts, reasoning passed back, files as parts or as text)."""
    fake = FakeUpstream()
    await fake.start()
    models = [ModelConfig(id=f"{kind}-{profile}", base_url=fake.base_url, upstream_model=kind, profile=profile)
              for kind in ("echo", "tools", "reasoning") for profile in ("generic", "openai", "deepseek")]

    def settings(cache: int) -> Settings:
        return Settings(data_dir=tmp_path, models=models, embedded=EmbeddedConfig(enabled=False),
                        chain_cache_bytes=cache)

    async with in_process(settings(1024 * 1024)) as cached, in_process(settings(0)) as uncached:
        yield Pair(cached.sdk(), uncached.sdk(), fake)
    await fake.stop()


async def test_one_chain_across_models_of_different_profiles_is_sent_as_without_the_cache(profiles: Pair) -> None:
    """Each model's memo of translated contexts is its own (the translation depends on the profile), and a hit
    is only ever an equal prefix: switching models, instructions, adding files, reasoning and tool calls along
    one chain sends exactly what an app without any cache sends."""
    note = "data:text/plain;base64," + base64.b64encode(b"The meeting is on Tuesday.").decode()
    turns: list[dict[str, Any]] = [
        {"model": "echo-generic", "input": "hello", "instructions": "Be brief."},
        {"model": "reasoning-deepseek", "input": "think about it", "instructions": "Be brief."},
        {"model": "echo-openai", "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "read this"},
            {"type": "input_file", "filename": "note.txt", "file_data": note}]}]},
        {"model": "echo-generic", "input": "and now?", "instructions": "Be thorough."},
        {"model": "reasoning-deepseek", "input": "again"},
        {"model": "tools-deepseek", "input": "Weather in Paris?", "tools": [WEATHER]},
    ]
    ids: list[str] = []
    for turn in turns:
        response, _ = await profiles.both(**turn, **({"previous_response_id": ids[-1]} if ids else {}))
        ids.append(response.id)
    call = response.output[-1]
    assert call.type == "function_call"
    response, sent = await profiles.both(model="echo-deepseek", previous_response_id=ids[-1], tools=[WEATHER],
                                         input=[{"type": "function_call_output", "call_id": call.call_id,
                                                 "output": "22C"}])
    ids.append(response.id)
    assert sent["messages"][-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "22C"}
    for model in ("echo-openai", "echo-generic", "echo-openai"):
        response, sent = await profiles.both(model=model, previous_response_id=ids[-1], input="next")
        ids.append(response.id)
    assert sent["messages"][-1]["content"] == [{"type": "text", "text": "next"}]  # openai: content as parts
    assert any(part.get("type") == "file" for m in sent["messages"] if isinstance(m["content"], list)
               for part in m["content"])  # openai: the file as a file part
    # A branch from an earlier turn, on the model whose memo holds the longer chain: sent as without the cache.
    _, sent = await profiles.both(model="echo-openai", previous_response_id=ids[2], input="branch")
    assert sent["messages"][-1]["content"] == [{"type": "text", "text": "branch"}]


async def test_a_conversation_appended_through_the_other_app_is_sent_whole(pair: Pair) -> None:
    """With the conversation cache and the memos on, the items another process appended meanwhile (here the app
    without any cache) are all in what the upstream gets, in the conversation's order."""
    conversation = await pair.cached.conversations.create()
    for n in range(3):
        await pair.cached.responses.create(model="echo", input=f"cached turn {n}", conversation=conversation.id)
        await pair.uncached.conversations.items.create(conversation.id, items=[
            {"type": "message", "role": "user", "content": f"appended {n}"}])
        await pair.uncached.responses.create(model="echo", input=f"other turn {n}", conversation=conversation.id)
        await pair.cached.responses.create(model="echo", input=f"again {n}", conversation=conversation.id)
        sent = [m["content"] for m in pair.fake.requests[-1]["messages"]]
        listed = [item.content[0].text
                  async for item in pair.cached.conversations.items.list(conversation.id, order="asc")]
        assert sent == listed[:-1]  # the conversation up to this turn's answer
        assert sent[-4:] == [f"appended {n}", f"other turn {n}", f"echo: other turn {n}", f"again {n}"]
