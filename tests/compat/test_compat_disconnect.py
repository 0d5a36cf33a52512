"""A client that goes away cancels the upstream call (DESIGN.md §7); the stored response says `cancelled`.

The upstream model is `text-held`: it streams all but its last word, then holds the stream open (non-streamed: never
answers) until its client goes away. So the fake records a disconnect only if Parley hung up, and the call is still
open however late a stalled test acts; the waits' limits fail a Parley that never hangs up, they time nothing."""

from __future__ import annotations

import httpx
import pytest
from compat_support import ParleyServer, wait_for
from openai import APITimeoutError, NotFoundError, OpenAI

from parley.testing.fake_upstream import FakeUpstream

LONG_INPUT = "one two three four five six seven eight nine ten eleven twelve"
HELD = "text-held"
LIMIT_S = 60.0


def test_stream_disconnect_cancels_upstream(client: OpenAI, fake: FakeUpstream) -> None:
    before = fake.disconnects.count(HELD)
    stream = client.responses.create(model=HELD, input=LONG_INPUT, stream=True)
    response_id = ""
    for event in stream:
        if event.type == "response.created":
            response_id = event.response.id
        if event.type == "response.output_text.delta":
            break
    stream.close()
    assert response_id
    # The upstream saw its client (Parley) go away: it would have held its stream open for an hour.
    assert wait_for(lambda: fake.disconnects.count(HELD) > before, timeout=LIMIT_S)

    def cancelled() -> bool:
        try:
            return client.responses.retrieve(response_id).status == "cancelled"
        except NotFoundError:
            return False

    assert wait_for(cancelled, timeout=LIMIT_S)
    stored = client.responses.retrieve(response_id)
    assert stored.status == "cancelled"
    # What was generated before the disconnect is kept, closed as incomplete.
    assert stored.output and stored.output[0].type == "message" and stored.output[0].status == "incomplete"
    assert stored.output_text.startswith("echo:")
    assert stored.output_text != "echo: " + LONG_INPUT


def test_stream_disconnect_raw_http(server: ParleyServer, client: OpenAI, fake: FakeUpstream) -> None:
    before = fake.disconnects.count(HELD)
    body = {"model": HELD, "input": LONG_INPUT, "stream": True}
    with httpx.Client(timeout=30) as http, http.stream("POST", server.base_url + "/responses", json=body) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("event: response.output_text.delta"):
                break
    assert wait_for(lambda: fake.disconnects.count(HELD) > before, timeout=LIMIT_S)


def test_non_streaming_disconnect_cancels_upstream(server: ParleyServer, fake: FakeUpstream) -> None:
    before = fake.disconnects.count(HELD)
    with OpenAI(base_url=server.base_url, api_key="sk-x", max_retries=0, timeout=0.5) as impatient:
        with pytest.raises(APITimeoutError):
            impatient.responses.create(model=HELD, input=LONG_INPUT)
    # Non-streaming, the upstream never answers: Parley must hang up on it because we did.
    assert wait_for(lambda: fake.disconnects.count(HELD) > before, timeout=LIMIT_S)
