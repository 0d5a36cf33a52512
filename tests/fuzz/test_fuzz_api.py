"""Seeded property-based fuzzing of the HTTP API (issue 8 "Fuzzing in the suite", issue 16 §1).

Bodies come from the official SDK's request types (their JSON Schema), valid or with hostile changes (NaN,
Infinity, 1e999, integers beyond 64 bits, discriminators that are lists, objects, numbers or misplaced tags,
wrong types, deep nesting, huge strings, lone surrogates, unknown fields, non-object bodies, invalid JSON and
UTF-8); list and retrieve endpoints get hostile paths and query strings. For every request: no 5xx and nothing
escapes the app; a 4xx is exactly the OpenAI error shape; no traceback and no configured key in any body; a 2xx
validates as the SDK's type; a stream ends with its terminal event and `data: [DONE]`.

Runs are reproducible (derandomized). To explore further, set PARLEY_FUZZ_SEED (any integer: other examples) and
PARLEY_FUZZ_SCALE (a factor on the number of examples); a failure prints the request either way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
from fuzz_server import FuzzServer, Reply
from fuzz_strategies import (
    BACKGROUND_ID,
    CONVERSATION_ID,
    FROM_SCHEMA,
    ITEM_ID,
    NUMERALS,
    OMIT,
    PATH_IDS,
    PROMPT_ID,
    PROMPTS,
    RESPONSE_ID,
    TEXT_FORMATS,
    TOOLS,
    UPSTREAM_SECRET,
    Schema,
    bodies,
    broken,
    json_schema_of,
    mutated,
    query_strings,
    subschema,
    to_json,
)
from hypothesis import HealthCheck, example, given, note, seed, settings
from hypothesis import strategies as st
from openai.types.conversations import Conversation
from openai.types.conversations.conversation_create_params import ConversationCreateParams
from openai.types.conversations.item_create_params import ItemCreateParams
from openai.types.responses import (
    CompactedResponse,
    InputTokenCountResponse,
    Response,
    ResponseInputMessageItem,
    ResponseItemList,
)
from openai.types.responses.input_token_count_params import InputTokenCountParams
from openai.types.responses.response_compact_params import ResponseCompactParams
from openai.types.responses.response_create_params import ResponseCreateParamsNonStreaming

pytestmark = pytest.mark.slow  # about 5,000 requests: ~40 s on 2 cores

T = TypeVar("T", bound=Callable[..., None])
SEED = os.environ.get("PARLEY_FUZZ_SEED")
SCALE = float(os.environ.get("PARLEY_FUZZ_SCALE", "1"))


def fuzz(examples: int) -> Callable[[T], T]:
    """The settings of every test here: `examples` cases, reproducible, no example database, no deadline."""
    chosen = settings(max_examples=max(1, int(examples * SCALE)), derandomize=SEED is None, database=None,
                      deadline=None, print_blob=False,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

    def apply(test: T) -> T:
        return chosen(test) if SEED is None else seed(int(SEED))(chosen(test))

    return apply


ERROR_KEYS = {"message", "type", "param", "code"}
TERMINAL_EVENTS = {"response.completed", "response.incomplete", "response.failed"}

CREATE = json_schema_of(ResponseCreateParamsNonStreaming)
INPUT_TOKENS = json_schema_of(InputTokenCountParams)
COMPACT = json_schema_of(ResponseCompactParams)
CONVERSATION = json_schema_of(ConversationCreateParams)
ITEMS = json_schema_of(ItemCreateParams)
PROMPT = subschema(CREATE, ("instructions", "input", "model", "metadata"))

MODEL = st.sampled_from(["fake", "fake-json", "fake-tools", "fake", "fake-json", "fake-reasoning", "fake-length",
                         "no-such-model", OMIT])
# Mostly no state: a response stored in the shared conversation makes every later one longer.
STATE = {"model": MODEL,
         "previous_response_id": st.sampled_from([OMIT] * 8 + [RESPONSE_ID, BACKGROUND_ID, "resp_missing"]),
         "conversation": st.sampled_from([OMIT] * 10 + [CONVERSATION_ID, {"id": CONVERSATION_ID}, "conv_missing"]),
         "text": TEXT_FORMATS, "tools": TOOLS, "prompt": PROMPTS}
CONTENT_TYPES = st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", "",
                                 "application/x-www-form-urlencoded", "application/json; charset=latin-1"])


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # with its query string
    body: bytes | None
    content_type: str = "application/json"


def json_bodies(schema: Schema, overrides: dict[str, st.SearchStrategy[Any]],
                always: tuple[str, ...] = ()) -> st.SearchStrategy[bytes]:
    """Schema-valid bodies, hostile ones and broken bytes, about 2:3:1."""
    base = bodies(schema, overrides, always)
    kinds = st.sampled_from(["valid", "valid", "hostile", "hostile", "hostile", "broken"])

    @st.composite
    def draw(draw: st.DrawFn) -> bytes:
        kind = draw(kinds)
        if kind == "broken":
            return draw(broken(base))
        value = draw(base if kind == "valid" else mutated(schema, base))
        return to_json(value, ascii_only=draw(st.booleans())).encode()

    return draw()


def posts(path: str, schema: Schema, overrides: dict[str, st.SearchStrategy[Any]],
          always: tuple[str, ...] = ()) -> st.SearchStrategy[Case]:
    return st.builds(Case, st.just("POST"), st.just(path), json_bodies(schema, overrides, always), CONTENT_TYPES)


def with_query(path: str, query: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}{query}" if query else path


def gets(paths: list[str]) -> st.SearchStrategy[Case]:
    """`paths` with a hostile number in place of `{n}`, sometimes a hostile id in place of one of their ids,
    and a hostile query string."""

    def hostile(path: str, number: str, hostile_id: str, which: int) -> str:
        path = path.replace("{n}", quote(number, safe=""))
        found = [p for p in (RESPONSE_ID, CONVERSATION_ID, ITEM_ID, PROMPT_ID) if p in path]
        return path.replace(found[which % len(found)], hostile_id, 1) if found and which < 2 else path

    numbers = st.sampled_from(NUMERALS) | st.integers(-2, 12).map(str)
    path = st.tuples(st.sampled_from(paths), numbers, PATH_IDS, st.integers(0, 3)).map(
        lambda t: hostile(*t))
    return st.builds(Case, st.just("GET"), st.tuples(path, query_strings()).map(lambda t: with_query(*t)), st.none())


# ---------------------------------------------------------------- the properties

def _error_shape(reply_json: Any) -> None:
    assert isinstance(reply_json, dict) and set(reply_json) == {"error"}, reply_json
    error = reply_json["error"]
    assert isinstance(error, dict) and set(error) == ERROR_KEYS, error
    assert isinstance(error["message"], str) and error["message"].strip(), error
    assert isinstance(error["type"], str) and error["type"], error
    assert error["param"] is None or isinstance(error["param"], str), error
    assert error["code"] is None or isinstance(error["code"], str), error


def _stream(text: str, needs_terminal: bool) -> None:
    assert text.endswith("data: [DONE]\n\n"), f"the stream was cut: ...{text[-500:]!r}"
    # Only "\n" ends a line here (orjson escapes "\r"); str.splitlines would also split at U+2028 and others.
    events = [json.loads(line[6:]) for line in text.split("\n")
              if line.startswith("data: ") and line != "data: [DONE]"]
    if needs_terminal:
        assert events and events[-1]["type"] in TERMINAL_EVENTS, f"no terminal event: ...{text[-500:]!r}"
        Response.model_validate(events[-1]["response"])


def _compacted(body: Any) -> None:
    """The SDK types `output` as output items, which admit no user message: those are input message items."""
    messages = [o for o in body["output"] if o.get("type") == "message" and o.get("role") != "assistant"]
    for message in messages:
        ResponseInputMessageItem.model_validate(message)
    CompactedResponse.model_validate({**body, "output": [o for o in body["output"] if o not in messages]})


def _item(item: Any) -> None:
    """Conversation items are not validated as the SDK's ConversationItem: items of types this server only
    stores are echoed as sent, and the input types leave out fields the output types require (`status`)."""
    assert isinstance(item.get("id"), str) and isinstance(item.get("type"), str), item


def _items(body: Any) -> None:
    assert body["object"] == "list" and isinstance(body["has_more"], bool), body
    for item in body["data"]:
        _item(item)


def _prompt(body: Any) -> None:
    """Prompt templates are this server's own objects (the SDK has no type for them)."""
    assert isinstance(body, dict) and isinstance(body.get("object"), str), body


