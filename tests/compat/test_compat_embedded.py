"""The embedded local model (SmolLM2-135M via a llama.cpp child process) through the SDK: a round trip, a
stream, structured output and forced tool calls under grammar (valid against their schemas; a schema the
grammar cannot express is a 400, in the background too, before anything is stored), a function-call round trip,
and generation that stops when the client goes away."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from compat_support import ParleyServer, check_events, check_response, fold_text, post_stream
from jsonschema import Draft202012Validator
from openai import APIConnectionError, APIStatusError, AsyncOpenAI, BadRequestError, OpenAI
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


def _valid(schema: dict[str, object], arguments: str) -> object:
    value = json.loads(arguments)
    errors = [e.message for e in Draft202012Validator(schema).iter_errors(value)]
    assert not errors, (arguments, errors)
    return value


# Strings the model fills with whole lines: llama-cpp-python's own grammar let it write raw newlines in them
# (3 of 5 such calls were invalid JSON before), and called a call cut by max_tokens finished. SmolLM2 writes a
# whole poem into `title` if it may: the bounds keep every call within max_output_tokens (an unbounded string
# can run past it, and the response is then `incomplete`).
POEM = {"type": "function", "name": "save_poem", "description": "Save a poem", "strict": True, "parameters": {
    "type": "object", "additionalProperties": False, "required": ["title", "lines", "mood"], "properties": {
        "title": {"type": "string", "maxLength": 40},
        "lines": {"type": "array", "items": {"type": "string", "maxLength": 60}, "maxItems": 4},
        "mood": {"type": "string", "enum": ["happy", "sad"]}}}}


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

    named = embedded_client.responses.create(
        model=MODEL, input="Write a short poem about the sea and save it.", tools=[weather, POEM],  # type: ignore[list-item]
        tool_choice={"type": "function", "name": "save_poem"}, max_output_tokens=300, temperature=0.2,
    )
    call = named.output[-1]
    assert named.status == "completed" and call.type == "function_call" and call.name == "save_poem"
    _valid(POEM["parameters"], call.arguments)  # type: ignore[arg-type]


def test_embedded_required_call_chooses_a_function_under_grammar(embedded_client: OpenAI) -> None:
    # "required" with two functions: the grammar lets the model choose one, then holds it to its schema.
    clock = {"type": "function", "name": "get_time", "description": "The local time in a time zone",
             "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 40}},
                            "required": ["zone"]}}
    tools = {"get_time": clock, "save_poem": POEM}
    with embedded_client.responses.stream(
        model=MODEL, input="What time is it in Tokyo?", tools=list(tools.values()),  # type: ignore[arg-type]
        tool_choice="required", max_output_tokens=160, temperature=0.2,
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    call = final.output[-1]
    assert final.status == "completed" and call.type == "function_call" and call.name in tools
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert deltas == call.arguments
    _valid(tools[call.name]["parameters"], call.arguments)  # type: ignore[arg-type]


def test_embedded_text_formats_under_grammar(embedded_client: OpenAI) -> None:
    trip = {"type": "object", "additionalProperties": False, "required": ["city", "days", "stops", "budget"],
            "properties": {"city": {"type": "string", "maxLength": 40}, "days": {"type": "integer"},
                           "stops": {"type": "array", "items": {"$ref": "#/$defs/stop"}, "maxItems": 3},
                           "budget": {"type": ["string", "null"], "enum": ["low", "high", None]}},
            "$defs": {"stop": {"type": "object", "additionalProperties": False, "required": ["name", "note"],
                               "properties": {"name": {"type": "string", "maxLength": 40},
                                              "note": {"type": "string", "maxLength": 80}}}}}
    planned = embedded_client.responses.create(
        model=MODEL, input="Plan a trip to Rome.", max_output_tokens=400, temperature=0.2,
        text={"format": {"type": "json_schema", "name": "trip", "strict": True, "schema": trip}},
    )
    assert planned.status == "completed", planned.incomplete_details
    _valid(trip, planned.output_text)
    anything = embedded_client.responses.create(
        model=MODEL, input="Describe a cat as JSON.", max_output_tokens=250, temperature=0,
        text={"format": {"type": "json_object"}},
    )
    assert anything.status == "completed", anything.incomplete_details
    assert isinstance(json.loads(anything.output_text), dict)


# Schemas the embedded model's grammar cannot express: llama.cpp's converter ignores `minimum` (the output would not
# be held to it), and this pattern's grammar does not parse in llama.cpp (it made the child segfault at the first
# token). Beside the function, one it can express, so the refused one is named by its place (tools[1]).
MINIMUM_FORMAT = {"type": "json_schema", "name": "n", "strict": False,
                  "schema": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 5}}}}
CODE_TOOL = {"type": "function", "name": "set_code", "parameters": {
    "type": "object", "properties": {"code": {"type": "string", "pattern": "^\\d{3}$"}}, "required": ["code"]}}
FINE_TOOL = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}


def test_embedded_schema_the_grammar_cannot_express_is_a_400(embedded_client: OpenAI) -> None:
    # `minimum`: refused, not ignored.
    with pytest.raises(BadRequestError) as refused:
        embedded_client.responses.create(model=MODEL, input="A number.", max_output_tokens=16,
                                          text={"format": MINIMUM_FORMAT})  # type: ignore[typeddict-item]
    error = refused.value.body
    assert isinstance(error, dict) and error["param"] == "text.format.schema", error
    assert error["code"] == "unsupported_schema" and "properties.n.minimum" in error["message"]
    with pytest.raises(BadRequestError) as refused:
        embedded_client.responses.create(model=MODEL, input="Set the code.", tools=[FINE_TOOL, CODE_TOOL],  # type: ignore[list-item]
                                          tool_choice={"type": "function", "name": "set_code"},
                                          max_output_tokens=16)
    error = refused.value.body
    assert isinstance(error, dict) and error["param"] == "tools[1].parameters", error  # named by its place
    assert "'set_code'" in error["message"] and "properties.code.pattern" in error["message"]
    assert embedded_client.responses.create(model=MODEL, input="Hi", max_output_tokens=16).output_text


def _stored_ids(server: ParleyServer) -> tuple[set[str], set[str]]:
    """The ids of the responses in the server's database, and of its background jobs."""
    with contextlib.closing(sqlite3.connect(server.data_dir / "parley.db")) as conn:
        responses = {row[0] for row in conn.execute("SELECT id FROM responses")}
        jobs = {row[0] for row in conn.execute("SELECT response_id FROM background_jobs")}
    return responses, jobs


