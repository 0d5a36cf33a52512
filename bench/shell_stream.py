"""Container `shell` output streaming: how soon a command's first output reaches a streaming client, how a burst of
output is coalesced into events, and what a big output past `max_output_length` costs — each next to the same
command run directly on the host (`/bin/sh -c`, no sandbox, no model). Prints one JSON document (progress on
stderr).

    flock /tmp/parley-bench.lock .venv/bin/python -m bench.shell_stream [--rounds 20]

Parley is served on a loopback socket (uvicorn, as `parley serve`), the client reads the SSE stream with httpx; the
model is the scripted `call-agent` (parley.testing.fake_agent). The commands run in one warm container (its session
started before timing). Per scenario:
- request sent -> the first `shell_call_output_content.delta` (`parley_first_delta`), -> the command's
  `shell_call_output_content.done` (`parley_output_done`: it has ended) and -> the terminal event (`parley_total`:
  also the model's second turn, which the fake model answers by echoing the whole output back word by word, and the
  storage); `session_total`: the same command through the containers service alone (the sandbox's driver and its
  frames, no HTTP, no model, no events); direct: -> the first stdout byte and -> the end.
- `first_output`: `echo ready`.
- `burst`: `seq 1 100000` (588,895 bytes) with `max_output_length` 1,000,000: how many delta events carry it (the
  driver coalesces, see sandbox/inside/driver.py `ShellRunner`).
- `cut`: 50 MB of `yes` with `max_output_length` 10,000: the driver reads and drops what is past the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from parley.config import CodeInterpreterConfig, EmbeddedConfig, ModelConfig, Settings
from parley.sandbox.session import ShellRequest
from parley.services.containers import ContainersService
from parley.testing.fake_agent import AgentUpstream
from parley.testing.in_process import served

SCENARIOS = {
    "first_output": ("echo ready", 10_000),
    "burst": ("seq 1 100000", 1_000_000),
    "cut": ("yes | head -c 50000000", 10_000),
}


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2),
            "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)] * 1000, 2), "n": len(ordered)}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _through_parley(client: httpx.AsyncClient, tool: dict[str, Any], command: str,
                          limit: int) -> dict[str, Any]:
    """One streamed response; each SSE frame's event name is read from the raw bytes (a client parsing every
    600 kB closing event as JSON lines would time itself, not Parley), the deltas' JSON only."""
    ask = json.dumps({"call": "shell", "arguments": {"commands": [command], "max_output_length": limit}})
    body = {"model": "agent", "tools": [tool], "input": ask, "stream": True}
    started = time.perf_counter()
    first: float | None = None
    output_done = 0.0
    deltas = chars = 0
    buffer = b""
    async with client.stream("POST", "/responses", json=body) as resp:
        async for chunk in resp.aiter_raw():
            buffer += chunk
            *frames, buffer = buffer.split(b"\n\n")
            for frame in frames:
                name = frame[7:frame.find(b"\n")] if frame.startswith(b"event: ") else b""
                if name == b"response.shell_call_output_content.delta":
                    first = first if first is not None else time.perf_counter() - started
                    event = json.loads(frame[frame.find(b"\ndata: ") + 7:])
                    deltas += 1
                    chars += sum(len(text) for text in event["delta"].values())
                elif name == b"response.shell_call_output_content.done":
                    output_done = time.perf_counter() - started
                elif name in (b"response.failed", b"response.incomplete"):
                    raise RuntimeError(frame[:2000].decode())
    return {"first": first, "output_done": output_done, "total": time.perf_counter() - started, "deltas": deltas,
            "chars": chars}


async def _session(containers: ContainersService, container_id: str, command: str, limit: int) -> dict[str, Any]:
    """The command in the container's session alone (no HTTP, no model, no events): the sandbox's part."""
    frames: list[Any] = []
    started = time.perf_counter()
    outcome = await containers.shell("default", container_id, ShellRequest([command], 60, 120, limit), frames.append)
    assert outcome.result.ended is None
    return {"total": time.perf_counter() - started, "frames": len(frames)}


async def _direct(command: str) -> dict[str, Any]:
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec("/bin/sh", "-c", command, stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    first: float | None = None
    size = 0
    while chunk := await process.stdout.read(65536):
        first = first if first is not None else time.perf_counter() - started
        size += len(chunk)
    await process.wait()
    return {"first": first, "total": time.perf_counter() - started, "bytes": size}


async def main(rounds: int) -> dict[str, Any]:
    agent = AgentUpstream()
    await agent.start()
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            settings = Settings(
                data_dir=Path(data_dir), embedded=EmbeddedConfig(enabled=False),
                # A context window that takes the burst's 588 kB of output back to the model on the next turn.
                models=[ModelConfig(id="agent", base_url=agent.base_url, upstream_model="call-agent",
                                    context_window=2_000_000)],
                code_interpreter=CodeInterpreterConfig(cell_timeout_s=120, max_output_chars=2_000_000))
            async with served(settings) as server, \
                    httpx.AsyncClient(base_url=server.base_url, timeout=300) as client:
                container = (await client.post("/containers", json={"name": "bench"})).json()["id"]
                tool = {"type": "shell", "environment": {"type": "container_reference", "container_id": container}}
                await _through_parley(client, tool, "true", 1000)  # the session starts here, before timing
                report: dict[str, Any] = {"rounds": rounds, "sandbox": server.app.state.runtime.containers.sandbox.kind}
                for name, (command, limit) in SCENARIOS.items():
                    _log(f"{name}: {command}")
                    parley = [await _through_parley(client, tool, command, limit) for _ in range(rounds)]
                    direct = [await _direct(command) for _ in range(rounds)]
                    containers = server.app.state.runtime.containers
                    session = [await _session(containers, container, command, limit) for _ in range(rounds)]
                    report[name] = {
                        "command": command, "max_output_length": limit,
                        "parley_first_delta": _ms([r["first"] for r in parley]),
                        "parley_output_done": _ms([r["output_done"] for r in parley]),
                        "parley_total": _ms([r["total"] for r in parley]),
                        "session_total": _ms([r["total"] for r in session]),
                        "direct_first_byte": _ms([r["first"] for r in direct]),
                        "direct_total": _ms([r["total"] for r in direct]),
                        "delta_events": statistics.median(r["deltas"] for r in parley),
                        "chars_streamed": statistics.median(r["chars"] for r in parley),
                        "direct_bytes": direct[0]["bytes"],
                    }
                return report
    finally:
        await agent.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.rounds)), indent=2))