def _reply_type(case: Case) -> Callable[[Any], object]:
    """How a 2xx JSON reply to `case` is checked: the official SDK's type of it."""
    path = case.path.split("?", 1)[0]
    if case.method == "POST":
        by_path: dict[str, Callable[[Any], object]] = {
            "/v1/responses": Response.model_validate, "/v1/responses/compact": _compacted,
            "/v1/responses/input_tokens": InputTokenCountResponse.model_validate,
            "/v1/conversations": Conversation.model_validate}
        return by_path.get(path, _prompt if "prompts" in path else _items)
    if path.startswith("/v1/prompts"):
        return _prompt
    if path.startswith("/v1/conversations/"):
        return _items if path.endswith("/items") else _item
    return ResponseItemList.model_validate if path.endswith("/input_items") else Response.model_validate


def _model_output_invalid(reply: Reply) -> bool:
    """The one documented 5xx a request can cause (README, `text.format`): the model's output did not match the
    requested JSON Schema (the fake upstream answers a fixed JSON object, or an echo), never a success."""
    if reply.status != 502:
        return False
    body = json.loads(reply.body)
    return isinstance(body, dict) and body.get("error", {}).get("code") == "model_output_invalid"


def check(server: FuzzServer, case: Case) -> None:
    """Send `case` (placeholders replaced by real ids) and assert every property of a reply."""
    path, body = case.path, case.body
    for placeholder, real in server.ids.items():
        path = path.replace(placeholder, real)
        body = body.replace(placeholder.encode(), real.encode()) if body is not None else None
    note(f"request: {case.method} {path}\nbody ({len(body or b'')} bytes): {body!r}"[:20_000])
    reply = server.send(case.method, path, body, {"content-type": case.content_type} if case.content_type else {})
    logs = "\n".join(reply.logs)[-20_000:]
    assert reply.crash is None, f"the app let an exception escape:\n{reply.crash}\nserver log:\n{logs}"
    assert reply.status < 500 or _model_output_invalid(reply), (
        f"HTTP {reply.status}: {reply.body[:2000]!r}\nserver log:\n{logs}")
    text = reply.body.decode(errors="replace")
    assert "Traceback" not in text and 'File "' not in text, text[:2000]
    assert UPSTREAM_SECRET not in text, text[:2000]
    if 300 <= reply.status < 400:
        # Starlette's redirect_slashes: `GET /v1/responses/` (or `/v1/responses/%2F`) -> 307 to `/v1/responses`.
        assert reply.body == b"", reply.body[:2000]
    elif reply.status >= 400:
        assert reply.content_type.startswith("application/json"), reply.content_type
        _error_shape(json.loads(reply.body))
    elif reply.content_type.startswith("text/event-stream"):
        _stream(text, needs_terminal=case.method == "POST" or "starting_after" not in case.path)
    else:
        _reply_type(case)(json.loads(reply.body))


