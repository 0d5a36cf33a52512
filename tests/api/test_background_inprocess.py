"""Background responses in-process: a run on a conversation joins it when it completes; a queued run's
status and retrieval while it waits; validation happens before anything is queued."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from parley.config import BackgroundConfig, EmbeddedConfig, ModelConfig, Settings
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import in_process


@pytest.fixture(scope="module")
async def client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[AsyncOpenAI]:
    fake = FakeUpstream()
    await fake.start()
    data_dir: Path = tmp_path_factory.mktemp("bg-inprocess")
    models = [ModelConfig(id=m, base_url=fake.base_url, upstream_model=m) for m in ("echo", "slow")]
    settings = Settings(data_dir=data_dir, models=models, embedded=EmbeddedConfig(enabled=False),
                        background=BackgroundConfig(max_concurrent=1, poll_s=0.05))
    async with in_process(settings) as parley:
        yield parley.sdk()
    await fake.stop()


async def _until(client: AsyncOpenAI, response_id: str, statuses: set[str]) -> Any:
    for _ in range(2400):
        current = await client.responses.retrieve(response_id)
        if current.status in statuses:
            return current
        await asyncio.sleep(0.025)
    raise AssertionError(f"{response_id} never reached {statuses}")


async def test_background_run_joins_its_conversation(client: AsyncOpenAI) -> None:
    conversation = await client.conversations.create(items=[{"role": "user", "content": "earlier turn"}])
    created = await client.responses.create(model="echo", input="hello later", background=True,
                                            conversation=conversation.id)
    assert created.status == "queued" and created.conversation is not None
    done = await _until(client, created.id, {"completed"})
    assert done.output_text == "echo: hello later"
    items = [item async for item in client.conversations.items.list(conversation.id, order="asc")]
    texts = [item.content[0].text for item in items]  # type: ignore[union-attr]
    assert texts == ["earlier turn", "hello later", "echo: hello later"]


async def test_queued_run_is_visible_and_ordered(client: AsyncOpenAI) -> None:
    slow = await client.responses.create(model="slow", input="a b c d e", background=True)
    waiting = await client.responses.create(model="echo", input="second", background=True)
    assert (await client.responses.retrieve(waiting.id)).status == "queued"  # one slot, taken by `slow`
    items = await client.responses.input_items.list(waiting.id)
    assert [i.content[0].text for i in items.data] == ["second"]  # type: ignore[union-attr]
    assert (await _until(client, slow.id, {"completed"})).output_text == "echo: a b c d e"
    assert (await _until(client, waiting.id, {"completed"})).output_text == "echo: second"


async def test_invalid_background_request_is_not_queued(client: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.responses.create(model="echo", input="x", background=True, temperature=9)
    assert info.value.param == "temperature"
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="echo", input="x", background=True, previous_response_id="resp_none")
