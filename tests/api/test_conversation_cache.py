"""The conversation cache (store/conversation_cache.py) end to end, on SQLite and PostgreSQL: two Parley apps on
one database, one caching conversations (and the prefix memos) and one not, take turns on one conversation, add
and delete its items through the Conversations API and run turns at once; every turn the caching app sends
upstream must be what the app without any cache sends for the same conversation at that moment."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI
from tests.pg_support import new_database

from parley.config import EmbeddedConfig, ModelConfig, Settings
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import in_process


class Pair:
    def __init__(self, cached: AsyncOpenAI, uncached: AsyncOpenAI, fake: FakeUpstream, stats: Any) -> None:
        self.cached, self.uncached, self.fake, self.stats = cached, uncached, fake, stats

    async def truth(self, conversation: str, text: str) -> list[dict[str, Any]]:
        """What the app without a cache sends upstream for `text` on the conversation now, leaving it unchanged:
        the `probe` model's upstream refuses the call (400), so the response fails and appends nothing."""
        with pytest.raises(openai.BadRequestError):
            await self.uncached.responses.create(model="probe", input=text, conversation=conversation)
        messages: list[dict[str, Any]] = self.fake.requests[-1]["messages"]
        return messages

    async def cached_turn(self, conversation: str, text: str) -> None:
        """A turn through the caching app, sent upstream exactly as the app without a cache would send it."""
        expected = await self.truth(conversation, text)
        await self.cached.responses.create(model="echo", input=text, conversation=conversation)
        assert self.fake.requests[-1]["messages"] == expected

    async def texts(self, conversation: str) -> list[str]:
        return [item.content[0].text  # type: ignore[union-attr]
                async for item in self.uncached.conversations.items.list(conversation, order="asc")]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Pair]:
    database_url = None
    if request.param == "postgres":
        database_url = await new_database(request.getfixturevalue("postgres_server"), "parley_conv")
    fake = FakeUpstream()
    await fake.start()
    models = [ModelConfig(id="echo", base_url=fake.base_url, upstream_model="echo"),
              ModelConfig(id="probe", base_url=fake.base_url, upstream_model="error-400")]

    def settings(cache: int) -> Settings:
        return Settings(data_dir=tmp_path, database_url=database_url, models=models,
                        embedded=EmbeddedConfig(enabled=False), chain_cache_bytes=cache)

    try:
        async with in_process(settings(1024 * 1024)) as cached, in_process(settings(0)) as uncached:
            cache = cached.app.state.runtime.store.conversation_cache
            assert cache is not None and uncached.app.state.runtime.store.conversation_cache is None
            yield Pair(cached.sdk(), uncached.sdk(), fake, cache.stats)
    finally:
        await fake.stop()


def _message(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": text}


async def test_same_turns_with_cache_on_and_off(pair: Pair) -> None:
    conversation = (await pair.cached.conversations.create(items=[_message("start")])).id
    for n in range(10):
        await pair.cached_turn(conversation, f"cached turn {n}")
        # The other app: a whole turn, and items added through the Conversations API.
        await pair.uncached.responses.create(model="echo", input=f"other turn {n}", conversation=conversation)
        if n % 3 == 0:
            await pair.uncached.conversations.items.create(conversation, items=[_message(f"added {n}")])
        if n in (4, 7):  # an item deleted by the other app (an early one, then the last one)
            items = [item async for item in pair.uncached.conversations.items.list(conversation, order="asc")]
            victim = items[2 if n == 4 else -1].id
            await pair.uncached.conversations.items.delete(victim, conversation_id=conversation)
    texts = await pair.texts(conversation)
    assert len(texts) == 1 + 10 * 4 + 4 - 2 and "start" in texts
    # The caching app read only what was appended since, except its first turn and after each deletion.
    assert (pair.stats.extended, pair.stats.misses) == (7, 3)
    # The caching app also sees a deletion it made itself.
    last = (await pair.cached.conversations.items.list(conversation, order="desc", limit=1)).data[0]
    await pair.cached.conversations.items.delete(last.id, conversation_id=conversation)
    await pair.cached_turn(conversation, "after deleting the last answer")


async def test_concurrent_turns_on_both_apps(pair: Pair) -> None:
    conversation = (await pair.cached.conversations.create(items=[_message("start")])).id
    await pair.cached_turn(conversation, "first")  # cached now
    await asyncio.gather(*(
        (pair.cached if n % 2 else pair.uncached).responses.create(model="echo", input=f"at once {n}",
                                                                   conversation=conversation)
        for n in range(8)
    ), pair.uncached.conversations.items.create(conversation, items=[_message("added meanwhile")]))
    texts = await pair.texts(conversation)
    assert len(texts) == 3 + 8 * 2 + 1
    for n in range(8):  # each turn's input and answer together, as the append rule says
        at = texts.index(f"at once {n}")
        assert texts[at + 1] == f"echo: at once {n}"
    await pair.cached_turn(conversation, "after the concurrent turns")


async def test_deleted_conversation(pair: Pair) -> None:
    conversation = (await pair.cached.conversations.create(items=[_message("start")])).id
    await pair.cached_turn(conversation, "hello")
    await pair.cached_turn(conversation, "again")
    await pair.uncached.conversations.delete(conversation)
    for client in (pair.cached, pair.uncached):
        with pytest.raises(openai.NotFoundError) as err:
            await client.responses.create(model="echo", input="anyone?", conversation=conversation)
        assert err.value.body["param"] == "conversation"  # type: ignore[index]
