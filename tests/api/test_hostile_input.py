"""Hostile request bodies and query strings: each observed 500 of issue 16 §1 (and issue 8 #2, #4) is a 400 in
the OpenAI error shape naming the parameter, before anything reaches the upstream or the store."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.config import EmbeddedConfig, ModelConfig, Settings
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import in_process

BIG = 2**64
ERROR_KEYS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream()
    await upstream.start()
    yield upstream
    await upstream.stop()


def _settings(data_dir: Path, fake: FakeUpstream, **extra: Any) -> Settings:
    return Settings(data_dir=data_dir, models=[ModelConfig(id="fake", base_url=fake.base_url, upstream_model="echo")],
                    embedded=EmbeddedConfig(enabled=False), **extra)


@pytest.fixture(scope="module")
async def http(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process(_settings(tmp_path_factory.mktemp("hostile"), fake)) as app:
        yield app.http


def _error(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    assert "Traceback" not in response.text
    error: dict[str, Any] = body["error"]
    return error


def _raw(**fields: str) -> bytes:
    """A body whose values are raw JSON text (so NaN, Infinity and huge integers can be written)."""
    inner = ", ".join(f'"{k}": {v}' for k, v in {"model": '"fake"', "input": '"hi"', **fields}.items())
    return ("{" + inner + "}").encode()


NUMBER_CASES: list[tuple[bytes, str]] = [
    (_raw(temperature="NaN"), "temperature"),
    (_raw(temperature="Infinity"), "temperature"),
    (_raw(top_p="-Infinity"), "top_p"),
    (_raw(max_output_tokens="1e999"), "max_output_tokens"),
    (_raw(max_tool_calls=str(BIG)), "max_tool_calls"),
    (_raw(max_tool_calls=str(2**63)), "max_tool_calls"),
    (_raw(tools=f'[{{"type": "function", "name": "f", "parameters": {{"type": "object", "maximum": {BIG}}}}}]'),
     "tools[0].parameters.maximum"),
    (_raw(tools='[{"type": "function", "name": "f", "parameters": {"maximum": NaN}}]'), "tools[0].parameters.maximum"),
    (_raw(tools='[{"type": "function", "name": "f", "parameters": {"maximum": 1e999}}]'),
     "tools[0].parameters.maximum"),
    (_raw(text=f'{{"format": {{"type": "json_schema", "name": "x", "schema": {{"minimum": {BIG}}}}}}}'),
     "text.format.schema.minimum"),
    (_raw(input=f'[{{"role": "user", "content": [{{"type": "input_text", "text": "x", "n": {BIG}}}]}}]'),
     "input[0].content[0].n"),
    (_raw(input=f'[{{"type": "function_call_output", "call_id": "c", "output": "x", "extra": {BIG}}}]'),
     "input[0].extra"),
    (_raw(input='"\\ud800 lone surrogate"'), "input"),
]


@pytest.mark.parametrize(("body", "param"), NUMBER_CASES)
async def test_numbers_no_later_step_can_carry_are_a_400(http: httpx.AsyncClient, fake: FakeUpstream,
                                                         body: bytes, param: str) -> None:
    sent = len(fake.requests)
    for path in ("/v1/responses", "/v1/responses/input_tokens"):
        error = _error(await http.post(path, content=body))
        assert error["param"] == param and error["code"] == "invalid_value", error
    assert len(fake.requests) == sent  # refused before the upstream was called


async def test_a_big_number_inside_a_string_is_fine(http: httpx.AsyncClient) -> None:
    body = _raw(input=f'"the number {BIG} and the word NaN and 1e999"', metadata='{"n": "NaN"}')
    assert (await http.post("/v1/responses", content=body)).status_code == 200
    paired = _raw(input='"an emoji \\ud83d\\ude00 is a valid surrogate pair"')
    assert (await http.post("/v1/responses", content=paired)).status_code == 200


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/conversations", f'{{"items": [{{"role": "user", "content": "x", "n": {BIG}}}]}}', "items[0].n"),
    ("/v1/conversations", '{"metadata": {"a": "b"}, "x": NaN}', "x"),
    ("/v1/prompts", f'{{"instructions": "x", "input": [{{"role": "user", "content": "y", "n": {BIG}}}]}}',
     "input[0].n"),
    ("/v1/responses/compact", f'{{"model": "fake", "input": [{{"role": "user", "content": "y", "n": {BIG}}}]}}',
     "input[0].n"),
])
async def test_numbers_are_checked_on_every_json_endpoint(http: httpx.AsyncClient, path: str, body: str,
                                                          param: str) -> None:
    assert _error(await http.post(path, content=body.encode()))["param"] == param


@pytest.mark.parametrize(("body", "param"), [
    ({"input": [{"type": ["message"], "role": "user", "content": "x"}]}, "input[0]"),
    ({"input": [{"type": {"a": 1}}]}, "input[0]"),
    ({"input": [{"role": "user", "content": [{"type": ["input_text"], "text": "x"}]}]}, "input[0].content[0]"),
    ({"tools": [{"type": ["function"], "name": "f"}]}, "tools[0].type"),
    ({"tools": [{"type": {"function": 1}, "name": "f"}]}, "tools[0].type"),
    ({"tools": [{"type": "namespace", "name": "ns", "tools": [{"type": ["function"], "name": "f"}]}]},
     "tools[0].tools[0].type"),
    ({"tool_choice": {"type": "allowed_tools", "mode": "auto"}}, "tool_choice.tools"),
    ({"tool_choice": {"type": ["function"], "name": "f"}}, "tool_choice"),
])
async def test_discriminators_must_be_strings(http: httpx.AsyncClient, body: dict[str, Any], param: str) -> None:
    error = _error(await http.post("/v1/responses", json={"model": "fake", "input": "hi", **body}))
    assert error["param"] == param, error


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/responses", {"model": "fake", "input": "hi", "tools": [
        {"type": "file_search", "vector_store_ids": ["vs_1"], "max_num_results": True}]}, "tools[0].max_num_results"),
    ("/v1/responses", {"model": "fake", "input": "hi", "tools": [
        {"type": "file_search", "vector_store_ids": ["vs_1"], "ranking_options": {"score_threshold": False}}]},
     "tools[0].ranking_options.score_threshold"),
    ("/v1/responses", {"model": "fake", "input": "hi", "tools": [
        {"type": "file_search", "vector_store_ids": ["vs_1"],
         "ranking_options": {"hybrid_search": {"embedding_weight": True, "text_weight": 1}}}]},
     "tools[0].ranking_options.hybrid_search.embedding_weight"),
    ("/v1/containers", {"name": "c", "expires_after": {"anchor": "last_active_at", "minutes": True}},
     "expires_after.minutes"),
    ("/v1/vector_stores/vs_1/search", {"query": "x", "ranking_options": {"score_threshold": True}},
     "ranking_options.score_threshold"),
])
async def test_a_boolean_is_not_a_number_in_builtin_tools(http: httpx.AsyncClient, path: str, body: dict[str, Any],
                                                           param: str) -> None:
    """`true` where a count or a weight belongs is a 400 naming it, never silently taken as 1."""
    error = _error(await http.post(path, json=body))
    assert error["param"] == param, error


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/vector_stores", {"name": "a\x00b"}, "name"),
    ("/v1/vector_stores", {"description": "\x00"}, "description"),
    ("/v1/vector_stores/vs_missing", {"name": "a\x00"}, "name"),
    ("/v1/containers", {"name": "c\x00"}, "name"),
    ("/v1/organization/keys", {"name": "k\x00", "project_id": "proj_x"}, "name"),
    ("/v1/organization/keys/key_missing", {"name": "k\x00"}, "name"),
])
async def test_a_nul_in_a_stored_name_is_a_400_naming_it(http: httpx.AsyncClient, path: str, body: dict[str, Any],
                                                         param: str) -> None:
    """Names and descriptions live in text columns: SQLite stored a NUL (a 200) and PostgreSQL refused the query,
    answered as 'an id contains a NUL' with no param. Both databases now give a 400 naming the field."""
    error = _error(await http.post(path, json=body))
    assert (error["param"], error["code"]) == (param, "invalid_value"), error
    assert "NUL" in error["message"]


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/responses/input_tokens", "/v1/conversations"])
async def test_valid_json_nested_past_the_parsers_limit_is_said_to_be_too_deep(http: httpx.AsyncClient,
                                                                              path: str) -> None:
    """The parser's recursion limit was answered 'The body must be valid JSON' for a body that is valid JSON."""
    deep = "[" * 300 + "]" * 300
    body = (f'{{"model": "fake", "input": "hi", "items": [], "tools": [{{"type": "function", "name": "f", '
            f'"parameters": {{"x": {deep}}}}}]}}').encode()
    error = _error(await http.post(path, content=body))
    assert error["code"] == "invalid_json", error
    assert "nested too deeply" in error["message"] and "valid JSON" not in error["message"], error


