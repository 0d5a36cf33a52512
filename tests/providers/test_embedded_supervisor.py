"""The embedded model's supervisor with a fake child (tests/providers/fake_embedded_child.py), no real model:
a child that segfaults or exits at start-up, or crashes at its first request, is restarted a bounded number
of times, then given up on with one error naming the cause and its last output; requests get a 503 saying
why. Also: what the child is sent (the embedded defaults, always streamed) and its output tail."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from parley.config import EmbeddedConfig
from parley.errors import ModelUnavailable
from parley.providers.base import ModelCall, ModelEvent
from parley.providers.embedded import EmbeddedServer
from parley.providers.embedded_launch import LOGPROBS_ALIAS_SUFFIX, OutputTail, child_config, describe_exit
from parley.providers.embedded_provider import EmbeddedProvider, child_call
from parley.providers.http1 import Http1Pool

FAKE_CHILD = Path(__file__).parent / "fake_embedded_child.py"
MODEL = "fake-embedded"
MESSAGE = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]


def fake_config(mode: str, *extra: str, **fields: Any) -> EmbeddedConfig:
    options: dict[str, Any] = {"model_id": MODEL, "model_path": FAKE_CHILD, "restart_backoff_s": 0.01,
                               "ready_timeout_s": 20.0, **fields}
    return EmbeddedConfig(server_command=[sys.executable, str(FAKE_CHILD), mode, *extra], **options)


@pytest.fixture
async def http() -> AsyncIterator[Http1Pool]:
    pool = Http1Pool()
    yield pool
    await pool.close()


async def _supervised(cfg: EmbeddedConfig, http: Http1Pool) -> EmbeddedServer:
    server = EmbeddedServer(cfg, FAKE_CHILD, http)
    server.start()
    return server


async def _events(provider: EmbeddedProvider, call: ModelCall) -> list[ModelEvent]:
    stream = await provider.open(call)
    try:
        return [event async for batch in stream for event in batch]
    finally:
        await stream.aclose()


def _errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "parley.embedded" and r.levelno >= logging.ERROR]


async def test_segfaulting_child_is_given_up_on_with_one_error(
    http: Http1Pool, caplog: pytest.LogCaptureFixture
) -> None:
    server = await _supervised(fake_config("segfault", max_failures=3), http)
    try:
        with pytest.raises(ModelUnavailable) as info:
            await server.ready()
        err = info.value
        assert (err.status, err.code, err.type, err.param) == (503, "model_unavailable", "server_error", "model")
        assert "unavailable" in err.message and "SIGSEGV" in err.message and "3 times in a row" in err.message
        assert server.status.state == "unavailable"
        assert server.restarts == 3
        # Given up for good: later requests are refused at once, and nothing is restarted any more.
        with pytest.raises(ModelUnavailable):
            await server.ready()
        assert server.restarts == 3
        [error] = _errors(caplog)
        text = error.getMessage()
        assert "signal SIGSEGV (11)" in text and "will not be restarted" in text
        assert "fake child: illegal memory access in llama_decode" in text  # the child's last stderr lines
        restarts = [r for r in caplog.records if r.name == "parley.embedded" and r.levelno == logging.WARNING]
        assert len(restarts) == 2 and "restarting" in restarts[0].getMessage()
    finally:
        await server.stop()


async def test_child_exiting_at_start_up_names_its_error(http: Http1Pool, caplog: pytest.LogCaptureFixture) -> None:
    server = await _supervised(fake_config("exit", max_failures=2), http)
    try:
        with pytest.raises(ModelUnavailable) as info:
            await server.ready()
        assert "exited with code 1" in info.value.message
        assert "unknown model architecture" in info.value.message  # its last line, in the 503 itself
        [error] = _errors(caplog)
        assert "fake child: loading" in error.getMessage()
        assert server.status.state == "unavailable" and server.restarts == 2
    finally:
        await server.stop()


async def test_child_crashing_at_first_use_is_a_503_then_given_up_on(
    http: Http1Pool, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = fake_config("crash-on-use", max_failures=2)
    server = await _supervised(cfg, http)
    provider = EmbeddedProvider(server, http, cfg)
    try:
        with pytest.raises(ModelUnavailable) as info:
            await _events(provider, ModelCall(MODEL, MESSAGE))
        assert "crashed while answering" in info.value.message and "SIGSEGV" in info.value.message
        with pytest.raises(ModelUnavailable):
            await _events(provider, ModelCall(MODEL, MESSAGE))  # the restarted child crashes the same way
        with pytest.raises(ModelUnavailable) as info:
            await _events(provider, ModelCall(MODEL, MESSAGE))
        assert "is unavailable" in info.value.message and "before answering a request" in info.value.message
        assert server.status.state == "unavailable"
        [error] = _errors(caplog)
        assert "crashing at the first decode" in error.getMessage()
    finally:
        await server.stop()


async def test_child_that_never_serves_is_a_failed_start(http: Http1Pool) -> None:
    server = await _supervised(fake_config("hang", max_failures=1, ready_timeout_s=0.5), http)
    try:
        await _until(lambda: server.status.state == "unavailable")
        with pytest.raises(ModelUnavailable) as info:
            await server.ready()
        assert "did not answer within 0.5 s" in info.value.message
    finally:
        await server.stop()


async def test_child_that_answered_is_restarted_after_a_crash(http: Http1Pool, tmp_path: Path) -> None:
    cfg = fake_config("serve", "--record", str(tmp_path), max_failures=1)  # one crash before answering: given up
    server = await _supervised(cfg, http)
    provider = EmbeddedProvider(server, http, cfg)
    try:
        assert server.status.state in ("starting", "not_started")
        await _events(provider, ModelCall(MODEL, MESSAGE))
        assert server.status.state == "ready"
        first = server.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await _until(lambda: server.pid != first)
        # It had answered a request: one crash of a working child is restarted even with max_failures = 1.
        await _events(provider, ModelCall(MODEL, MESSAGE))
        assert server.pid != first and server.status.state == "ready" and server.restarts == 1
    finally:
        await server.stop()
    assert server.status.state == "stopped"


async def test_the_child_gets_the_embedded_defaults_and_always_streams(http: Http1Pool, tmp_path: Path) -> None:
    cfg = fake_config("serve", "--record", str(tmp_path))
    server = await _supervised(cfg, http)
    provider = EmbeddedProvider(server, http, cfg)
    try:
        await _events(provider, ModelCall(MODEL, MESSAGE, stream=False))
        await _events(provider, ModelCall(MODEL, MESSAGE, stream=False, max_output_tokens=7, temperature=0.0,
                                          top_p=0.5, logprobs=True, top_logprobs=2))
    finally:
        await server.stop()
    defaults, chosen = (json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines())
    assert defaults["stream"] is True  # a non-streaming response is folded from a stream (cancellable upstream)
    assert (defaults["model"], defaults["max_tokens"], defaults["temperature"], defaults["top_p"]) == (
        MODEL, 1024, 0.2, 0.9)
    assert "logprobs" not in defaults
    assert (chosen["model"], chosen["max_tokens"], chosen["temperature"], chosen["top_p"]) == (
        MODEL + LOGPROBS_ALIAS_SUFFIX, 7, 0.0, 0.5)
    assert chosen["logprobs"] is True and chosen["top_logprobs"] == 2


async def test_closing_the_stream_disconnects_the_child(http: Http1Pool, tmp_path: Path) -> None:
    cfg = fake_config("serve", "--record", str(tmp_path))
    server = await _supervised(cfg, http)
    provider = EmbeddedProvider(server, http, cfg)
    forever = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "forever"}]}]
    try:
        stream = await provider.open(ModelCall(MODEL, forever, stream=False))
        async for _ in stream:
            break
        await stream.aclose()
        await _wait_for(tmp_path / "disconnects")
    finally:
        await server.stop()


async def _wait_for(path: Path) -> None:
    await _until(path.exists)


async def _until(condition: Callable[[], bool], limit_s: float = 60.0) -> None:
    """Wait for an event (not a duration): the limit only ends a test that would otherwise hang."""
    for _ in range(int(limit_s / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition never became true")


def test_child_call_keeps_what_the_request_set() -> None:
    cfg = EmbeddedConfig(max_output_tokens=100, temperature=0.3, top_p=0.8)
    call = child_call(ModelCall(MODEL, MESSAGE, stream=False), cfg)
    assert (call.max_output_tokens, call.temperature, call.top_p, call.stream) == (100, 0.3, 0.8, True)
    assert call.upstream_model == MODEL
    kept = child_call(ModelCall(MODEL, MESSAGE, max_output_tokens=5, temperature=0.0, top_p=1.0), cfg)
    assert (kept.max_output_tokens, kept.temperature, kept.top_p) == (5, 0.0, 1.0)


def test_child_config_keeps_logits_only_for_the_logprobs_alias() -> None:
    config = child_config(EmbeddedConfig(model_id="m", context_window=4096), Path("/m.gguf"), 1234)
    plain, logprobs = config["models"]
    assert (plain["model_alias"], plain["logits_all"], plain["n_ctx"]) == ("m", False, 4096)
    assert (logprobs["model_alias"], logprobs["logits_all"]) == ("m" + LOGPROBS_ALIAS_SUFFIX, True)
    assert plain["type_k"] == plain["type_v"] == 1 and plain["flash_attn"] is True  # f16 KV cache
    assert config["interrupt_requests"] is False and config["port"] == 1234
    quantized = child_config(EmbeddedConfig(kv_cache_type="q8_0"), Path("/m.gguf"), 1234)["models"][0]
    assert quantized["type_k"] == quantized["type_v"] == 8


def test_exit_statuses_in_words() -> None:
    assert describe_exit(-signal.SIGSEGV) == "was killed by signal SIGSEGV (11)"
    assert describe_exit(-signal.SIGILL) == "was killed by signal SIGILL (4)"
    assert describe_exit(2) == "exited with code 2"


async def test_output_tail_is_bounded() -> None:
    tail = OutputTail(3)
    reader = asyncio.StreamReader()
    reader.feed_data(b"one\ntwo\n\nthree\nfour\n" + b"x" * 5000 + b"\nlast without newline")
    reader.feed_eof()
    await tail.follow(reader)
    lines = tail.lines()
    assert lines[0] == "four" and lines[2] == "last without newline"
    assert lines[1].startswith("xxx") and len(lines[1]) <= 401
