"""The native upstream kinds through a real `parley serve` configured by TOML (provider, profile, quirks,
hosted_tools), driven with the official `openai` SDK: text, a stream, a tool round trip with thinking, and a
hosted web search, on the Responses, Anthropic and Gemini fakes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from compat_support import ParleyServer, check_response, model_toml
from openai import OpenAI

from parley.testing.fake_anthropic import FakeAnthropic
from parley.testing.fake_gemini import FakeGemini
from parley.testing.fake_responses_upstream import FakeResponsesUpstream
from parley.testing.fake_server import FakeServer, Threaded

WEATHER = {"type": "function", "name": "get_weather",
           "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}
KINDS = ("openai_responses", "anthropic", "gemini")


@dataclass
class Native:
    client: OpenAI
    fakes: dict[str, FakeServer]


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Native]:
    runners = {"openai_responses": Threaded(FakeResponsesUpstream), "anthropic": Threaded(FakeAnthropic),
               "gemini": Threaded(FakeGemini)}
    fakes: dict[str, FakeServer] = {kind: runner.__enter__() for kind, runner in runners.items()}
    try:
        profiles = {"openai_responses": "openai", "anthropic": "anthropic", "gemini": "gemini"}
        config = ""
        for kind, fake in fakes.items():
            for behaviour in ("echo", "reasoning"):
                config += model_toml(f"{kind}-{behaviour}", fake.base_url, behaviour,  # type: ignore[attr-defined]
                                     provider=kind, profile=profiles[kind], api_key="sk-native-kinds")
        config += model_toml("anthropic-small", fakes["anthropic"].base_url, "echo",  # type: ignore[attr-defined]
                             provider="anthropic") + "quirks = { default_max_tokens = 256 }\n"
        config += model_toml("hosted-search", fakes["openai_responses"].base_url, "search",  # type: ignore[attr-defined]
                             provider="openai_responses", hosted_tools=["web_search"])
        server = ParleyServer(tmp_path_factory.mktemp("parley-native"), config + "[embedded]\nenabled = false\n")
        server.start()
        try:
            with OpenAI(base_url=server.base_url, api_key="sk-local", max_retries=0, timeout=30.0) as client:
                yield Native(client, fakes)
        finally:
            server.stop()
    finally:
        for runner in runners.values():
            runner.__exit__(None, None, None)


@pytest.mark.parametrize("kind", KINDS)
def test_text_and_stream(native: Native, kind: str) -> None:
    raw = native.client.responses.with_raw_response.create(model=f"{kind}-echo", input="hello world")
    body = raw.http_response.json()
    check_response(body)
    assert raw.parse().output_text == "echo: hello world"
    with native.client.responses.stream(model=f"{kind}-echo", input="hello world") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.output_text == "echo: hello world"


@pytest.mark.parametrize("kind", KINDS)
def test_tool_round_trip_with_thinking(native: Native, kind: str) -> None:
    model = f"{kind}-reasoning"
    first = native.client.responses.create(model=model, input="weather?", tools=[WEATHER],  # type: ignore[list-item]
                                           reasoning={"effort": "low"})
    calls = [item for item in first.output if item.type == "function_call"]
    assert first.output[0].type == "reasoning" and calls
    second = native.client.responses.create(
        model=model, previous_response_id=first.id, tools=[WEATHER],  # type: ignore[list-item]
        reasoning={"effort": "low"},
        input=[{"type": "function_call_output", "call_id": c.call_id, "output": "sunny"} for c in calls])
    assert second.output_text == "done: sunny"  # the fake refuses the turn unless its state came back


def test_quirks_and_hosted_tools_from_toml(native: Native) -> None:
    native.client.responses.create(model="anthropic-small", input="hi")
    assert native.fakes["anthropic"].requests[-1]["max_tokens"] == 256
    found = native.client.responses.create(model="hosted-search", input="news", tools=[{"type": "web_search"}])
    assert [item.type for item in found.output] == ["web_search_call", "message"]
    assert found.output_text == "searched: news"
    assert json.dumps(native.fakes["openai_responses"].requests[-1]["tools"]) == '[{"type": "web_search"}]'