# ---------------------------------------------------------------- the tests

# The first 500s this test found, tried first in every run.
OVERFLOWING_PATTERN = b'{"model": "fake", "input": "hi", "text": {"format": {"type": "json_schema", "name": "out", ' \
    b'"schema": {"type": "string", "pattern": "a{99999999999}"}}}}'
UNRESOLVABLE_REF = b'{"model": "fake-json", "input": "hi", "text": {"format": {"type": "json_schema", ' \
    b'"name": "out", "schema": {"$ref": "#/$defs/missing"}}}}'
OUTPUT_WITHOUT_CALL_ID = b'{"model": "fake", "input": [{"type": "custom_tool_call_output", "output": "x"}]}'
# The SDK's file_search_call result has every field optional.
RESULT_WITHOUT_TEXT = b'{"model": "fake", "input": [{"type": "file_search_call", "id": "fs_1", "queries": ["q"], ' \
    b'"status": "completed", "results": [{}]}]}'


@fuzz(1200)
@given(posts("/v1/responses", CREATE, {**STATE, "stream": st.sampled_from([OMIT, False, None]),
                                       "stream_options": st.sampled_from([OMIT] * 5 + [FROM_SCHEMA])}, ("input",)))
@example(Case("POST", "/v1/responses", OVERFLOWING_PATTERN))
@example(Case("POST", "/v1/responses", UNRESOLVABLE_REF))
@example(Case("POST", "/v1/responses", RESULT_WITHOUT_TEXT))
@example(Case("POST", "/v1/responses", OUTPUT_WITHOUT_CALL_ID))
def test_create_response(server: FuzzServer, case: Case) -> None:
    check(server, case)


