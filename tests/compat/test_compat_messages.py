"""The Anthropic Messages API of a real `parley serve` through the official `anthropic` SDK (sync client, real
sockets): create, stream and count_tokens, every object and event strictly validated against the SDK's types; on
the fake upstream, and on the embedded model (slow)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import anthropic
import httpx
import pytest
from compat_support import ParleyServer

from parley.testing.anthropic_wire import check_count, check_error, check_message, check_stream, sse_events


@pytest.fixture
def client(server: ParleyServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.root, api_key="sk-any", max_retries=0)


def test_create_stream_and_count_tokens(server: ParleyServer, client: anthropic.Anthropic) -> None:
    raw = client.messages.with_raw_response.create(model="echo", max_tokens=64,
                                                   messages=[{"role": "user", "content": "over the wire"}])
    assert raw.http_response.headers["request-id"].startswith("req_")
    check_message(raw.http_response.json())
    assert raw.parse().content[0].type == "text"

    with client.messages.stream(model="reasoning", max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024},
                                messages=[{"role": "user", "content": "think, then answer"}]) as stream:
        events = [event.to_dict() for event in stream]
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"] and final.stop_reason == "end_turn"
    assert final.content[0].type == "thinking" and final.content[0].signature.startswith("prl1.")
    assert events[0]["type"] == "message_start"

    body = {"model": "tools", "max_tokens": 64, "stream": True, "messages": [{"role": "user", "content": "weather"}],
            "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}]}
    with httpx.Client(timeout=30) as http:
        resp = http.post(server.root + "/v1/messages?beta=true", json=body, headers={"x-api-key": "sk-any"})
    check_stream(sse_events(resp.content))

    counted = client.messages.count_tokens(model="echo", messages=[{"role": "user", "content": "count me"}])
    assert counted.input_tokens > 0
    check_count(counted.to_dict())


def test_errors_in_anthropics_shape(server: ParleyServer, client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(model="error-429", max_tokens=16, messages=[{"role": "user", "content": "x"}])
    with httpx.Client(timeout=30) as http:
        resp = http.post(server.root + "/v1/messages", json={"model": "echo", "messages": []})
    assert resp.status_code == 400
    check_error(resp.json(), 400)


EMBEDDED = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[anthropic.Anthropic]:
    server = ParleyServer(tmp_path_factory.mktemp("messages-embedded"),
                          f'[embedded]\nenabled = true\nmodel_id = "{EMBEDDED}"\nthreads = 2\n')
    server.start()
    try:
        client = anthropic.Anthropic(base_url=server.root, api_key="sk-local", max_retries=0, timeout=120)
        deadline = time.monotonic() + 180
        while True:  # the child process loads the model after start-up (a 529 overloaded_error until then)
            try:
                client.messages.create(model=EMBEDDED, max_tokens=4, messages=[{"role": "user", "content": "Hi"}])
                break
            except (anthropic.APIStatusError, anthropic.APIConnectionError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"embedded model never became ready:\n{server.log()}") from None
                time.sleep(0.5)
        yield client
    finally:
        server.stop()


@pytest.mark.slow
def test_the_embedded_model(embedded: anthropic.Anthropic) -> None:
    raw = embedded.messages.with_raw_response.create(
        model=EMBEDDED, max_tokens=16, system="Answer in one word.",
        messages=[{"role": "user", "content": "What is the capital of France?"}])
    message = check_message(raw.http_response.json())
    assert message.content and message.content[0].type == "text" and message.usage.output_tokens > 0
    with embedded.messages.stream(model=EMBEDDED, max_tokens=8,
                                  messages=[{"role": "user", "content": "Count: one, two,"}]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason in ("end_turn", "max_tokens") and final.usage.output_tokens <= 8