def test_embedded_background_schema_the_grammar_cannot_express_is_a_400_at_create(
    embedded_server: ParleyServer, embedded_client: OpenAI,
) -> None:
    # It used to be accepted (queued) and then failed by the run. Now the create asks the child's grammar check
    # first: the foreground's 400, with nothing stored or queued.
    before = _stored_ids(embedded_server)
    for stream in (False, True):
        with pytest.raises(BadRequestError) as refused:
            embedded_client.responses.create(model=MODEL, input="A number.", max_output_tokens=16,  # type: ignore[call-overload]
                                             background=True, stream=stream, text={"format": MINIMUM_FORMAT})
        error = refused.value.body
        assert isinstance(error, dict) and error["param"] == "text.format.schema", error
        assert error["code"] == "unsupported_schema" and "properties.n.minimum" in error["message"]
    with pytest.raises(BadRequestError) as refused:
        embedded_client.responses.create(model=MODEL, input="Set the code.", tools=[FINE_TOOL, CODE_TOOL],  # type: ignore[list-item]
                                          tool_choice={"type": "function", "name": "set_code"},
                                          max_output_tokens=16, background=True)
    error = refused.value.body
    assert isinstance(error, dict) and error["param"] == "tools[1].parameters", error
    assert _stored_ids(embedded_server) == before  # no response, no job

    # A schema the grammar expresses is queued as before and completes under it.
    point = {"type": "object", "additionalProperties": False, "required": ["x", "label"],
             "properties": {"x": {"type": "integer"}, "label": {"type": "string", "maxLength": 20}}}
    queued = embedded_client.responses.create(
        model=MODEL, input="A point on a map.", max_output_tokens=200, temperature=0, background=True,
        text={"format": {"type": "json_schema", "name": "point", "strict": True, "schema": point}})
    assert queued.status in ("queued", "in_progress")
    deadline = time.monotonic() + 300  # a bound on waiting, not an assertion on time
    done = embedded_client.responses.retrieve(queued.id)
    while done.status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.2)
        done = embedded_client.responses.retrieve(queued.id)
    assert done.status == "completed", (done.status, done.error, done.incomplete_details)
    _valid(point, done.output_text)


