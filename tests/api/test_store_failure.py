"""A response whose storage fails is not reported as finished: the stream ends with `response.failed` (same
numbering, then [DONE]); a non-streamed request gets a 500 in the OpenAI shape; nothing half-written."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from parley.config import EmbeddedConfig, ModelConfig, Settings
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import InProcess, in_process

EVENTS = TypeAdapter(ResponseStreamEvent)


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[InProcess]:
    fake = FakeUpstream()
    await fake.start()
    settings = Settings(data_dir=tmp_path, embedded=EmbeddedConfig(enabled=False),
                        models=[ModelConfig(id="fake", base_url=fake.base_url, upstream_model="echo")])
    async with in_process(settings) as running:
        store = running.app.state.runtime.store

        async def broken(*args: Any, **kwargs: Any) -> None:
            raise OSError("disk full")

        store.save_response = broken
        yield running
    await fake.stop()


async def test_a_stream_whose_response_cannot_be_stored_ends_failed(app: InProcess) -> None:
    async with app.http.stream("POST", "/v1/responses", json={"model": "fake", "input": "hi", "stream": True}) as r:
        body = (await r.aread()).decode()
    assert body.endswith("data: [DONE]\n\n")
    events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {")]
    for event in events:
        EVENTS.validate_python(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["error"]["message"] == "The response could not be stored."
    assert "response.completed" not in [e["type"] for e in events]
    assert (await app.http.get(f"/v1/responses/{events[0]['response']['id']}")).status_code == 404


async def test_a_non_streamed_response_that_cannot_be_stored_is_a_500(app: InProcess) -> None:
    response = await app.http.post("/v1/responses", json={"model": "fake", "input": "hi"})
    assert response.status_code == 500
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
