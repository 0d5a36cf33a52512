"""JSON log lines (log_format = "json"): their shape, the access lines' fields, and that no prompt, output or key
reaches them unless log_content asks for the content (never for a key)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from parley.config import EmbeddedConfig, ModelConfig, Settings
from parley.log_context import set_request_id
from parley.log_json import JsonFormatter
from parley.log_setup import RequestIdFilter
from parley.store.sql import SqlStore
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import in_process

PROMPT = "my secret plan is tangerine"


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """Every `parley` log line of the test, formatted as JSON."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("parley")
    saved = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)


def test_a_line_is_one_json_object(lines: io.StringIO) -> None:
    set_request_id("req_test")
    logging.getLogger("parley.test").warning("hello %s", "world", extra={"fields": {"model": "m", "level": "x"}})
    line = json.loads(lines.getvalue())
    assert set(line) == {"time", "level", "logger", "message", "request_id", "model"}
    assert (line["level"], line["logger"], line["message"], line["request_id"], line["model"]) == (
        "warning", "parley.test", "hello world", "req_test", "m")  # a field never replaces the base keys
    assert line["time"].endswith("+00:00")


async def _serve(tmp_path: Path, log_content: bool) -> tuple[str, str, str]:
    """One request with a key and a prompt through an app with access lines on: (its key, its request id,
    the answer's text)."""
    upstream = FakeUpstream()
    await upstream.start()
    settings = Settings(data_dir=tmp_path, models=[ModelConfig(id="echo", base_url=upstream.base_url)],
                        embedded=EmbeddedConfig(enabled=False), auth="keys", access_log=True,
                        log_content=log_content)
    try:
        async with in_process(settings) as parley:
            store: SqlStore = parley.app.state.runtime.store
            _, key = await store.create_key("team", "team")
            resp = await parley.http.post("/v1/responses", headers={"authorization": f"Bearer {key}"},
                                          json={"model": "echo", "input": PROMPT, "instructions": "be brief"})
            assert resp.status_code == 200
            text = resp.json()["output"][0]["content"][0]["text"]
            return key, resp.headers["x-request-id"], text
    finally:
        await upstream.stop()


async def test_access_lines_carry_fields_but_no_content_or_key(tmp_path: Path, lines: io.StringIO) -> None:
    key, request_id, answer = await _serve(tmp_path, log_content=False)
    records = [json.loads(line) for line in lines.getvalue().splitlines()]
    access = [r for r in records if r["logger"] == "parley.access" and r["request_id"] == request_id]
    http = next(r for r in access if "route" in r)
    assert (http["method"], http["route"], http["status"]) == ("POST", "/v1/responses", 200)
    assert http["duration_ms"] >= 0
    response = next(r for r in access if "response_id" in r)
    assert (response["project"], response["model"], response["status"]) == ("team", "echo", "completed")
    assert response["latency_ms"] >= 0 and response["input_tokens"] > 0 and response["api_key_id"]
    text = lines.getvalue()
    for secret in (key, PROMPT, "tangerine", answer, "be brief"):
        assert secret not in text


async def test_log_content_adds_instructions_and_output_never_the_key(tmp_path: Path, lines: io.StringIO) -> None:
    key, request_id, answer = await _serve(tmp_path, log_content=True)
    records = [json.loads(line) for line in lines.getvalue().splitlines()]
    response = next(r for r in records if r.get("response_id") and r["request_id"] == request_id)
    assert (response["instructions"], response["output_text"]) == ("be brief", answer)
    assert key not in lines.getvalue()