async def test_input_file_of_an_unknown_file_is_a_404_naming_it(http: httpx.AsyncClient) -> None:
    body = {"model": "fake", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "read this"}, {"type": "input_file", "file_id": "file_1"}]}]}
    error = _error(await http.post("/v1/responses", json=body), 404)
    assert error["param"] == "input[0].content[1].file_id"


@pytest.mark.parametrize(("query", "param"), [
    ("stream=maybe", "stream"),
    ("stream=true&starting_after=9223372036854775808", "starting_after"),
    ("stream=true&starting_after=-5", "starting_after"),
    ("stream=true&starting_after=1.5", "starting_after"),
    ("stream=true&starting_after=%C2%B2", "starting_after"),
])
async def test_retrieve_query_parameters(http: httpx.AsyncClient, query: str, param: str) -> None:
    created = (await http.post("/v1/responses", json={"model": "fake", "input": "hi"})).json()
    error = _error(await http.get(f"/v1/responses/{created['id']}?{query}"))
    assert error["param"] == param


@pytest.mark.parametrize("query", ["limit=%C2%B2", "limit=0", "limit=101", "limit=99999999999999999999999", "order=up"])
async def test_list_query_parameters(http: httpx.AsyncClient, query: str) -> None:
    conversation = (await http.post("/v1/conversations", json={})).json()
    error = _error(await http.get(f"/v1/conversations/{conversation['id']}/items?{query}"))
    assert error["param"] in ("limit", "order")


