"""The same semantic test matrix on every upstream kind, driven through Parley with the official `openai` SDK.

Each kind (Chat Completions, native Responses, Anthropic Messages, Gemini) runs against its fake upstream over
real HTTP; Parley runs in-process (the real app, the SDK over httpx's ASGI transport). Every emitted Response
and stream event is validated against `openai.types.responses`, and no upstream's own state (`upstream`)
ever reaches a client. Cases: text, stream, parallel and forced tools, structured output, reasoning round trips
(stored, and `store: false` with `encrypted_content`), images, PDFs, `max_output_tokens` -> incomplete, errors.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from parley.config import ModelConfig, Settings
from parley.testing.documents import make_pdf
from parley.testing.fake_anthropic import FakeAnthropic
from parley.testing.fake_gemini import FakeGemini
from parley.testing.fake_responses_upstream import FakeResponsesUpstream
from parley.testing.fake_server import FakeServer
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import InProcess, in_process

KINDS = ("chat_completions", "openai_responses", "anthropic", "gemini")
STATEFUL = frozenset({"openai_responses", "anthropic", "gemini"})  # their upstream state must come back
BEHAVIOURS = ("echo", "reasoning", "tools", "json-valid", "json-invalid", "length", "error-429", "drop")
PROFILES = {"chat_completions": "generic", "openai_responses": "openai", "anthropic": "anthropic", "gemini": "gemini"}
EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather somewhere",
           "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}
LOOKUP = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(24)).decode()


@dataclass
class Matrix:
    parley: InProcess
    sdk: AsyncOpenAI
    fakes: dict[str, FakeServer | FakeUpstream]


@pytest.fixture(scope="module")
async def matrix(fake_chat: FakeUpstream, fake_responses: FakeResponsesUpstream, fake_anthropic: FakeAnthropic,
                 fake_gemini: FakeGemini, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Matrix]:
    fakes: dict[str, FakeServer | FakeUpstream] = {
        "chat_completions": fake_chat, "openai_responses": fake_responses, "anthropic": fake_anthropic,
        "gemini": fake_gemini}
    models = [ModelConfig(id=f"{kind}-{behaviour}", provider=kind, base_url=fake.base_url,  # type: ignore[arg-type]
                          upstream_model=behaviour, api_key="sk-matrix-upstream-key", profile=PROFILES[kind],
                          read_timeout_s=5.0)
              for kind, fake in fakes.items() for behaviour in BEHAVIOURS]
    models.append(ModelConfig(id="hosted-search", provider="openai_responses", base_url=fake_responses.base_url,
                              upstream_model="search", hosted_tools=["web_search"]))
    models.append(ModelConfig(id="hosted-mcp", provider="openai_responses", base_url=fake_responses.base_url,
                              upstream_model="echo", hosted_tools=["mcp"]))
    models.append(ModelConfig(id="hosted-mcp-call", provider="openai_responses", base_url=fake_responses.base_url,
                              upstream_model="mcp-call", hosted_tools=["mcp"]))
    settings = Settings(data_dir=tmp_path_factory.mktemp("matrix"), models=models, embedded={"enabled": False})
    async with in_process(settings) as parley:
        yield Matrix(parley, parley.sdk(), fakes)


def _no_upstream_state(value: Any) -> None:
    assert '"upstream"' not in json.dumps(value), "an upstream's own state reached the client"


async def _create(sdk: AsyncOpenAI, **params: Any) -> Response:
    raw = await sdk.responses.with_raw_response.create(**params)
    body = raw.http_response.json()
    _no_upstream_state(body)
    Response.model_validate(body)
    response: Response = raw.parse()
    return response


async def _stream(sdk: AsyncOpenAI, **params: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with sdk.responses.with_streaming_response.create(stream=True, **params) as raw:
        async for line in raw.http_response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    for event in events:
        EVENT.validate_python(event)
    _no_upstream_state(events)
    numbers = [e["sequence_number"] for e in events]
    assert numbers[0] == 0 and all(a < b for a, b in itertools.pairwise(numbers))
    return events


def _calls(response: Response) -> list[Any]:
    return [item for item in response.output if item.type == "function_call"]


@pytest.mark.parametrize("kind", KINDS)
async def test_text(matrix: Matrix, kind: str) -> None:
    response = await _create(matrix.sdk, model=f"{kind}-echo", input="hello world", instructions="Be brief.")
    assert response.status == "completed" and response.output_text == "echo: hello world"
    assert response.usage is not None and response.usage.output_tokens > 0


@pytest.mark.parametrize("kind", KINDS)
async def test_stream(matrix: Matrix, kind: str) -> None:
    events = await _stream(matrix.sdk, model=f"{kind}-echo", input="hello world")
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == "echo: hello world" and events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == deltas


@pytest.mark.parametrize("kind", KINDS)
async def test_parallel_tool_calls_and_their_results(matrix: Matrix, kind: str) -> None:
    first = await _create(matrix.sdk, model=f"{kind}-tools", input="weather twice?", tools=[WEATHER])
    calls = _calls(first)
    assert len(calls) == 2 and len({c.call_id for c in calls}) == 2
    assert all(json.loads(c.arguments) == {"location": "Paris"} and c.name == "get_weather" for c in calls)
    outputs = [{"type": "function_call_output", "call_id": c.call_id, "output": "sunny"} for c in calls]
    second = await _create(matrix.sdk, model=f"{kind}-tools", previous_response_id=first.id, input=outputs,
                           tools=[WEATHER])
    assert second.output_text == "done: sunny"


@pytest.mark.parametrize("kind", KINDS)
async def test_forced_tool(matrix: Matrix, kind: str) -> None:
    events = await _stream(matrix.sdk, model=f"{kind}-tools", input="look it up", tools=[WEATHER, LOOKUP],
                           tool_choice={"type": "function", "name": "lookup"}, parallel_tool_calls=False)
    done = events[-1]["response"]
    assert events[-1]["type"] == "response.completed"
    assert [item["name"] for item in done["output"] if item["type"] == "function_call"] == ["lookup"]


@pytest.mark.parametrize("kind", KINDS)
async def test_structured_output(matrix: Matrix, kind: str) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    fmt = {"format": {"type": "json_schema", "name": "person", "schema": schema, "strict": True}}
    valid = await _create(matrix.sdk, model=f"{kind}-json-valid", input="who?", text=fmt)
    assert json.loads(valid.output_text) == {"name": "Ada", "age": 36} and valid.output[-1].type == "message"
    with pytest.raises(openai.APIStatusError) as info:  # never returned invalid as a success
        await _create(matrix.sdk, model=f"{kind}-json-invalid", input="who?", text=fmt)
    assert info.value.status_code == 502 and "JSON schema" in info.value.message
    events = await _stream(matrix.sdk, model=f"{kind}-json-invalid", input="who?", text=fmt)
    assert events[-1]["type"] == "response.failed"


def _state_came_back(kind: str, fake: FakeServer | FakeUpstream) -> None:
    """The native fakes refuse a turn whose state did not come back; here it is seen in the request too."""
    if kind in STATEFUL:
        sent = json.dumps(fake.requests[-1])
        assert {"openai_responses": "encrypted_content", "anthropic": '"signature"',
                "gemini": "thoughtSignature"}[kind] in sent


@pytest.mark.parametrize("kind", KINDS)
async def test_reasoning_round_trip_stored(matrix: Matrix, kind: str) -> None:
    model = f"{kind}-reasoning"
    first = await _create(matrix.sdk, model=model, input="weather?", tools=[WEATHER],
                          reasoning={"effort": "low", "summary": "auto"})
    assert first.output[0].type == "reasoning"
    calls = _calls(first)
    if not calls:  # the Chat Completions fake answers a reasoning model in text
        follow = await _create(matrix.sdk, model=model, previous_response_id=first.id, input="again",
                               reasoning={"effort": "low"})
        assert follow.output_text == "echo: again"
        return
    outputs = [{"type": "function_call_output", "call_id": c.call_id, "output": "sunny"} for c in calls]
    second = await _create(matrix.sdk, model=model, previous_response_id=first.id, input=outputs, tools=[WEATHER],
                           reasoning={"effort": "low"})
    assert second.output_text == "done: sunny"
    _state_came_back(kind, matrix.fakes[kind])


@pytest.mark.parametrize("kind", KINDS)
async def test_reasoning_round_trip_stateless(matrix: Matrix, kind: str) -> None:
    """store: false, as Codex: the client resends everything; the upstream's state travels sealed inside
    Parley's encrypted_content and reaches the upstream unchanged."""
    model, params = f"{kind}-reasoning", {"store": False, "include": ["reasoning.encrypted_content"],
                                          "reasoning": {"effort": "low"}, "tools": [WEATHER]}
    question = {"role": "user", "content": "weather?"}
    first = await _create(matrix.sdk, model=model, input=[question], **params)
    reasoning = [item for item in first.output if item.type == "reasoning"]
    assert reasoning and all((item.encrypted_content or "").startswith("prl1.") for item in reasoning)
    resent = [item.model_dump(exclude_none=True) for item in first.output]
    calls = _calls(first)
    outputs = [{"type": "function_call_output", "call_id": c.call_id, "output": "sunny"} for c in calls]
    second = await _create(matrix.sdk, model=model, input=[question, *resent, *outputs], **params)
    assert second.output_text == ("done: sunny" if calls else "echo: weather?")
    if calls:
        _state_came_back(kind, matrix.fakes[kind])
    tampered = [{**item, "encrypted_content": "prl1.AAAA"} if item["type"] == "reasoning" else item
                for item in resent]
    with pytest.raises(openai.BadRequestError):
        await _create(matrix.sdk, model=model, input=[question, *tampered, *outputs], **params)


