"""Errors through the SDK: validation 400s naming `param`, 413, and upstream failures mapped to the right status."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from compat_support import UPSTREAM_SECRET, ParleyServer, check_error_body, check_events, post_stream
from openai import (
    APIStatusError,
    AsyncOpenAI,
    BadRequestError,
    InternalServerError,
    OpenAI,
    RateLimitError,
)


def _error(exc: APIStatusError) -> dict[str, Any]:
    return check_error_body(exc.response.json(), exc.status_code)


@pytest.mark.parametrize(
    ("params", "param", "code"),
    [
        ({"temperature": 3}, "temperature", None),
        ({"top_p": 1.5}, "top_p", None),
        ({"previous_response_id": "resp_x", "conversation": "conv_x"}, "previous_response_id", None),
        ({"model": "no-such-model"}, "model", "model_not_found"),
        ({"input": [{"type": "no_such_item", "foo": 1}]}, "input[0]", None),
        ({"input": [{"role": "wizard", "content": "hi"}]}, "input[0].role", None),
        ({"max_output_tokens": 1}, "max_output_tokens", None),
    ],
    ids=["temperature", "top_p", "prev+conversation", "unknown-model", "item-type", "role", "max-tokens"],
)
def test_validation_errors(client: OpenAI, params: dict[str, Any], param: str, code: str | None) -> None:
    body: dict[str, Any] = {"model": "echo", "input": "hi", **params}
    with pytest.raises(BadRequestError) as info:
        client.responses.create(**body)
    exc = info.value
    assert exc.status_code == 400
    error = _error(exc)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param and exc.param == param
    if code is not None:
        assert error["code"] == code == exc.code
    assert exc.request_id  # x-request-id reaches the SDK


def test_validation_error_before_streaming(client: OpenAI) -> None:
    # Before the first SSE byte an error is a plain HTTP status, also for stream=true.
    with pytest.raises(BadRequestError) as info:
        client.responses.create(model="echo", input="hi", temperature=3, stream=True)
    assert _error(info.value)["param"] == "temperature"


async def test_validation_error_async(aclient: AsyncOpenAI) -> None:
    with pytest.raises(BadRequestError) as info:
        await aclient.responses.create(model="no-such-model", input="hi")
    assert _error(info.value)["param"] == "model"


def test_invalid_json_body(server: ParleyServer) -> None:
    resp = httpx.post(server.base_url + "/responses", content=b"{not json", timeout=10,
                      headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert check_error_body(resp.json(), 400)["type"] == "invalid_request_error"


def test_unknown_url_is_openai_shaped(server: ParleyServer) -> None:
    resp = httpx.get(server.base_url + "/no/such/endpoint", timeout=10)
    assert resp.status_code == 404
    check_error_body(resp.json(), 404)


def test_body_over_limit_is_413(small_body_server: ParleyServer) -> None:
    with OpenAI(base_url=small_body_server.base_url, api_key="sk-x", max_retries=0) as sdk:
        ok = sdk.responses.create(model="echo", input="small")
        assert ok.output_text == "echo: small"
        with pytest.raises(APIStatusError) as info:
            sdk.responses.create(model="echo", input="x" * 8192)
    assert info.value.status_code == 413
    error = _error(info.value)
    assert error["code"] == "request_too_large" and "4096" in error["message"]


def test_body_over_limit_chunked(small_body_server: ParleyServer) -> None:
    # No content-length: the limit is enforced while reading the body.
    def body() -> Any:
        yield b'{"model": "echo", "input": "'
        for _ in range(10):
            yield b"x" * 1024
        yield b'"}'

    resp = httpx.post(small_body_server.base_url + "/responses", content=body(), timeout=10,
                      headers={"content-type": "application/json"})
    assert resp.status_code == 413
    check_error_body(resp.json(), 413)


def test_upstream_429_is_rate_limit_with_retry_after(client: OpenAI) -> None:
    with pytest.raises(RateLimitError) as info:
        client.responses.create(model="error-429", input="hi")
    assert info.value.status_code == 429
    assert info.value.response.headers.get("retry-after") == "7"
    error = _error(info.value)
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize("model", ["error-401", "error-403", "error-500"])
def test_upstream_failures_are_502(client: OpenAI, model: str) -> None:
    with pytest.raises(InternalServerError) as info:
        client.responses.create(model=model, input="hi")
    assert info.value.status_code == 502
    error = _error(info.value)
    text = info.value.response.text
    assert UPSTREAM_SECRET not in text and "Bearer" not in text
    if model != "error-500":
        assert error["code"] == "upstream_auth_failed"
        assert "credentials" in error["message"]


def test_upstream_failure_streaming_is_502_before_first_byte(server: ParleyServer) -> None:
    stream = post_stream(server.base_url, {"model": "error-500", "input": "hi"})
    assert stream.status == 502
    assert stream.headers["content-type"].startswith("application/json")
    check_error_body(httpx.Response(502, content=stream.body).json(), 502)


def test_upstream_unreachable_is_502(client: OpenAI) -> None:
    with pytest.raises(InternalServerError) as info:
        client.responses.create(model="unreachable", input="hi")
    assert info.value.status_code == 502
    assert _error(info.value)["code"] == "upstream_unreachable"


def test_upstream_hang_is_504(client: OpenAI) -> None:
    # The upstream answers after an hour: only this model's read timeout (read_timeout_s = 1.0) can produce the 504
    # (a server that waited would hit the SDK's own timeout: APITimeoutError, not APIStatusError).
    with pytest.raises(APIStatusError) as info:
        client.responses.create(model="hang", input="hi")
    assert info.value.status_code == 504
    assert _error(info.value)["code"] == "upstream_timeout"


def test_upstream_hang_mid_stream_fails_the_response(server: ParleyServer, client: OpenAI) -> None:
    events = post_stream(server.base_url, {"model": "hang", "input": "hi"}).events()
    check_events(events)
    failed = events[-1]
    assert failed["type"] == "response.failed"
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"]["code"] == "server_error"
    assert client.responses.retrieve(failed["response"]["id"]).status == "failed"


def test_upstream_drop_mid_stream(server: ParleyServer, client: OpenAI) -> None:
    stream = post_stream(server.base_url, {"model": "drop", "input": "one two three four five"})
    assert stream.status == 200
    events = stream.events()  # still ends with a terminal event and data: [DONE]
    check_events(events)
    types = [e["type"] for e in events]
    assert "response.output_text.delta" in types  # the drop happened after output began
    assert types[-1] == "response.failed"
    final = events[-1]["response"]
    assert final["status"] == "failed"
    assert final["error"]["code"] == "server_error" and final["error"]["message"]
    assert "Traceback" not in str(final["error"])
    # Every item opened was closed before the terminal event.
    added = sum(t == "response.output_item.added" for t in types)
    assert added == sum(t == "response.output_item.done" for t in types) == 1
    stored = client.responses.retrieve(final["id"])
    assert stored.status == "failed" and stored.error is not None
    assert stored.error.message == final["error"]["message"]


def test_upstream_drop_via_sdk(client: OpenAI) -> None:
    # The SDK yields response.failed as an ordinary event (no `error` key at the top level).
    events = list(client.responses.create(model="drop", input="one two three four", stream=True))
    assert events[-1].type == "response.failed"
    assert events[-1].response.status == "failed"


def test_upstream_drop_non_streaming_is_502(client: OpenAI) -> None:
    # The upstream promises a body and closes the connection halfway: a gateway error, not a 500.
    with pytest.raises(InternalServerError) as info:
        client.responses.create(model="drop", input="one two three")
    assert info.value.status_code == 502
    assert _error(info.value)["code"] == "upstream_error"
