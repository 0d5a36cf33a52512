"""The `openai` SDK's `responses.retrieve` on a foreground response while it streams, against a `parley serve`
process: `in_progress` with the text so far, then the completed response once it has ended; another project's key
gets a 404 meanwhile. The upstream's reply waits half-way until the test resumes it (parley.testing.paused_upstream):
the deltas the client has read say where the run is, no sleeps."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from compat_support import KeyedServer, check_response, keyed_server, model_toml
from openai import OpenAI

from parley.testing.paused_upstream import PausingUpstream, ThreadedPausingUpstream

INPUT = "one two three four five six"  # "echo: one two three four five six": the first 3 words, then the pause


@pytest.fixture(scope="module")
def pausing() -> Iterator[PausingUpstream]:
    with ThreadedPausingUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def live_server(pausing: PausingUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyedServer]:
    config = model_toml("pause", pausing.base_url, "pause") + "[embedded]\nenabled = false\n"
    with keyed_server(tmp_path_factory.mktemp("parley-live"), config) as server:
        yield server


def test_retrieve_while_streaming(live_server: KeyedServer, pausing: PausingUpstream) -> None:
    client = OpenAI(base_url=live_server.server.base_url, api_key=live_server.key_a, max_retries=0)
    other = OpenAI(base_url=live_server.server.base_url, api_key=live_server.key_b, max_retries=0)
    try:
        with client.responses.stream(model="pause", input=INPUT) as stream:
            response_id, seen = "", ""
            for event in stream:
                if event.type == "response.created":
                    response_id = event.response.id
                if event.type == "response.output_text.delta":
                    seen += event.delta
                    if seen == "echo: one two ":
                        break  # the upstream waits here until resumed

            live = client.responses.retrieve(response_id)
            assert live.status == "in_progress" and live.usage is None and live.id == response_id
            [message] = live.output
            assert message.type == "message" and message.status == "in_progress"
            assert live.output_text == seen
            raw = client.responses.with_raw_response.retrieve(response_id).http_response.json()
            assert check_response(raw).status == "in_progress"
            with pytest.raises(openai.NotFoundError):
                other.responses.retrieve(response_id)

            pausing.resume()
            final = stream.get_final_response()
    finally:
        pausing.resume()
    assert final.output_text == "echo: " + INPUT
    stored = client.responses.retrieve(response_id)
    assert stored.status == "completed" and stored.output_text == final.output_text
    assert stored.usage is not None and stored.usage.total_tokens > 0
    assert [item.id for item in stored.output] == [message.id]
    assert final.output[0].type == "message" and final.output[0].id == message.id