def test_embedded_model_runs_a_builtin_tool(embedded_client: OpenAI) -> None:
    """A built-in tool on the embedded model, offered as a function: file_search forced on the first turn (its
    arguments decoded under the grammar of its schema), run by Parley, and the model asked again with its
    outcome."""
    store = embedded_client.vector_stores.create(name="facts")
    indexed = embedded_client.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("rome.txt", b"Rome is the capital of Italy. It has about 2.8 million people."),
        poll_interval_ms=50)
    assert indexed.status == "completed", indexed.last_error
    stream = embedded_client.responses.create(
        model=MODEL, input="What is the population of Rome?", max_output_tokens=80, temperature=0,
        tools=[{"type": "file_search", "vector_store_ids": [store.id]}], tool_choice={"type": "file_search"},
        max_tool_calls=1, include=["file_search_call.results"], stream=True)
    events = list(stream)
    types = [event.type for event in events]
    assert "response.file_search_call.in_progress" in types and types[-1] == "response.completed"
    response = events[-1].response  # type: ignore[union-attr]
    call = response.output[0]
    assert call.type == "file_search_call" and call.status == "completed" and call.queries
    assert call.results and call.results[0].file_id == indexed.id
    assert response.output[-1].type == "message"  # the second turn (no built-in tool left) answered
    assert response.output_text.strip()


WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": False}, "strict": True}


def test_embedded_function_call_round_trip(embedded_client: OpenAI) -> None:
    # The assistant message carrying the call goes back with content "" (profile tool_call_content_null):
    # llama-cpp-python's server refuses `"content": null` there.
    first = embedded_client.responses.create(
        model=MODEL, input="What is the weather in Rome?", tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required", max_output_tokens=60, temperature=0,
    )
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "get_weather"
    final = embedded_client.responses.create(
        model=MODEL, previous_response_id=first.id, tools=[WEATHER],  # type: ignore[list-item]
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 25 degrees Celsius."}],
        max_output_tokens=120, temperature=0,
    )
    assert final.status == "completed", final.incomplete_details
    assert final.output_text.strip()


def test_embedded_logprobs_on_request(embedded_client: OpenAI) -> None:
    # The child keeps logits only for requests asking for logprobs (its `+logprobs` alias).
    response = embedded_client.responses.create(
        model=MODEL, input="Say hello.", max_output_tokens=16, top_logprobs=2,
        include=["message.output_text.logprobs"],
    )
    part = response.output[-1].content[0]  # type: ignore[union-attr]
    assert part.type == "output_text" and part.logprobs
    assert len(part.logprobs[0].top_logprobs) == 2
    plain = embedded_client.responses.create(model=MODEL, input="Say hello.", max_output_tokens=16)
    assert plain.output_text


