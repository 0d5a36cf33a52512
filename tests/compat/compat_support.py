"""Shared helpers of the compat suite: run a real `parley serve` process, read raw SSE, validate wire shapes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from openai.types.responses import Response, ResponseStreamEvent
from prometheus_client.parser import text_string_to_metric_families
from pydantic import TypeAdapter

STREAM_EVENT = TypeAdapter(ResponseStreamEvent)

# api-surface.md §5.1: keys a Response must always carry (the SDK types most of them as optional,
# so pydantic alone would not notice a missing one).
RESPONSE_KEYS = frozenset(
    {
        "id", "object", "created_at", "completed_at", "status", "error", "incomplete_details", "model",
        "instructions", "output", "usage", "previous_response_id", "conversation", "tools", "tool_choice",
        "text", "reasoning", "parallel_tool_calls", "temperature", "top_p", "top_logprobs",
        "max_output_tokens", "max_tool_calls", "truncation", "store", "background", "service_tier",
        "metadata", "safety_identifier", "prompt_cache_key", "user", "prompt",
    }
)
USAGE_KEYS = frozenset({"input_tokens", "input_tokens_details", "output_tokens", "output_tokens_details",
                        "total_tokens"})
ERROR_KEYS = frozenset({"message", "type", "param", "code"})
# The upstream key configured for the `error-401` model: it must never come back to a caller.
UPSTREAM_SECRET = "sk-upstream-secret-do-not-leak"
TERMINAL_TYPES = frozenset({"response.completed", "response.incomplete", "response.failed"})


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _parley_command() -> list[str]:
    script = Path(sys.executable).parent / "parley"
    if script.exists():
        return [str(script)]
    found = shutil.which("parley")
    return [found] if found else [sys.executable, "-m", "parley.cli.main"]


def _clean_env() -> dict[str, str]:
    # The developer's PARLEY_* settings must not leak into the servers under test.
    return {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}


def run_parley(*args: str) -> subprocess.CompletedProcess[str]:
    """`parley <args>` as a child process, without the developer's PARLEY_* settings."""
    return subprocess.run([*_parley_command(), *args], capture_output=True, text=True, env=_clean_env(), timeout=60)


def create_key(data_dir: Path, project: str) -> str:
    out = subprocess.run(
        [*_parley_command(), "keys", "create", "--project", project, "--data-dir", str(data_dir)],
        capture_output=True, text=True, env=_clean_env(), timeout=60,
    )
    if out.returncode != 0:
        raise RuntimeError(f"parley keys create failed ({out.returncode}):\n{out.stderr}")
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["project"] == project
    key: str = record["key"]
    return key