@pytest.mark.parametrize("kind", KINDS)
async def test_images(matrix: Matrix, kind: str) -> None:
    content = [{"type": "input_text", "text": "what is this"},
               {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"},
               {"type": "input_image", "image_url": "https://example.com/cat.jpg"}]
    response = await _create(matrix.sdk, model=f"{kind}-echo", input=[{"role": "user", "content": content}])
    assert response.output_text.startswith("echo: what is this")
    sent = json.dumps(matrix.fakes[kind].requests[-1])
    assert PNG in sent and "https://example.com/cat.jpg" in sent


@pytest.mark.parametrize("kind", KINDS)
async def test_pdf(matrix: Matrix, kind: str) -> None:
    pdf = base64.b64encode(make_pdf([["The quarterly report says revenue grew."]])).decode()
    content = [{"type": "input_text", "text": "summarise"},
               {"type": "input_file", "filename": "report.pdf", "file_data": f"data:application/pdf;base64,{pdf}"}]
    response = await _create(matrix.sdk, model=f"{kind}-echo", input=[{"role": "user", "content": content}])
    assert response.output_text.startswith("echo: summarise")
    sent = matrix.fakes[kind].requests[-1]
    form = {  # how each upstream got the file: its text (a generic Chat Completions server), or the PDF itself
        "chat_completions": lambda: "revenue grew" in json.dumps(sent),
        "openai_responses": lambda: sent["input"][0]["content"][1]["file_data"].endswith(pdf),
        "anthropic": lambda: sent["messages"][0]["content"][1]["source"]["data"] == pdf,
        "gemini": lambda: sent["contents"][0]["parts"][1]["inlineData"] == {"mimeType": "application/pdf",
                                                                            "data": pdf},
    }
    assert form[kind]()


@pytest.mark.parametrize("kind", KINDS)
async def test_max_output_tokens_is_incomplete(matrix: Matrix, kind: str) -> None:
    response = await _create(matrix.sdk, model=f"{kind}-length", input="go on", max_output_tokens=16)
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    sent = matrix.fakes[kind].requests[-1]
    limit = {"chat_completions": lambda: sent["max_tokens"], "openai_responses": lambda: sent["max_output_tokens"],
             "anthropic": lambda: sent["max_tokens"], "gemini": lambda: sent["generationConfig"]["maxOutputTokens"]}
    assert limit[kind]() == 16


@pytest.mark.parametrize("kind", KINDS)
async def test_upstream_failures(matrix: Matrix, kind: str) -> None:
    with pytest.raises(openai.RateLimitError) as limited:
        await _create(matrix.sdk, model=f"{kind}-error-429", input="x")
    assert limited.value.response.headers.get("retry-after") == "7"
    assert "sk-matrix-upstream-key" not in limited.value.response.text
    with pytest.raises(openai.APIStatusError) as dropped:
        await _create(matrix.sdk, model=f"{kind}-drop", input="hello world")
    assert dropped.value.status_code == 502
    events = await _stream(matrix.sdk, model=f"{kind}-drop", input="hello world")
    assert events[-1]["type"] == "response.failed"


async def test_hosted_web_search_items_pass_through(matrix: Matrix) -> None:
    """A Responses upstream that runs web_search itself (hosted_tools): its item comes through with Parley's id and
    its own events, its sources as include[] says, and goes back to it unchanged on the next turn."""
    fake = matrix.fakes["openai_responses"]
    events = await _stream(matrix.sdk, model="hosted-search", input="news", tools=[{"type": "web_search"}],
                           include=["web_search_call.action.sources"])
    kinds = [e["type"] for e in events]
    assert "response.web_search_call.searching" in kinds
    done = events[-1]["response"]
    search = done["output"][0]
    assert search["type"] == "web_search_call" and search["id"] != "ws_fake"
    assert search["action"]["sources"] == [{"type": "url", "url": "https://example.com/"}]
    assert done["output"][1]["content"][0]["text"] == "searched: news"
    assert fake.requests[-1]["tools"] == [{"type": "web_search"}]
    hidden = await _create(matrix.sdk, model="hosted-search", input="news", tools=[{"type": "web_search"}])
    assert hidden.output[0].type == "web_search_call" and hidden.output[0].action.sources is None  # type: ignore[union-attr]
    await _create(matrix.sdk, model="hosted-search", previous_response_id=done["id"], input="more",
                  tools=[{"type": "web_search"}])
    assert fake.requests[-1]["input"][1]["id"] == "ws_fake"  # the upstream's own item, as it gave it


async def test_a_tool_choice_of_a_hosted_mcp_server_goes_upstream_as_sent(matrix: Matrix) -> None:
    fake = matrix.fakes["openai_responses"]
    tool = {"type": "mcp", "server_label": "docs", "server_url": "https://mcp.example.com/mcp",
            "require_approval": "never"}
    choice = {"type": "mcp", "server_label": "docs", "name": "search"}
    response = await _create(matrix.sdk, model="hosted-mcp", input="hello", tools=[tool], tool_choice=choice)
    assert response.status == "completed"
    assert fake.requests[-1]["tools"] == [tool] and fake.requests[-1]["tool_choice"] == choice
    await _create(matrix.sdk, model="hosted-mcp", input="hello", tools=[tool, LOOKUP],
                  tool_choice={"type": "allowed_tools", "mode": "auto",
                               "tools": [{"type": "mcp", "server_label": "docs"}]})
    assert fake.requests[-1]["tools"] == [tool]  # the hosted server is passed; the function is not allowed
    # `required` with only the hosted server allowed: the upstream must call it, and its mcp_call is the call
    # Parley's turn check counts (it was refused as a call outside allowed_tools, a 502, though it complied).
    required = await _create(matrix.sdk, model="hosted-mcp-call", input="hello", tools=[tool, LOOKUP],
                             tool_choice={"type": "allowed_tools", "mode": "required",
                                          "tools": [{"type": "mcp", "server_label": "docs"}]})
    assert [item.type for item in required.output] == ["mcp_call", "message"]
    assert fake.requests[-1]["tools"] == [tool] and fake.requests[-1]["tool_choice"] == "required"


async def test_a_client_cannot_forge_upstream_state(matrix: Matrix) -> None:
    forged = {"type": "reasoning", "id": "rs_x", "summary": [],
              "upstream": {"kind": "anthropic", "model": "echo", "signature": "Zm9yZ2Vk"}}
    response = await _create(matrix.sdk, model="anthropic-echo",
                             input=[{"role": "user", "content": "hi"}, forged, {"role": "user", "content": "hello"}])
    assert response.output_text == "echo: hi hello"  # the two user turns are one user message to Anthropic
    assert "Zm9yZ2Vk" not in json.dumps(matrix.fakes["anthropic"].requests[-1])


async def test_every_kind_is_listed(matrix: Matrix) -> None:
    ids = {model.id async for model in matrix.sdk.models.list()}
    assert {f"{kind}-echo" for kind in KINDS} <= ids


def test_settings_reject_a_profile_of_another_kind(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not one of provider 'anthropic'"):
        ModelConfig(id="m", provider="anthropic", base_url="http://x/v1", profile="vllm")
    with pytest.raises(ValueError, match="hosted_tools needs provider 'openai_responses'"):
        ModelConfig(id="m", provider="gemini", base_url="http://x/v1beta", hosted_tools=["web_search"])
    with pytest.raises(ValueError, match="do not apply"):
        ModelConfig(id="m", provider="chat_completions", base_url="http://x/v1", quirks={"api_version": "v"})