@fuzz(600)
@given(posts("/v1/responses", CREATE, {**STATE, "stream": st.just(True)}, ("input",)))
@example(Case("POST", "/v1/responses", UNRESOLVABLE_REF[:-1] + b', "stream": true}'))
def test_create_response_streaming(server: FuzzServer, case: Case) -> None:
    check(server, case)


@fuzz(700)
@given(posts("/v1/responses/input_tokens", INPUT_TOKENS, STATE, ("input",)))
@example(Case("POST", "/v1/responses/input_tokens", OVERFLOWING_PATTERN))
@example(Case("POST", "/v1/responses/input_tokens", RESULT_WITHOUT_TEXT))
def test_input_tokens(server: FuzzServer, case: Case) -> None:
    check(server, case)


@fuzz(500)
@given(posts("/v1/responses/compact", COMPACT, {"model": MODEL, "previous_response_id": STATE["previous_response_id"]},
             ("input",)))
@example(Case("POST", "/v1/responses/compact", OUTPUT_WITHOUT_CALL_ID))
def test_compact(server: FuzzServer, case: Case) -> None:
    check(server, case)


@fuzz(400)
@given(posts("/v1/conversations", CONVERSATION, {}))
def test_create_conversation(server: FuzzServer, case: Case) -> None:
    check(server, case)


@fuzz(500)
@given(st.builds(Case, st.just("POST"), st.tuples(
    st.sampled_from([f"/v1/conversations/{CONVERSATION_ID}/items", "/v1/conversations/conv_missing/items"]),
    query_strings()).map(lambda t: with_query(*t)), json_bodies(ITEMS, {}), CONTENT_TYPES))
def test_add_conversation_items(server: FuzzServer, case: Case) -> None:
    check(server, case)


@fuzz(400)
@given(st.builds(Case, st.just("POST"), st.sampled_from(["/v1/prompts", f"/v1/prompts/{PROMPT_ID}/versions"]),
                 json_bodies(PROMPT, {"model": MODEL}), CONTENT_TYPES))
def test_create_prompt(server: FuzzServer, case: Case) -> None:
    check(server, case)


@fuzz(800)
@given(gets([f"/v1/conversations/{CONVERSATION_ID}/items", f"/v1/responses/{RESPONSE_ID}",
             f"/v1/responses/{BACKGROUND_ID}", f"/v1/responses/{BACKGROUND_ID}?stream=true",
             f"/v1/responses/{BACKGROUND_ID}?stream=true&starting_after={{n}}",
             f"/v1/responses/{RESPONSE_ID}/input_items", f"/v1/conversations/{CONVERSATION_ID}/items/{ITEM_ID}",
             f"/v1/conversations/{CONVERSATION_ID}/items?limit={{n}}", "/v1/prompts", f"/v1/prompts/{PROMPT_ID}",
             f"/v1/prompts/{PROMPT_ID}/versions/{{n}}"]))
def test_query_parameters(server: FuzzServer, case: Case) -> None:
    check(server, case)
