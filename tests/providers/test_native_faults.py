"""The native providers against their fake upstreams over real HTTP: authentication as each API wants it, and
every failure mapped through upstream_http.py (rate limits with retry-after, overload, refused keys, dropped
connections, silence, errors mid-stream, replies past the caps), each logged once."""

from __future__ import annotations

import asyncio
import gzip
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from parley.config import ModelConfig
from parley.errors import UpstreamError
from parley.providers.base import Finish, ModelCall, ModelEvent, TextDelta, Usage
from parley.providers.chat_completions import ReplyLimits
from parley.providers.http1 import Http1Pool
from parley.providers.redact import SecretMasker
from parley.providers.registry import UpstreamPolicy, build_provider
from parley.testing.fake_anthropic import FakeAnthropic
from parley.testing.fake_gemini import FakeGemini
from parley.testing.fake_responses_upstream import FakeResponsesUpstream
from parley.testing.fake_server import FakeServer

KEY = "sk-upstream-fault-key-1234"


async def _run(fake: FakeServer | RawUpstream, kind: str, model: str, *, stream: bool = True, key: str = KEY,
               limits: ReplyLimits | None = None, **config: Any) -> list[ModelEvent]:
    cfg = ModelConfig(id=f"{kind}-{model}", provider=kind, base_url=fake.base_url,  # type: ignore[union-attr]
                      upstream_model=model, api_key=key, read_timeout_s=1.0, **config)
    http = Http1Pool()
    try:
        policy = UpstreamPolicy(limits or ReplyLimits(), SecretMasker([key]))
        provider = build_provider(cfg, http, policy=policy)
        opened = await provider.open(ModelCall(model, [{"id": "m", "type": "message", "role": "user",
                                                        "content": [{"type": "input_text", "text": "hello"}]}],
                                               stream=stream))
        try:
            return [e async for batch in opened for e in batch]
        finally:
            await opened.aclose()
    finally:
        await http.close()


async def test_each_kind_authenticates_as_its_api_says(
    fake_anthropic: FakeAnthropic, fake_gemini: FakeGemini, fake_responses: FakeResponsesUpstream
) -> None:
    await _run(fake_anthropic, "anthropic", "echo", profile="anthropic")
    assert fake_anthropic.headers[-1]["x-api-key"] == KEY and fake_anthropic.headers[-1]["anthropic-version"]
    assert "authorization" not in fake_anthropic.headers[-1]
    await _run(fake_gemini, "gemini", "echo")
    assert fake_gemini.headers[-1]["x-goog-api-key"] == KEY
    assert fake_gemini.paths[-1] == "/v1beta/models/echo:streamGenerateContent?alt=sse"
    await _run(fake_responses, "openai_responses", "echo", stream=False)
    assert fake_responses.headers[-1]["authorization"] == f"Bearer {KEY}"
    await _run(fake_responses, "openai_responses", "echo", profile="azure")
    assert fake_responses.headers[-1]["api-key"] == KEY and "authorization" not in fake_responses.headers[-1]
    assert fake_responses.paths[-1] == "/v1/responses?api-version=preview"


@pytest.mark.parametrize("stream", [True, False])
async def test_every_kind_reads_text_both_ways(
    fake_anthropic: FakeAnthropic, fake_gemini: FakeGemini, fake_responses: FakeResponsesUpstream, stream: bool
) -> None:
    for fake, kind in ((fake_anthropic, "anthropic"), (fake_gemini, "gemini"), (fake_responses, "openai_responses")):
        events = await _run(fake, kind, "echo", stream=stream)
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "echo: hello"
        assert events[-1] == Finish("stop")


async def test_rate_limits_keep_retry_after(fake_anthropic: FakeAnthropic, fake_gemini: FakeGemini) -> None:
    for fake, kind in ((fake_anthropic, "anthropic"), (fake_gemini, "gemini")):
        with pytest.raises(UpstreamError) as info:
            await _run(fake, kind, "error-429")
        assert (info.value.status, info.value.code) == (429, "rate_limit_exceeded")
        assert info.value.headers == {"retry-after": "7"}  # Gemini says it in a RetryInfo detail


async def test_anthropic_overload_is_a_503_to_retry(fake_anthropic: FakeAnthropic) -> None:
    with pytest.raises(UpstreamError) as info:
        await _run(fake_anthropic, "anthropic", "error-529")
    assert (info.value.status, info.value.code, info.value.headers) == (503, "upstream_overloaded",
                                                                        {"retry-after": "7"})


async def test_a_refused_gemini_key_is_the_servers_configuration(fake_gemini: FakeGemini) -> None:
    with pytest.raises(UpstreamError) as info:
        await _run(fake_gemini, "gemini", "echo", key="bad-key")
    assert (info.value.status, info.value.code) == (502, "upstream_auth_failed")