async def test_starting_after_at_the_top_of_the_range_ends_cleanly(http: httpx.AsyncClient) -> None:
    created = (await http.post("/v1/responses", json={"model": "fake", "input": "hi", "background": True})).json()
    response = await http.get(f"/v1/responses/{created['id']}?stream=true&starting_after={2**63 - 1}")
    assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")


async def test_unknown_top_level_fields_are_ignored_and_logged_once(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="parley.api"):
        for _ in range(3):
            response = await http.post("/v1/responses", json={"model": "fake", "input": "hi", "frobnicate": 1})
            assert response.status_code == 200
            assert "frobnicate" not in response.json()
    assert sum("frobnicate" in r.getMessage() for r in caplog.records) == 1


async def test_unknown_top_level_fields_rejected_when_configured(
    fake: FakeUpstream, tmp_path: Path
) -> None:
    async with in_process(_settings(tmp_path, fake, unknown_fields="reject")) as app:
        error = _error(await app.http.post("/v1/responses", json={"model": "fake", "input": "hi", "foo": 1}))
        assert error == {**error, "param": "foo", "code": "unknown_parameter"}
        assert (await app.http.post("/v1/conversations", json={"bar": 1})).json()["error"]["param"] == "bar"
        # Nested objects stay lenient: only top-level fields are checked.
        ok = await app.http.post("/v1/responses", json={"model": "fake", "input": "hi", "text": {"x": 1}})
        assert ok.status_code == 200
        # The official SDK's own requests carry no unknown field.
        sdk = app.sdk()
        response = await sdk.responses.create(model="fake", input="hi", temperature=0.5, metadata={"a": "b"},
                                              store=True, parallel_tool_calls=True, truncation="auto")
        assert response.status == "completed"
        async with sdk.responses.stream(model="fake", input="hi") as stream:
            assert (await stream.get_final_response()).status == "completed"