async def test_embedded_concurrent_streams_both_finish(embedded_server: ParleyServer) -> None:
    # llama-cpp-python's default (interrupt_requests) ended a running stream as soon as another request came.
    async with AsyncOpenAI(base_url=embedded_server.base_url, api_key="sk-local", max_retries=0,
                           timeout=120) as sdk:
        async def story(topic: str) -> str:
            async with sdk.responses.stream(model=MODEL, input=f"Write about {topic}.",
                                            max_output_tokens=48) as stream:
                return [event.type async for event in stream][-1]

        endings = await asyncio.gather(story("the sea"), story("the mountains"))
    assert set(endings) <= {"response.completed", "response.incomplete"}, endings


# Under this grammar the model cannot end its answer before 20,000 characters (thousands of tokens): had
# the child gone on generating after its client left, the next request would have waited for all of them.
STORY_FORMAT = {"type": "json_schema", "name": "story", "strict": False, "schema": {
    "type": "object", "properties": {"story": {"type": "string", "minLength": 20000}},
    "required": ["story"], "additionalProperties": False}}
LONG = {"model": MODEL, "input": "Tell a long story.", "text": {"format": STORY_FORMAT}, "max_output_tokens": 7000}
LONG_CHARS = 20000


def _child_pid(server: ParleyServer) -> int:
    """The embedded model's process: the serving Parley's only child."""
    assert server.process is not None
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat[stat.rindex(")") + 2:].split()[1]) == server.process.pid:
                    children.append(int(entry.name))
    [pid] = children
    return pid


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process used so far: work done, whatever else runs on the machine."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _assert_child_freed(sdk: OpenAI, pid: int, since_cpu: float, cpu_per_char: float, chars_done: float) -> None:
    """The next request is answered after far less child CPU than the rest of the long answer would cost."""
    short = sdk.responses.create(model=MODEL, input="Say hi.", max_output_tokens=16)
    assert short.status in ("completed", "incomplete") and short.output_text
    spent = _cpu_s(pid) - since_cpu
    rest = cpu_per_char * (LONG_CHARS - chars_done)
    assert spent < rest / 4, f"the child spent {spent:.1f} CPU s before answering; the rest would cost {rest:.1f}"


def test_embedded_generation_stops_when_the_client_goes_away(
    embedded_server: ParleyServer, embedded_client: OpenAI
) -> None:
    pid = _child_pid(embedded_server)
    base = embedded_server.base_url

    # Streamed: read 300 characters (measuring what they cost the child), then leave.
    chars, first_cpu = 0, 0.0
    with httpx.stream("POST", base + "/responses", json={**LONG, "stream": True}, timeout=120) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: ") and '"response.output_text.delta"' in line:
                if not first_cpu:
                    first_cpu = _cpu_s(pid)  # from the first token on: generation only
                    continue
                chars += len(json.loads(line[6:])["delta"])
                if chars >= 300:
                    break
        left_cpu = _cpu_s(pid)
    cpu_per_char = (left_cpu - first_cpu) / chars
    _assert_child_freed(embedded_client, pid, left_cpu, cpu_per_char, chars)

    # Not streamed: the client gives up waiting (every CPU second so far counted as generated text).
    start_cpu = _cpu_s(pid)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(base + "/responses", json=LONG, timeout=httpx.Timeout(60, read=2))
    left_cpu = _cpu_s(pid)
    _assert_child_freed(embedded_client, pid, left_cpu, cpu_per_char, (left_cpu - start_cpu) / cpu_per_char)

    # Background, cancelled through the API once its first text arrived.
    start_cpu = _cpu_s(pid)
    background = embedded_client.responses.create(**LONG, background=True)  # type: ignore[call-overload]
    with httpx.stream("GET", f"{base}/responses/{background.id}", params={"stream": "true"}, timeout=120) as resp:
        next(line for line in resp.iter_lines() if '"response.output_text.delta"' in line)
    assert embedded_client.responses.cancel(background.id).status == "cancelled"
    left_cpu = _cpu_s(pid)
    _assert_child_freed(embedded_client, pid, left_cpu, cpu_per_char, (left_cpu - start_cpu) / cpu_per_char)