@pytest.mark.parametrize("kind", ["anthropic", "openai_responses"])
async def test_errors_mid_stream(kind: str, fake_anthropic: FakeAnthropic,
                                 fake_responses: FakeResponsesUpstream, caplog: pytest.LogCaptureFixture) -> None:
    fake = fake_anthropic if kind == "anthropic" else fake_responses
    with caplog.at_level(logging.WARNING, "parley.upstream"), pytest.raises(UpstreamError) as info:
        await _run(fake, kind, "error-midstream")
    assert info.value.status == 502 and "mid-stream" in info.value.message
    assert len([r for r in caplog.records if "upstream failure" in r.getMessage()]) == 1


@pytest.mark.parametrize("stream", [True, False])
async def test_dropped_and_silent_upstreams(fake_anthropic: FakeAnthropic, fake_gemini: FakeGemini,
                                            fake_responses: FakeResponsesUpstream, stream: bool) -> None:
    for fake, kind in ((fake_anthropic, "anthropic"), (fake_gemini, "gemini"), (fake_responses, "openai_responses")):
        with pytest.raises(UpstreamError) as dropped:
            await _run(fake, kind, "drop", stream=stream)
        assert dropped.value.status == 502, kind
        with pytest.raises(UpstreamError) as silent:
            await _run(fake, kind, "hang", stream=stream)
        assert (silent.value.status, silent.value.code) == (504, "upstream_timeout"), kind


async def test_replies_past_the_caps_are_cut(fake_anthropic: FakeAnthropic, fake_gemini: FakeGemini) -> None:
    with pytest.raises(UpstreamError) as chars:
        await _run(fake_anthropic, "anthropic", "fixed", limits=ReplyLimits(max_output_chars=20))
    assert chars.value.code == "upstream_reply_too_large"
    with pytest.raises(UpstreamError) as size:
        await _run(fake_gemini, "gemini", "fixed", limits=ReplyLimits(max_bytes=300))
    assert size.value.code == "upstream_reply_too_large"


class RawUpstream:
    """An upstream over a real loopback socket that answers each request with the raw bytes a test queued (an HTTP
    response exactly as written: any framing, any body), then closes the connection if the test says so."""

    def __init__(self) -> None:
        self.replies: list[tuple[bytes, bool]] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                raw, close = self.replies.pop(0)
                writer.write(raw)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def raw() -> AsyncIterator[RawUpstream]:
    upstream = RawUpstream()
    await upstream.start()
    yield upstream
    assert upstream.server is not None
    upstream.server.close()


def _reply(body: bytes, content_type: str = "application/json") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s" % (
        content_type.encode(), len(body), body)


def _sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(event) + b"\n\n" for event in events)


def _queue_item(raw: RawUpstream, item: dict[str, Any], stream: bool, *deltas: dict[str, Any]) -> None:
    """A completed native reply holding `item`: streamed (added without content, `deltas`, done) or whole."""
    if stream:
        raw.replies.append((_reply(_sse(
            {"type": "response.output_item.added", "output_index": 0, "item": {**item, "content": []}},
            *deltas,
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {"type": "response.completed", "response": {"status": "completed", "output": []}},
        ), "text/event-stream"), False))
    else:
        raw.replies.append((_reply(orjson.dumps({"status": "completed", "output": [item]})), False))


# Output items whose parts are not lists: each a 502 naming the wrong shape (was a TypeError, a 500).
_ITEMS_NOT_LISTS = [
    {"type": "message", "role": "assistant", "content": 5},
    {"type": "message", "role": "assistant", "content": "text"},
    {"type": "reasoning", "summary": 5},
    {"type": "reasoning", "summary": [], "content": {"text": "x"}},
]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "body"])
@pytest.mark.parametrize("item", _ITEMS_NOT_LISTS, ids=["content-number", "content-string", "summary-number",
                                                          "content-object"])
async def test_responses_items_of_the_wrong_shape_are_502(raw: RawUpstream, item: dict[str, Any],
                                                          stream: bool) -> None:
    _queue_item(raw, item, stream)
    with pytest.raises(UpstreamError) as info:
        await _run(raw, "openai_responses", "m", stream=stream)
    assert (info.value.status, info.value.code) == (502, "upstream_error")
    assert "wrong shape" in info.value.message


