"""The embedded model's grammars (providers/embedded_grammar.py, run in its child): which schemas become a
grammar and which are refused by name, the cache, the tool call streamed from the grammar's text
(providers/embedded_server.py), and the child's grammar check a background create asks (GrammarGate) with the
fields Parley sends it (embedded_provider.grammar_fields). The model itself decodes under them in
tests/compat/test_compat_embedded.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from parley.providers.base import ModelCall
from parley.providers.embedded_grammar import (
    Constraint,
    GrammarCache,
    Refusal,
    arguments_grammar,
    choice_grammar,
    text_grammar,
)
from parley.providers.embedded_launch import GRAMMAR_CHECK_PATH
from parley.providers.embedded_provider import grammar_fields
from parley.providers.embedded_server import GrammarGate, _call_chunks, _call_completion


def _text_format(schema: dict[str, Any]) -> Constraint | Refusal | None:
    return GrammarCache().constraint(None, None, {"type": "json_object", "schema": schema})


def _obj(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties)}


# Each was tried on llama-cpp-python 0.3.36's converter: it ignores the keyword (the output is not held to
# it), asserts, or makes a grammar llama.cpp cannot parse (which segfaulted the child at the first token).
REFUSED = [
    (_obj(n={"type": "integer", "minimum": 0}), "properties.n.minimum"),
    (_obj(n={"type": "number", "exclusiveMaximum": 1}), "properties.n.exclusiveMaximum"),
    (_obj(n={"type": "integer", "multipleOf": 2}), "properties.n.multipleOf"),
    (_obj(s={"type": "string", "pattern": "^\\d{3}$"}), "properties.s.pattern"),  # was the segfault
    (_obj(s={"type": "string", "pattern": "[A-Z]+"}), "properties.s.pattern"),  # unanchored: an assertion
    (_obj(s={"type": "string", "pattern": "^a.b$"}), "properties.s.pattern"),  # `.` may write a raw newline
    (_obj(s={"type": "string", "format": "email"}), "properties.s.format"),
    (_obj(s={"type": "string", "format": "date", "maxLength": 4}), "properties.s.maxLength"),
    (_obj(a={"type": "array", "items": {"type": "string"}, "uniqueItems": True}), "properties.a.uniqueItems"),
    (_obj(a={"type": "array", "minItems": 2}), "properties.a.minItems"),  # ignored without `items`
    (_obj(o={"allOf": [_obj(x={"type": "string"})]}), "properties.o.allOf"),
    (_obj(o={"not": {"type": "string"}}), "properties.o.not"),
    (_obj(o={"type": "object", "patternProperties": {"^x": {}}}), "properties.o.patternProperties"),
    (_obj(o={"type": "object", "minProperties": 1}), "properties.o.minProperties"),
    ({"type": "object", "properties": {}, "required": ["missing"]}, "required"),
    (_obj(o={"anyOf": [{"type": "string"}], "maxLength": 3}), "properties.o.maxLength"),  # ignored beside anyOf
    (_obj(o={"$ref": "#"}), "properties.o.$ref"),
    (_obj(o={"enum": ["a", 1], "type": "string"}), "properties.o.enum"),
    (_obj(o=True), "properties.o"),
]


@pytest.mark.parametrize(("schema", "where"), REFUSED, ids=[w + "-" + str(i) for i, (_, w) in enumerate(REFUSED)])
def test_what_the_converter_cannot_express_is_refused_by_name(schema: dict[str, Any], where: str) -> None:
    refusal = _text_format(schema)
    assert isinstance(refusal, Refusal), refusal
    assert refusal.param == "response_format.schema"
    assert f"(at {where})" in refusal.message


def test_a_forced_functions_refusal_names_it() -> None:
    tools = [{"type": "function", "function": {"name": "ok", "parameters": _obj(a={"type": "string"})}},
             {"type": "function", "function": {"name": "bad", "parameters": _obj(n={"type": "integer",
                                                                                   "maximum": 3})}}]
    named = GrammarCache().constraint(tools, {"type": "function", "function": {"name": "bad"}}, None)
    assert isinstance(named, Refusal) and named.param == "tools[1].function.parameters"
    assert "properties.n.maximum" in named.message
    chosen = GrammarCache().constraint(tools, "required", None)
    assert isinstance(chosen, Refusal) and chosen.param == "tools[1].function.parameters"
    assert isinstance(GrammarCache().constraint(tools, {"type": "function", "function": {"name": "ok"}}, None),
                      Constraint)
    missing = GrammarCache().constraint(tools, {"type": "function", "function": {"name": "nope"}}, None)
    assert isinstance(missing, Refusal) and missing.param == "tool_choice"


def test_strings_cannot_hold_raw_control_characters() -> None:
    # llama-cpp-python's own `char` rule is [^"\\]: SmolLM2 wrote raw newlines inside argument strings.
    grammar = arguments_grammar(_obj(text={"type": "string"}))
    char = next(line for line in grammar.splitlines() if line.startswith("char ::="))
    assert r"\x00-\x1F" in char and r"\x7F" in char


def test_type_lists_keep_the_keywords_beside_them() -> None:
    # The converter turns {"type": [...]} into bare types, dropping `properties`, `enum`...: split into anyOf.
    grammar = text_grammar(_obj(o={"type": ["object", "null"], "properties": {"x": {"type": "integer"}},
                                   "required": ["x"]},
                                e={"type": ["string", "null"], "enum": ["a", None]}))
    assert '"\\"x\\""' in grammar  # the nested object's key is in the grammar
    assert '"\\"a\\""' in grammar and '"null"' in grammar


def test_refs_with_one_name_in_two_places_get_two_rules() -> None:
    # The converter named a $ref's rule by its last segment: both `X`s would have shared the first's rule.
    grammar = choice_grammar([("a", {"type": "object", "properties": {"x": {"$ref": "#/$defs/X"}},
                                     "$defs": {"X": _obj(p={"type": "integer"})}}),
                              ("b", {"type": "object", "properties": {"x": {"$ref": "#/$defs/X"}},
                                     "$defs": {"X": _obj(q={"type": "boolean"})}})])
    rules = dict(line.split(" ::= ", 1) for line in grammar.splitlines())
    assert rules["function0-arguments-x"] != rules["function1-arguments-x"]
    assert '"\\"p\\""' in rules[rules["function0-arguments-x"] + "-p-kv"]
    assert '"\\"q\\""' in rules[rules["function1-arguments-x"] + "-q-kv"]
    assert rules["root"].startswith('"{\\"name\\": \\"a\\", \\"arguments\\": " ')


def test_each_distinct_request_is_converted_once() -> None:
    cache = GrammarCache(size=2)
    tools = [{"type": "function", "function": {"name": "f", "parameters": _obj(a={"type": "string"})}}]
    first = cache.constraint(tools, "required", None)
    assert cache.constraint(json.loads(json.dumps(tools)), "required", None) is first
    assert cache.built == 1
    assert cache.constraint(tools, {"type": "function", "function": {"name": "f"}}, None) is not first
    refused = cache.constraint(None, None, {"type": "json_object", "schema": _obj(n={"type": "integer",
                                                                                      "minimum": 1})})
    assert isinstance(refused, Refusal)
    assert cache.constraint(None, None, {"type": "json_object", "schema": _obj(n={"type": "integer",
                                                                                   "minimum": 1})}) is refused
    assert cache.built == 3
    assert cache.constraint(tools, "required", None) is not first  # the oldest was dropped (size 2)
    assert cache.constraint(tools, "auto", None) is None and cache.constraint(None, None, None) is None


def _chunks(pieces: list[str], finish: str) -> Iterator[dict[str, Any]]:
    base = {"id": "chatcmpl-1", "created": 1, "model": "m"}
    yield {**base, "choices": [{"delta": {"role": "assistant"}, "finish_reason": None}]}
    for piece in pieces:
        yield {**base, "choices": [{"delta": {"content": piece}, "finish_reason": None}]}
    yield {**base, "choices": [{"delta": {}, "finish_reason": finish}]}


def _fold(chunks: Iterator[dict[str, Any]]) -> tuple[str | None, str, str | None, int]:
    name, arguments, finish, heads = None, "", None, 0
    for chunk in chunks:
        choice = chunk["choices"][0]
        for call in choice["delta"].get("tool_calls") or ():
            if "id" in call:
                heads += 1
                name = call["function"]["name"]
            arguments += call["function"]["arguments"]
        finish = choice["finish_reason"] or finish
    return name, arguments, finish, heads


CHOICE = Constraint("choice", None, functions=("get_weather", "get_time"))  # type: ignore[arg-type]


def test_a_choice_streams_as_the_chosen_functions_call() -> None:
    pieces = ['{"name": "get', '_time", "argu', 'ments": {"zone', '": "UTC"', ' }', "}"]
    assert _fold(_call_chunks(CHOICE, _chunks(pieces, "stop"))) == ("get_time", '{"zone": "UTC" }', "tool_calls", 1)
    named = Constraint("arguments", None, function="f")  # type: ignore[arg-type]
    assert _fold(_call_chunks(named, _chunks(['{"a"', ": 1}"], "stop"))) == ("f", '{"a": 1}', "tool_calls", 1)


def test_a_call_cut_by_max_tokens_ends_with_length() -> None:
    cut = ['{"name": "get_weather", "arguments": {"city": "Ro']
    assert _fold(_call_chunks(CHOICE, _chunks(cut, "length"))) == ("get_weather", '{"city": "Ro', "length", 1)
    assert _fold(_call_chunks(CHOICE, _chunks(['{"name": "get_'], "length"))) == (None, "", "length", 0)


def test_a_whole_answer_becomes_one_tool_call() -> None:
    completion = {"id": "chatcmpl-1", "created": 1, "model": "m", "usage": {"completion_tokens": 9},
                  "choices": [{"message": {"role": "assistant", "content": '{"name": "get_time", "arguments": {}}'},
                               "finish_reason": "stop"}]}
    answer = _call_completion(CHOICE, completion)
    assert answer["choices"][0]["finish_reason"] == "tool_calls"
    [call] = answer["choices"][0]["message"]["tool_calls"]
    assert call["function"] == {"name": "get_time", "arguments": "{}"} and call["id"].startswith("call_")


def _call(**fields: Any) -> ModelCall:
    return ModelCall(upstream_model="m", items=[{"type": "message", "role": "user", "content": "hi"}], **fields)


MINIMUM = {"type": "json_schema", "name": "n", "schema": _obj(n={"type": "integer", "minimum": 5})}
CODE = {"type": "function", "name": "set_code", "parameters": _obj(code={"type": "string", "pattern": "^\\d{3}$"})}


def test_only_calls_decoded_under_a_schema_have_fields_to_check() -> None:
    assert grammar_fields(_call()) is None
    assert grammar_fields(_call(text_format={"type": "json_object"})) is None  # its grammar always exists
    assert grammar_fields(_call(tools=[CODE], tool_choice="auto")) is None
    assert grammar_fields(_call(text_format=MINIMUM)) == {"response_format": {"type": "json_object",
                                                                              "schema": MINIMUM["schema"]}}
    fields = grammar_fields(_call(tools=[CODE], tool_choice={"type": "function", "name": "set_code"}))
    assert fields is not None and fields["tool_choice"] == {"type": "function", "function": {"name": "set_code"}}
    assert fields["tools"][0]["function"]["parameters"] == CODE["parameters"]
    assert grammar_fields(_call(tools=[CODE], tool_choice="required")) == {**fields, "tool_choice": "required"}


async def _ask_gate(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], list[str]]:
    """POST `body` to a GrammarGate in front of an app that notes what reached it."""
    reached: list[str] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path}
    await GrammarGate(app, GrammarCache())(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"]), reached


async def test_the_grammar_check_answers_without_the_server() -> None:
    refused = grammar_fields(_call(text_format=MINIMUM))
    assert refused is not None
    status, answer, reached = await _ask_gate(GRAMMAR_CHECK_PATH, refused)
    assert (status, reached) == (400, [])
    assert answer["error"]["param"] == "response_format.schema" and answer["error"]["code"] == "unsupported_schema"
    assert "properties.n.minimum" in answer["error"]["message"]
    fine = grammar_fields(_call(text_format={**MINIMUM, "schema": _obj(n={"type": "integer"})}))
    assert fine is not None
    assert await _ask_gate(GRAMMAR_CHECK_PATH, fine) == (200, {"object": "grammar_check", "ok": True}, [])
    # A chat request with the same fields gets the same 400; a fine one goes on to the server.
    assert (await _ask_gate("/v1/chat/completions", {"messages": [], **refused}))[:2] == (400, answer)
    assert (await _ask_gate("/v1/chat/completions", {"messages": [], **fine}))[2] == ["/v1/chat/completions"]
