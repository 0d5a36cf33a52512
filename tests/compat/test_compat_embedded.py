"""The embedded local model (SmolLM2-135M via a llama.cpp child process) through the SDK: one round trip, one stream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from compat_support import ParleyServer, check_events, check_response, fold_text, post_stream
from openai import APIConnectionError, APIStatusError, OpenAI
from pydantic import BaseModel

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ParleyServer]:
    config = f'[embedded]\nenabled = true\nmodel_id = "{MODEL}"\nthreads = 2\n'
    server = ParleyServer(tmp_path_factory.mktemp("parley-embedded"), config)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def embedded_client(embedded_server: ParleyServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=embedded_server.base_url, api_key="sk-local", max_retries=0, timeout=120) as sdk:
        assert [m.id for m in sdk.models.list()] == [MODEL]
        # The child process loads the model after start-up: poll until a response comes back.
        deadline = time.monotonic() + 180
        while True:
            try:
                sdk.responses.create(model=MODEL, input="Hi", max_output_tokens=16)
                break
            except (APIStatusError, APIConnectionError):
                if time.monotonic() > deadline:
                    raise AssertionError(f"embedded model never became ready:\n{embedded_server.log()}") from None
                time.sleep(0.5)
        yield sdk


def test_embedded_round_trip(embedded_client: OpenAI) -> None:
    raw = embedded_client.responses.with_raw_response.create(
        model=MODEL, input="What is the capital of France? Answer in one word.", max_output_tokens=24,
        temperature=0,
    )
    check_response(raw.http_response.json())
    response = raw.parse()
    assert response.status in ("completed", "incomplete")
    assert response.model == MODEL
    assert response.output_text.strip()
    assert response.usage is not None and response.usage.output_tokens > 0
    retrieved = embedded_client.responses.retrieve(response.id)
    assert retrieved.output_text == response.output_text


def test_embedded_stream(embedded_server: ParleyServer, embedded_client: OpenAI) -> None:
    body = {"model": MODEL, "input": "Say hello to the world.", "max_output_tokens": 24}
    events = post_stream(embedded_server.base_url, body).events()
    check_events(events)
    types = [e["type"] for e in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert types[-1] in ("response.completed", "response.incomplete")
    final = events[-1]["response"]
    text = final["output"][-1]["content"][0]["text"]
    assert text.strip() and fold_text(events) == text
    assert types.count("response.output_text.delta") >= 2

    # The SDK helper: a final response only exists for a `completed` ending (not for `incomplete`).
    with embedded_client.responses.stream(model=MODEL, input="Name a color.", max_output_tokens=64) as stream:
        sdk_events = list(stream)
        deltas = "".join(e.delta for e in sdk_events if e.type == "response.output_text.delta")
        if sdk_events[-1].type == "response.completed":
            assert stream.get_final_response().output_text == deltas
    assert deltas.strip()
    assert sdk_events[-1].type in ("response.completed", "response.incomplete")


class City(BaseModel):
    name: str
    country: str
    population: int


def test_embedded_structured_output_under_grammar(embedded_client: OpenAI) -> None:
    # A 135M model cannot be trusted to write JSON; llama.cpp's grammar from the schema makes it.
    parsed = embedded_client.responses.parse(
        model=MODEL, input="Describe Paris as a city.", text_format=City, max_output_tokens=200, temperature=0,
    )
    assert parsed.status == "completed"
    city = parsed.output_parsed
    assert isinstance(city, City) and city.name
    assert json.loads(parsed.output_text) == city.model_dump()


def test_embedded_forced_tool_call_under_grammar(embedded_client: OpenAI) -> None:
    weather = {"type": "function", "name": "get_weather", "description": "Weather for a city",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                              "required": ["city"], "additionalProperties": False}, "strict": True}
    response = embedded_client.responses.create(
        model=MODEL, input="What is the weather in Rome?", tools=[weather],  # type: ignore[list-item]
        tool_choice="required", max_output_tokens=100, temperature=0,
    )
    call = response.output[-1]
    assert call.type == "function_call" and call.name == "get_weather"
    assert isinstance(json.loads(call.arguments)["city"], str)
