"""The chain cache end to end: two Parley apps on one database, one caching chains and one not, continue the
same chains; the upstream must be sent the same context by both, before and after a deletion, across tool
calls, and store:false is continued by neither."""

from __future__ import annotations

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