async def test_a_reply_ended_by_closing_the_connection(raw: RawUpstream) -> None:
    """An upstream that frames its reply by closing the connection (no content-length, no chunks: HTTP/1.0
    servers, SSE servers that close when done) is read whole; a JSON body cut by the close is invalid JSON."""
    head = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-type: %s\r\n\r\n"
    chunks: list[dict[str, Any]] = [
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "hel"}]}}]},
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}, "finishReason": "STOP"}],
         "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2}}]
    raw.replies.append((head % b"text/event-stream" + _sse(*chunks), True))
    events = await _run(raw, "gemini", "m")
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "hello"
    assert isinstance(events[-1], Finish) and events[-1].reason == "stop"
    body = orjson.dumps({"status": "completed", "output": [
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hello"}]}]})
    raw.replies.append((head % b"application/json" + body, True))
    events = await _run(raw, "openai_responses", "m", stream=False)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "hello"
    raw.replies.append((head % b"application/json" + body[:-5], True))
    with pytest.raises(UpstreamError) as info:
        await _run(raw, "openai_responses", "m", stream=False)
    assert info.value.status == 502 and "invalid JSON" in info.value.message


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "body"])
@pytest.mark.parametrize("kind", ["chat_completions", "openai_responses", "anthropic", "gemini"])
async def test_a_compressed_reply_is_named(raw: RawUpstream, kind: str, stream: bool) -> None:
    """A server that compresses its reply although Parley asked for none: a 502 saying so (was "invalid JSON" or,
    streamed, "ended the stream early")."""
    body = gzip.compress(b'{"anything": "at all"}')
    raw.replies.append((b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
                        b"content-length: %d\r\n\r\n%s" % (len(body), body), False))
    with pytest.raises(UpstreamError) as info:
        await _run(raw, kind, "m", stream=stream)
    assert (info.value.status, info.value.code) == (502, "upstream_error")
    assert "content-encoding gzip" in info.value.message


_MESSAGE_ITEM = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi"}]}


@pytest.mark.parametrize(("stream", "response"), [
    (False, {}),  # not a Response at all
    (False, {"status": "completed"}),  # no output
    (False, {"status": "in_progress", "output": [_MESSAGE_ITEM]}),  # not finished
    (False, {"status": "queued", "output": []}),
    (False, {"status": "cancelled", "output": [_MESSAGE_ITEM]}),
    (True, {"status": "in_progress"}),
    (True, {"status": ["completed"]}),
], ids=["empty", "no-output", "in-progress", "queued", "cancelled", "stream-in-progress", "stream-status-list"])
async def test_a_responses_reply_that_did_not_end_is_502(raw: RawUpstream, stream: bool,
                                                         response: dict[str, Any]) -> None:
    """A reply whose status is not an end (completed, incomplete, failed) or that has no output is not a finished
    response: a 502, not a `completed` response with whatever output it had (was: completed, empty)."""
    if stream:
        raw.replies.append((_reply(_sse(
            {"type": "response.output_item.added", "output_index": 0, "item": _MESSAGE_ITEM},
            {"type": "response.output_item.done", "output_index": 0, "item": _MESSAGE_ITEM},
            {"type": "response.completed", "response": response}), "text/event-stream"), False))
    else:
        raw.replies.append((_reply(orjson.dumps(response)), False))
    with pytest.raises(UpstreamError) as info:
        await _run(raw, "openai_responses", "m", stream=stream)
    assert (info.value.status, info.value.code) == (502, "upstream_error")
    assert "wrong shape" in info.value.message


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "body"])
@pytest.mark.parametrize("logprobs", [[1, 2], {"token": "hi"}, [{"token": 5, "logprob": -0.1}],
                                      [{"token": "hi", "logprob": -0.1, "top_logprobs": [{"token": "hi"}]}]],
                         ids=["numbers", "object", "token-number", "top-without-logprob"])
async def test_responses_logprobs_of_the_wrong_shape_are_502(raw: RawUpstream, logprobs: Any, stream: bool) -> None:
    """Logprobs are checked as the Chat Completions ones are (they were relayed to the client and stored as sent)."""
    part = {"type": "output_text", "text": "hi", "logprobs": logprobs}
    item = {"type": "message", "role": "assistant", "content": [part]}
    _queue_item(raw, item, stream,
                {"type": "response.output_text.delta", "output_index": 0, "delta": "hi", "logprobs": logprobs})
    with pytest.raises(UpstreamError) as info:
        await _run(raw, "openai_responses", "m", stream=stream)
    assert (info.value.status, info.value.code) == (502, "upstream_error")
    assert "wrong shape" in info.value.message and "logprob" in info.value.message


