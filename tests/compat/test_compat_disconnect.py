"""A client that goes away cancels the upstream call (DESIGN.md §7); the stored response says `cancelled`."""

from __future__ import annotations

import time

import httpx
import pytest
from compat_support import ParleyServer, wait_for
from openai import APITimeoutError, NotFoundError, OpenAI

from parley.testing.fake_upstream import FakeUpstream

# "slow" sends one chunk every 0.2 s: this input takes ~3 s to stream in full.
LONG_INPUT = "one two three four five six seven eight nine ten eleven twelve"


def test_stream_disconnect_cancels_upstream(client: OpenAI, fake: FakeUpstream) -> None:
    before = fake.disconnects.count("slow")
    started = time.monotonic()
    stream = client.responses.create(model="slow", input=LONG_INPUT, stream=True)
    response_id = ""
    for event in stream:
        if event.type == "response.created":
            response_id = event.response.id
        if event.type == "response.output_text.delta":
            break
    stream.close()
    assert response_id
    # The upstream saw its client (Parley) go away long before it would have finished on its own.
    assert wait_for(lambda: fake.disconnects.count("slow") > before, timeout=2.0)
    assert time.monotonic() - started < 2.5

    def cancelled() -> bool:
        try:
            return client.responses.retrieve(response_id).status == "cancelled"
        except NotFoundError:
            return False

    assert wait_for(cancelled, timeout=3.0)
    stored = client.responses.retrieve(response_id)
    assert stored.status == "cancelled"
    # What was generated before the disconnect is kept, closed as incomplete.
    assert stored.output and stored.output[0].type == "message" and stored.output[0].status == "incomplete"
    assert stored.output_text.startswith("echo:")
    assert stored.output_text != "echo: " + LONG_INPUT


def test_stream_disconnect_raw_http(server: ParleyServer, client: OpenAI, fake: FakeUpstream) -> None:
    before = fake.disconnects.count("slow")
    body = {"model": "slow", "input": LONG_INPUT, "stream": True}
    with httpx.Client(timeout=10) as http, http.stream("POST", server.base_url + "/responses", json=body) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("event: response.output_text.delta"):
                break
    assert wait_for(lambda: fake.disconnects.count("slow") > before, timeout=2.0)


def test_non_streaming_disconnect_cancels_upstream(server: ParleyServer, fake: FakeUpstream) -> None:
    before = fake.disconnects.count("slow")
    with OpenAI(base_url=server.base_url, api_key="sk-x", max_retries=0, timeout=0.5) as impatient:
        with pytest.raises(APITimeoutError):
            impatient.responses.create(model="slow", input=LONG_INPUT)
    # Non-streaming "slow" answers after ~3 s; Parley must hang up on the upstream as soon as we do.
    assert wait_for(lambda: fake.disconnects.count("slow") > before, timeout=2.0)
