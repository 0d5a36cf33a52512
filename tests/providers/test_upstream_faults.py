"""The Chat Completions provider against a broken upstream over real HTTP (parley.testing.faulty_upstream):
every wrong shape, oversized or endless reply, slow or reset connection is an UpstreamError with the right
status; errors the upstream reports are masked; each failure is logged once, at warning level."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.waiting import LIMIT_S, eventually

from parley.errors import UpstreamError
from parley.log_context import set_request_id
from parley.providers.base import ModelCall, ModelEvent, TextDelta
from parley.providers.chat_chunks import ChunkParser
from parley.providers.chat_completions import ChatCompletionsProvider, ReplyLimits
from parley.providers.http1 import Http1Pool
from parley.providers.profiles import PROFILES
from parley.providers.redact import SecretMasker
from parley.testing.faulty_upstream import RAW_SHAPES, SHAPES, FaultyUpstream

UPSTREAM_KEY = "upstream-key-Zq81Lr0"  # no credential shape: only exact masking can catch it
OTHER_KEY = "sk-other-model-key-55"  # another model's key, configured but not sent here
# Fails a test whose call never ends (a cap or timeout that does not work) instead of hanging the suite; not a
# claim on how long anything takes.
DEADLINE_S = LIMIT_S
MESSAGE = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]


@pytest.fixture(scope="module")
async def faulty() -> AsyncIterator[FaultyUpstream]:
    server = FaultyUpstream()
    await server.start()
    yield server
    await server.stop()


async def _run(faulty: FaultyUpstream, model: str, *, stream: bool, read_timeout_s: float = 5.0,
               limits: ReplyLimits | None = None) -> list[ModelEvent]:
    http = Http1Pool()
    try:
        provider = ChatCompletionsProvider(
            model_id="m", base_url=faulty.base_url, api_key=UPSTREAM_KEY, profile=PROFILES["generic"], http=http,
            connect_timeout_s=2, read_timeout_s=read_timeout_s, limits=limits, masker=SecretMasker([OTHER_KEY]),
        )
        opened = await provider.open(ModelCall(model, MESSAGE, stream=stream))
        try:
            return [e async for batch in opened for e in batch]
        finally:
            await opened.aclose()
    finally:
        await http.close()


async def _fails(faulty: FaultyUpstream, model: str, *, stream: bool, **options: Any) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        await _run(faulty, model, stream=stream, **options)
    return info.value


async def test_a_good_reply_works(faulty: FaultyUpstream) -> None:
    for stream in (True, False):
        events = await _run(faulty, "echo", stream=stream)
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "ok"


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "body"])
@pytest.mark.parametrize("shape", sorted([*SHAPES, *RAW_SHAPES]))
async def test_wrong_shapes_are_502(faulty: FaultyUpstream, shape: str, stream: bool) -> None:
    err = await _fails(faulty, f"shape-{shape}", stream=stream)
    assert (err.status, err.type) == (502, "server_error"), err
    assert err.code == "upstream_error" and "'m'" in err.message


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "body"])
async def test_output_over_the_limit_is_cut(faulty: FaultyUpstream, stream: bool) -> None:
    limits = ReplyLimits(max_bytes=64 * 1024 * 1024, max_output_chars=100_000)
    err = await _fails(faulty, "huge-0.5mb", stream=stream, limits=limits)
    assert (err.status, err.code) == (502, "upstream_reply_too_large")
    assert "100000 characters" in err.message and "max_output_chars" in err.message
    assert len(await _run(faulty, "huge-0.05mb", stream=stream, limits=limits)) > 1  # under it: fine


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "body"])
async def test_reply_over_the_byte_limit_is_cut(faulty: FaultyUpstream, stream: bool) -> None:
    limits = ReplyLimits(max_bytes=200_000, max_output_chars=10**9)
    err = await _fails(faulty, "huge-0.5mb", stream=stream, limits=limits)
    assert (err.status, err.code) == (502, "upstream_reply_too_large")
    assert "200000 bytes" in err.message and "max_upstream_reply_bytes" in err.message


@pytest.mark.parametrize(("model", "stream", "code"), [
    ("endless-text", True, "upstream_reply_too_large"),  # output cap
    ("endless-text", False, "upstream_reply_too_large"),  # byte cap (one body that never ends)
    ("endless-pings", True, "upstream_reply_too_large"),  # no output at all: the byte cap
    ("endless-pings", False, "upstream_reply_too_large"),
])
async def test_endless_replies_end(faulty: FaultyUpstream, model: str, stream: bool, code: str) -> None:
    limits = ReplyLimits(max_bytes=2_000_000, max_output_chars=500_000)
    async with asyncio.timeout(DEADLINE_S):  # the reply never ends: only a cap can end the call
        err = await _fails(faulty, model, stream=stream, limits=limits)
        assert (err.status, err.code) == (502, code)
    await eventually(lambda: model in faulty.abandoned, "Parley closed the connection (the upstream's handler ended)")


async def test_a_trickling_body_ends_at_the_read_timeout(faulty: FaultyUpstream) -> None:
    # One byte every 50 ms, forever, never trips the idle timeout; the body as a whole must still arrive in time.
    async with asyncio.timeout(DEADLINE_S):
        err = await _fails(faulty, "trickle", stream=False, read_timeout_s=0.5)
    assert (err.status, err.code) == (504, "upstream_timeout")


async def test_slow_headers_time_out(faulty: FaultyUpstream) -> None:
    err = await _fails(faulty, "slow-headers-3", stream=True, read_timeout_s=0.3)
    assert (err.status, err.code) == (504, "upstream_timeout")
    assert (await _run(faulty, "slow-headers-0.1", stream=True, read_timeout_s=60))  # under the timeout: fine


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "body"])
async def test_a_reset_connection_is_502(faulty: FaultyUpstream, stream: bool) -> None:
    err = await _fails(faulty, "reset", stream=stream)
    assert (err.status, err.code) == (502, "upstream_error")


def _assert_masked(err: UpstreamError) -> None:
    text = f"{err.message} {err.code} {err.param} {err.type} {err.headers}"
    assert UPSTREAM_KEY not in text and UPSTREAM_KEY not in err.upstream_text
    assert "****" in err.upstream_text or err.upstream_text == ""


@pytest.mark.parametrize(("model", "status", "code"), [
    ("leak-400-json", 400, "upstream_code_400"),
    ("leak-400-text", 400, "invalid_request"),
    ("leak-404-json", 400, "upstream_code_404"),
    ("leak-429-json", 429, "rate_limit_exceeded"),
    ("leak-429-text", 429, "rate_limit_exceeded"),
    ("leak-500-json", 502, "upstream_error"),
    ("leak-500-text", 502, "upstream_error"),
    ("leak-503-json", 502, "upstream_error"),
    ("leak-401-json", 502, "upstream_auth_failed"),
    ("leak-403-text", 502, "upstream_auth_failed"),
])
async def test_upstream_errors_are_masked(faulty: FaultyUpstream, model: str, status: int, code: str) -> None:
    err = await _fails(faulty, model, stream=True)
    assert (err.status, err.code) == (status, code)
    _assert_masked(err)
    upstream_status = model.split("-")[1]
    assert f"HTTP {upstream_status}" in err.message  # the client learns the upstream's status ...
    if model.endswith("-json") and code != "upstream_auth_failed":
        assert f"type upstream_type_{upstream_status}" in err.message  # ... its error type and code ...
        assert f"code upstream_code_{upstream_status}" in err.message
    if code != "upstream_auth_failed":
        assert "Incorrect API key provided: ****" in err.message  # ... and its message, masked
        assert "Bearer ****" in err.message and "key=****" in err.message
    if status == 429:
        assert err.headers == {"retry-after": "3"}


@pytest.mark.parametrize("status", [400, 401, 403])
async def test_invalid_api_key_from_upstream_is_502_not_the_clients_401(faulty: FaultyUpstream, status: int) -> None:
    # The upstream refused Parley's credentials: the server's misconfiguration, never the caller's key.
    err = await _fails(faulty, f"badkey-{status}", stream=False)
    assert (err.status, err.code, err.type) == (502, "upstream_auth_failed", "server_error")
    assert "server's credentials" in err.message and "invalid_api_key" in err.message
    _assert_masked(err)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "body"])
async def test_error_reported_in_a_200_reply_is_masked(faulty: FaultyUpstream, stream: bool) -> None:
    err = await _fails(faulty, "leak-midstream", stream=stream)
    assert (err.status, err.code) == (502, "upstream_error")
    assert "code internal" in err.message and "Incorrect API key provided: ****" in err.message
    _assert_masked(err)


def test_masker_masks_configured_keys_and_credential_shapes() -> None:
    masker = SecretMasker(["plain-secret-value", None, "abc"])  # "abc": too short to be a secret
    text = ("plain-secret-value Bearer tok.en-1 sk-proj-AbC123 gsk_abcdefgh abcd1234****wxyz "
            '{"api_key": "k1"} x-api-key: k2 password=k3 https://h/p?key=k4&a=1 abc')
    masked = masker.mask(text)
    for secret in ("plain-secret-value", "tok.en-1", "sk-proj-AbC123", "gsk_abcdefgh", "abcd1234", "k1", "k2",
                   "k3", "k4"):
        assert secret not in masked, (secret, masked)
    assert masked.endswith("&a=1 abc")
    ordinary = "This model's maximum context length is 8192 tokens; the token limit was hit."
    assert masker.mask(ordinary) == ordinary


async def test_each_failure_is_logged_once_at_warning(faulty: FaultyUpstream,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    set_request_id("req_test_upstream_log")
    for model, stream, status in [("leak-500-json", True, "500"), ("shape-choices-string", True, "-"),
                                  ("shape-list", False, "-"), ("leak-midstream", True, "200")]:
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            await _fails(faulty, model, stream=stream)
        records = [r for r in caplog.records if r.name.startswith("parley")]
        assert len(records) == 1, [r.getMessage() for r in records]
        record = records[0]
        line = record.getMessage()
        assert record.levelno == logging.WARNING and record.name == "parley.upstream"
        assert "model=m" in line and f"upstream_status={status}" in line and "latency_ms=" in line
        assert "request=req_test_upstream_log" in line
        assert UPSTREAM_KEY not in line
    set_request_id("-")


def test_logprobs_without_alternatives_are_not_malformed() -> None:
    # `top_logprobs` absent, null or empty (top_logprobs: 0) is a well-formed reply.
    parser = ChunkParser(PROFILES["generic"], 1000)
    for top in ({}, {"top_logprobs": None}, {"top_logprobs": []}):
        entry = {"token": "hi", "logprob": -0.5, **top}
        chunk = {"choices": [{"index": 0, "delta": {"content": "hi"}, "logprobs": {"content": [entry]}}]}
        [delta] = parser.events(chunk)
        assert isinstance(delta, TextDelta) and delta.logprobs is not None
        assert delta.logprobs[0]["top_logprobs"] == [] and delta.logprobs[0]["bytes"] == [104, 105]