@pytest.mark.parametrize(("schema", "fragment"), [
    ({"pattern": "a{99999999999}"}, "Invalid JSON schema"),
    ({"$ref": "#/$defs/missing"}, "does not resolve"),
    ({"$ref": "https://example.com/schema.json"}, "does not resolve"),
])
async def test_schemas_that_cannot_be_evaluated_are_a_400(http: httpx.AsyncClient, schema: dict[str, Any],
                                                           fragment: str) -> None:
    body = {"model": "fake", "input": "hi", "text": {"format": {"type": "json_schema", "name": "x", "schema": schema}}}
    for stream in (False, True):
        error = _error(await http.post("/v1/responses", json={**body, "stream": stream}))
        assert error["param"] == "text.format.schema" and fragment in error["message"]


@pytest.mark.parametrize(("item", "param"), [
    ({"type": "custom_tool_call_output", "output": "x"}, "input[0].call_id"),
    ({"type": "custom_tool_call", "call_id": "c", "name": "f"}, "input[0].input"),
    ({"type": "file_search_call", "id": "fs_1", "queries": [1], "status": "completed"}, "input[0].queries[0]"),
    ({"type": "file_search_call", "id": "fs_1", "queries": ["q"], "status": "completed", "results": [{"score": "x"}]},
     "input[0].results[0].score"),
    ({"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "teleport"}},
     "input[0].action"),
])
async def test_tool_items_are_validated(http: httpx.AsyncClient, item: dict[str, Any], param: str) -> None:
    error = _error(await http.post("/v1/responses", json={"model": "fake", "input": [item]}))
    assert error["param"] == param, error
    conversation = await http.post("/v1/conversations", json={"items": [item]})
    assert _error(conversation)["param"] == "items" + param.removeprefix("input")


async def test_a_resent_file_search_call_with_partial_results_works(http: httpx.AsyncClient) -> None:
    item = {"type": "file_search_call", "id": "fs_1", "queries": ["q"], "status": "completed", "results": [{}]}
    body = {"model": "fake", "input": [item, {"role": "user", "content": "go"}]}
    response = await http.post("/v1/responses", json=body)
    assert response.status_code == 200, response.text


async def test_prompt_cache_options_are_validated_and_echoed_whole(http: httpx.AsyncClient) -> None:
    assert _error(await http.post("/v1/responses", json={"model": "fake", "input": "hi",
                                                          "prompt_cache_options": {"mode": 5}}))["param"] == (
        "prompt_cache_options.mode")
    ok = await http.post("/v1/responses", json={"model": "fake", "input": "hi", "prompt_cache_options": {}})
    assert ok.json()["prompt_cache_options"] == {"mode": "implicit", "ttl": "30m", "comparison_response_id": None}


async def test_logprobs_without_alternatives(http: httpx.AsyncClient) -> None:
    body = {"model": "fake", "input": "hi", "include": ["message.output_text.logprobs"]}
    response = await http.post("/v1/responses", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["output"][0]["content"][0]["logprobs"]


@pytest.mark.parametrize(("field", "value"), [
    ("store", "yes"), ("stream", 1), ("background", "false"), ("parallel_tool_calls", 0),
    ("max_output_tokens", "16"), ("max_tool_calls", 2.0), ("temperature", "0.5"), ("top_logprobs", True),
])
async def test_a_string_or_number_is_not_converted_to_another_type(http: httpx.AsyncClient, field: str,
                                                                    value: Any) -> None:
    """Pydantic's lax mode would take "yes" as true and "16" as 16; the request is refused, naming the field."""
    error = _error(await http.post("/v1/responses", json={"model": "fake", "input": "hi", field: value}))
    assert error["param"] == field and error["code"] == "invalid_value"


async def test_a_json_integer_still_fills_a_number_field(http: httpx.AsyncClient) -> None:
    resp = await http.post("/v1/responses", json={"model": "fake", "input": "hi", "temperature": 1})
    assert resp.status_code == 200, resp.text