async def test_responses_logprobs_are_kept(raw: RawUpstream) -> None:
    entry = {"token": "hi", "bytes": [104, 105], "logprob": -0.5,
             "top_logprobs": [{"token": "hi", "bytes": [104, 105], "logprob": -0.5}]}
    item = {"type": "message", "role": "assistant",
            "content": [{"type": "output_text", "text": "hi", "logprobs": [entry]}]}
    raw.replies.append((_reply(orjson.dumps({"status": "completed", "output": [item]})), False))
    events = await _run(raw, "openai_responses", "m", stream=False)
    assert [e.logprobs for e in events if isinstance(e, TextDelta)] == [[entry]]


@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 abc\r\n\r\n",  # no status code
    b'HTTP/1.1 200 OK\r\ncontent-length: 14\r\ncontent-length: 3\r\n\r\n{"status": 1}',  # two lengths
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nZZZ\r\n",  # a broken chunk size
], ids=["status-line", "two-lengths", "chunk-size"])
async def test_an_invalid_http_reply_is_named(raw: RawUpstream, reply: bytes) -> None:
    """Not HTTP: a 502 saying so (was "closed the connection before finishing", which it had not)."""
    raw.replies.append((reply, False))
    with pytest.raises(UpstreamError) as info:
        await _run(raw, "openai_responses", "m", stream=False)
    assert (info.value.status, info.value.code) == (502, "upstream_error")
    assert "invalid HTTP response" in info.value.message


def _held_open(events: bytes) -> bytes:
    """A chunked stream of `events` whose end never comes (no last chunk, the connection kept open)."""
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (
        len(events), events)


@pytest.mark.parametrize("kind", ["openai_responses", "anthropic"])
async def test_a_stream_is_done_at_its_terminal_event(raw: RawUpstream, kind: str) -> None:
    """What follows response.completed or message_stop is not waited for: an upstream that holds the stream open
    after it (never ends the chunked body) gave the client response.failed after the read timeout, its whole
    answer thrown away."""
    if kind == "openai_responses":
        started = {**_MESSAGE_ITEM, "content": []}
        events = _sse({"type": "response.output_item.added", "output_index": 0, "item": started},
                      {"type": "response.output_text.delta", "output_index": 0, "delta": "hi"},
                      {"type": "response.output_item.done", "output_index": 0, "item": _MESSAGE_ITEM},
                      {"type": "response.completed", "response": {"status": "completed", "output": [],
                                                                  "usage": {"input_tokens": 3, "output_tokens": 1}}})
    else:
        events = _sse({"type": "message_start", "message": {"usage": {"input_tokens": 3, "output_tokens": 0}}},
                      {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                      {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
                      {"type": "content_block_stop", "index": 0},
                      {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
                      {"type": "message_stop"})
    raw.replies.append((_held_open(events), False))
    out = await _run(raw, kind, "m", profile=kind if kind == "anthropic" else "generic")
    assert "".join(e.text for e in out if isinstance(e, TextDelta)) == "hi"
    assert isinstance(out[-1], Finish) and out[-1].reason == "stop"
    assert [e for e in out if isinstance(e, Usage)] == [Usage(input_tokens=3, output_tokens=1)]


# A finished stream of each kind, in its own wire format: the text "hel" then "lo".
_TWO_DELTAS: dict[str, tuple[dict[str, Any], ...]] = {
    "chat_completions": (
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "hel"}}]},
        {"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]}),
    "openai_responses": (
        {"type": "response.output_item.added", "output_index": 0, "item": {**_MESSAGE_ITEM, "content": []}},
        {"type": "response.output_text.delta", "output_index": 0, "delta": "hel"},
        {"type": "response.output_text.delta", "output_index": 0, "delta": "lo"},
        {"type": "response.output_item.done", "output_index": 0, "item": _MESSAGE_ITEM},
        {"type": "response.completed", "response": {"status": "completed", "output": []}}),
    "anthropic": (
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hel"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}},
        {"type": "message_stop"}),
    "gemini": (
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "hel"}]}}]},
        {"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}, "finishReason": "STOP"}]}),
}


@pytest.mark.parametrize("kind", list(_TWO_DELTAS))
async def test_a_leading_bom_is_dropped(raw: RawUpstream, kind: str) -> None:
    """A UTF-8 BOM before a stream's first line is not part of it (WHATWG HTML, "Interpreting an event stream"):
    its first event is read (was: the line `\\ufeffdata: ...` was not a data line, and the first text silently
    lost)."""
    events = _sse(*_TWO_DELTAS[kind]) + (b"data: [DONE]\n\n" if kind == "chat_completions" else b"")
    raw.replies.append((_reply(b"\xef\xbb\xbf" + events, "text/event-stream"), False))
    out = await _run(raw, kind, "m", profile=kind if kind == "anthropic" else "generic")
    assert "".join(e.text for e in out if isinstance(e, TextDelta)) == "hello"
    assert isinstance(out[-1], Finish) and out[-1].reason == "stop"