@dataclass
class ParleyServer:
    """A `parley serve` child process on a free loopback port."""

    workdir: Path
    config: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_level: str = "warning"

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root + "/v1"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 30.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "parley.toml"
        config_path.write_text(self.config)
        cmd = [*_parley_command(), "serve", "--port", str(self.port), "--data-dir", str(self.data_dir),
               "--config", str(config_path), "--log-level", self.log_level]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_clean_env())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"parley serve exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.root + "/health", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"parley serve did not answer /health within {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@dataclass(frozen=True)
class KeyedServer:
    """A server started with keys for two projects already in its data dir."""

    server: ParleyServer
    key_a: str
    key_b: str


@contextlib.contextmanager
def keyed_server(workdir: Path, config: str) -> Iterator[KeyedServer]:
    """A server with `config`, its data dir holding keys for projects A and B before it starts; stopped after."""
    server = ParleyServer(workdir, config)
    key_a = create_key(server.data_dir, "project-a")
    key_b = create_key(server.data_dir, "project-b")
    server.start()
    try:
        yield KeyedServer(server, key_a, key_b)
    finally:
        server.stop()


def model_toml(model_id: str, base_url: str, upstream_model: str, **extra: Any) -> str:
    lines = ["[[models]]", f'id = "{model_id}"', f'base_url = "{base_url}"', f'upstream_model = "{upstream_model}"']
    for key, value in extra.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


# -- wire checks ---------------------------------------------------------------------------------------


def check_response(raw: dict[str, Any]) -> Response:
    """Strict: every §5.1 key present, no `output_text` on the wire, and the SDK type validates."""
    missing = RESPONSE_KEYS - raw.keys()
    assert not missing, f"Response is missing keys {sorted(missing)}"
    assert "output_text" not in raw, "output_text is computed by the SDK, it must not be sent"
    assert raw["object"] == "response"
    assert isinstance(raw["created_at"], int)
    if raw["usage"] is not None:
        assert USAGE_KEYS <= raw["usage"].keys()
        assert raw["usage"]["total_tokens"] == raw["usage"]["input_tokens"] + raw["usage"]["output_tokens"]
    for item in raw["output"]:
        assert item.get("id"), f"output item without id: {item}"
    return Response.model_validate(raw)


def check_error_body(body: dict[str, Any], status: int) -> dict[str, Any]:
    """`{"error": {"message","type","param","code"}}`, nothing else, and no traceback anywhere."""
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == ERROR_KEYS, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    text = json.dumps(body)
    assert "Traceback" not in text and 'File "' not in text, text
    if status >= 500:
        assert error["type"] == "server_error"
    return error


@dataclass
class RawStream:
    """A raw SSE response read with httpx: its chunks as received and the parsed events."""

    status: int
    headers: httpx.Headers
    chunks: list[bytes]

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def blocks(self) -> list[bytes]:
        body = self.body
        assert body.endswith(b"\n\n"), body[-200:]
        return body[:-2].split(b"\n\n")

    def events(self) -> list[dict[str, Any]]:
        """Parse and check the framing: `event: <type>\\ndata: <json>` per block, then `data: [DONE]`."""
        body = self.body
        assert b"\r" not in body, "SSE must use LF framing"
        blocks = self.blocks()
        assert blocks[-1] == b"data: [DONE]", blocks[-1]
        events: list[dict[str, Any]] = []
        for block in blocks[:-1]:
            lines = block.split(b"\n")
            assert len(lines) == 2, f"expected exactly an event: and a data: line, got {block!r}"
            assert lines[0].startswith(b"event: ") and lines[1].startswith(b"data: "), block
            data = json.loads(lines[1][len(b"data: "):])
            assert lines[0][len(b"event: "):].decode() == data["type"], block
            events.append(data)
        return events


def post_stream(base_url: str, body: dict[str, Any], api_key: str = "sk-test") -> RawStream:
    headers = {"authorization": f"Bearer {api_key}"}
    with httpx.Client(timeout=30.0) as http, http.stream(
        "POST", base_url + "/responses", json={**body, "stream": True}, headers=headers
    ) as resp:
        chunks = list(resp.iter_raw())
        return RawStream(resp.status_code, resp.headers, chunks)


def check_events(events: list[dict[str, Any]]) -> list[Any]:
    """Every event validates against the SDK union; sequence numbers are 0..n; one terminal event, last."""
    parsed = [STREAM_EVENT.validate_python(event) for event in events]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created"
    terminal = [e["type"] for e in events if e["type"] in TERMINAL_TYPES]
    assert len(terminal) == 1 and events[-1]["type"] in TERMINAL_TYPES, [e["type"] for e in events]
    for event in events:
        if "response" in event:
            check_response(event["response"])
    return parsed


def fold_text(events: list[dict[str, Any]], output_index: int = 0) -> str:
    return "".join(
        e["delta"] for e in events if e["type"] == "response.output_text.delta" and e["output_index"] == output_index
    )


def fold_output(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rebuild `response.output` from the item events alone (what a streaming client does)."""
    output: list[dict[str, Any]] = []
    for event in events:
        if event["type"] == "response.output_item.added":
            assert event["output_index"] == len(output), "output_index must count up from 0"
            output.append(event["item"])
        elif event["type"] == "response.output_item.done":
            output[event["output_index"]] = event["item"]
    return output


def upstream_request(requests: list[dict[str, Any]], marker: str) -> dict[str, Any]:
    """The last request body the fake upstream received whose messages mention `marker`."""
    for body in reversed(requests):
        if marker in json.dumps(body.get("messages")):
            found: dict[str, Any] = body
            return found
    raise AssertionError(f"the upstream never received a request mentioning {marker!r}")


def wait_for(predicate: Any, timeout: float = 60.0, interval: float = 0.05) -> bool:
    """Whether `predicate()` came true within `timeout`: a limit that fails what never happens, far above how long
    anything takes on a busy machine; never a claim on speed (performance is measured in bench/)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def metric(server: ParleyServer, name: str, **labels: str) -> float:
    """The sum of the samples called `name` (e.g. parley_http_requests_total) with these labels on the server's
    /metrics: what a test waits on to know the server has done something, instead of sleeping."""
    scraped = httpx.get(server.root + "/metrics", timeout=30.0)
    assert scraped.status_code == 200, scraped.text
    return sum(sample.value for family in text_string_to_metric_families(scraped.text) for sample in family.samples
               if sample.name == name and labels.items() <= sample.labels.items())


def create_checked(client: Any, **params: Any) -> tuple[dict[str, Any], Response]:
    """`client.responses.create(**params)` (sync SDK) with the raw JSON body strictly checked."""
    raw = client.responses.with_raw_response.create(**params)
    body: dict[str, Any] = raw.http_response.json()
    check_response(body)
    response: Response = raw.parse()
    return body, response


async def acreate_checked(client: Any, **params: Any) -> tuple[dict[str, Any], Response]:
    raw = await client.responses.with_raw_response.create(**params)
    body: dict[str, Any] = raw.http_response.json()
    check_response(body)
    response: Response = raw.parse()
    return body, response
