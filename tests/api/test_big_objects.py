"""Big objects end to end (issue 14), against fake upstreams over real HTTP: a response with 1 MB of output text, a
conversation of 10,000 items, many streams at once. Everything must come back whole, in order and to the client
that asked. (bench/big.py measures their time and Parley's memory; nothing here is timed.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from parley.config import EmbeddedConfig, ModelConfig, Settings
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.faulty_upstream import CHUNK_CHARS, FaultyUpstream
from parley.testing.in_process import InProcess, in_process

MEGABYTE = 1_000_000  # what the faulty upstream's `huge-1mb` sends


@dataclass
class Big:
    parley: InProcess
    fake: FakeUpstream


@pytest.fixture
async def big(tmp_path: Path) -> AsyncIterator[Big]:
    fake, faulty = FakeUpstream(), FaultyUpstream()
    await fake.start()
    await faulty.start()
    models = [ModelConfig(id="big", base_url=faulty.base_url, upstream_model="huge-1mb"),
              ModelConfig(id="echo", base_url=fake.base_url, upstream_model="echo", context_window=10_000_000)]
    settings = Settings(data_dir=tmp_path, models=models, embedded=EmbeddedConfig(enabled=False))
    try:
        async with in_process(settings) as parley:
            yield Big(parley, fake)
    finally:
        await faulty.stop()
        await fake.stop()


def _text(response: dict[str, Any]) -> str:
    return "".join(part["text"] for item in response["output"] if item["type"] == "message"
                   for part in item["content"])


async def _post(parley: InProcess, path: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = await parley.http.post(path, json=body, timeout=120)
    assert resp.status_code == 200, resp.text[:500]
    answer: dict[str, Any] = resp.json()
    return answer


async def _stream(parley: InProcess, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of a streamed create, checked to end with `data: [DONE]`."""
    resp = await parley.http.post("/v1/responses", json={**body, "stream": True}, timeout=120)
    assert resp.status_code == 200, resp.text[:500]
    payloads = [line[6:] for line in resp.content.split(b"\n") if line.startswith(b"data: ")]
    assert payloads[-1] == b"[DONE]"
    return [orjson.loads(p) for p in payloads[:-1]]


async def test_a_megabyte_of_output_is_whole_streamed_stored_and_continued(big: Big) -> None:
    created = await _post(big.parley, "/v1/responses", {"model": "big", "input": "write a lot"})
    text = _text(created)
    assert created["status"] == "completed" and len(text) == MEGABYTE
    assert text.startswith("lorem ipsum") and text == text[:CHUNK_CHARS] * (MEGABYTE // CHUNK_CHARS)

    events = await _stream(big.parley, {"model": "big", "input": "write a lot"})
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert events[-1]["type"] == "response.completed"
    assert deltas == text == _text(events[-1]["response"])

    stored = (await big.parley.http.get(f"/v1/responses/{created['id']}")).json()
    assert _text(stored) == text
    # Continued on another model: the upstream gets the whole megabyte back as the assistant's turn.
    await _post(big.parley, "/v1/responses", {"model": "echo", "input": "and now?",
                                              "previous_response_id": created["id"]})
    sent = big.fake.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[1]["content"] == text


def _item(n: int) -> dict[str, Any]:
    return {"type": "message", "role": "user" if n % 2 == 0 else "assistant", "content": f"item {n}"}


async def test_a_conversation_of_ten_thousand_items_is_listed_whole_and_continued(big: Big) -> None:
    items = 10_000
    conversation = (await _post(big.parley, "/v1/conversations", {}))["id"]
    for first in range(0, items, 20):  # the API's limit per call
        await _post(big.parley, f"/v1/conversations/{conversation}/items",
                    {"items": [_item(n) for n in range(first, first + 20)]})

    texts: list[str] = []
    ids: set[str] = set()
    after = None
    while True:
        query = "limit=100&order=asc" + (f"&after={after}" if after else "")
        page = (await big.parley.http.get(f"/v1/conversations/{conversation}/items?{query}")).json()
        texts += [item["content"][0]["text"] for item in page["data"]]
        ids |= {item["id"] for item in page["data"]}
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert texts == [f"item {n}" for n in range(items)] and len(ids) == items

    answered = await _post(big.parley, "/v1/responses", {"model": "echo", "input": "what next?",
                                                          "conversation": conversation})
    assert _text(answered) == "echo: what next?"
    sent = big.fake.requests[-1]["messages"]
    assert [m["content"] for m in sent] == [f"item {n}" for n in range(items)] + ["what next?"]
    newest = (await big.parley.http.get(f"/v1/conversations/{conversation}/items?limit=3&order=desc")).json()
    assert [item["content"][0]["text"] for item in newest["data"]] == ["echo: what next?", "what next?",
                                                                       f"item {items - 1}"]


async def test_many_concurrent_streams_each_get_their_own_answer_and_are_stored(big: Big) -> None:
    streams = 300

    async def one(n: int) -> tuple[str, str]:
        events = await _stream(big.parley, {"model": "echo", "input": f"stream {n}"})
        assert events[-1]["type"] == "response.completed"
        deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        return events[-1]["response"]["id"], deltas

    results = await asyncio.gather(*(one(n) for n in range(streams)))
    assert [text for _, text in results] == [f"echo: stream {n}" for n in range(streams)]
    assert len({response_id for response_id, _ in results}) == streams
    for n, (response_id, _) in enumerate(results):
        stored = (await big.parley.http.get(f"/v1/responses/{response_id}")).json()
        assert stored["status"] == "completed" and _text(stored) == f"echo: stream {n}"
