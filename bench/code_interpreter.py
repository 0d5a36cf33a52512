"""code_interpreter: container create -> first result, the cost of a trivial cell in a warm session, and sessions
running concurrently. Prints one JSON document (progress on stderr).

    .venv/bin/python -m bench.code_interpreter [--calls 200] [--sessions 1 2 4 8] [--duration 3]

Parley runs in-process (the real app and its lifespan, the SDK over httpx's ASGI transport: no sockets) with
the sandbox this host allows; the model is `parley.testing.fake_coder` over loopback HTTP.
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

from parley.config import CodeInterpreterConfig, EmbeddedConfig, ModelConfig, Settings
from parley.services.containers import ContainersService
from parley.testing.fake_coder import CoderUpstream
from parley.testing.in_process import InProcess, in_process

PROJECT = "default"


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2),
            "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 2),
            "mean_ms": round(statistics.fmean(ordered) * 1000, 2), "n": len(ordered)}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def first_result(app: InProcess, service: ContainersService, rounds: int) -> dict[str, Any]:
    """POST /v1/containers, then the first code result: through the service, and through a whole response."""
    sdk = app.sdk()
    direct: list[float] = []
    response: list[float] = []
    for _ in range(rounds):
        started = time.perf_counter()
        container = await sdk.containers.create(name="bench")
        outcome = await service.run(PROJECT, container.id, "6 * 7")
        direct.append(time.perf_counter() - started)
        assert outcome.result.logs == "42\n", outcome.result
        started = time.perf_counter()
        other = await sdk.containers.create(name="bench")
        reply = await sdk.responses.create(model="code-agent", input='["6 * 7"]',
                                           tools=[{"type": "code_interpreter", "container": other.id}])
        response.append(time.perf_counter() - started)
        assert "42" in reply.output_text, reply.output_text
        await sdk.containers.delete(container.id)
        await sdk.containers.delete(other.id)
    return {"create_then_run": _ms(direct), "create_then_response": _ms(response),
            "session_start_ms": round((service.sandbox.start_s or 0) * 1000, 1)}


async def trivial_cells(app: InProcess, service: ContainersService, calls: int) -> dict[str, Any]:
    """A warm session: the whole call through the service (lock, store touch, sync) and the session alone."""
    container = await app.sdk().containers.create(name="bench-warm")
    await service.run(PROJECT, container.id, "x = 1")
    through_service: list[float] = []
    in_session: list[float] = []
    for _ in range(calls):
        started = time.perf_counter()
        outcome = await service.run(PROJECT, container.id, "x + 1")
        through_service.append(time.perf_counter() - started)
        in_session.append(outcome.result.seconds)
    # A response with one trivial call against one without a tool call: what the call adds to a response
    # (its item and events, the extra model turn to the fake upstream, storing the item).
    sdk = app.sdk()
    tool = [{"type": "code_interpreter", "container": container.id}]
    with_call: list[float] = []
    without: list[float] = []
    for _ in range(max(calls // 4, 10)):
        started = time.perf_counter()
        await sdk.responses.create(model="code-agent", input='["x + 1"]', tools=tool)
        with_call.append(time.perf_counter() - started)
        started = time.perf_counter()
        await sdk.responses.create(model="code-agent", input="[]", tools=tool)
        without.append(time.perf_counter() - started)
    await sdk.containers.delete(container.id)
    added = statistics.median(with_call) - statistics.median(without)
    return {"service_call": _ms(through_service), "session_roundtrip": _ms(in_session),
            "response_with_call": _ms(with_call), "response_without_call": _ms(without),
            "added_by_call_p50_ms": round(added * 1000, 2)}


async def concurrent(app: InProcess, service: ContainersService, sessions: int, duration: float,
                     code: str) -> dict[str, Any]:
    sdk = app.sdk()
    ids = [(await sdk.containers.create(name=f"bench-{i}")).id for i in range(sessions)]
    await asyncio.gather(*(service.run(PROJECT, cid, "0") for cid in ids))
    latencies: list[float] = []
    deadline = time.perf_counter() + duration

    async def worker(container_id: str) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            outcome = await service.run(PROJECT, container_id, code)
            assert outcome.result.ok, outcome.result
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(worker(cid) for cid in ids))
    elapsed = time.perf_counter() - began
    for cid in ids:
        await sdk.containers.delete(cid)
    return {"sessions": sessions, "cells_per_s": round(len(latencies) / elapsed, 1), **_ms(latencies)}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    upstream = CoderUpstream()
    await upstream.start()
    data_dir = Path(tempfile.mkdtemp(prefix="parley-bench-ci-"))
    settings = Settings(data_dir=data_dir, models=[ModelConfig(id="code-agent", base_url=upstream.base_url)],
                        embedded=EmbeddedConfig(enabled=False),
                        code_interpreter=CodeInterpreterConfig(max_sessions=max(args.sessions) + 2))
    try:
        async with in_process(settings) as app:
            service: ContainersService = app.app.state.runtime.containers
            sandbox = await service.ready()
            _log(f"sandbox: {sandbox.describe()}")
            result: dict[str, Any] = {"sandbox": sandbox.describe()}
            _log("create -> first result ...")
            result["first_result"] = await first_result(app, service, args.rounds)
            _log("trivial cells in a warm session ...")
            result["trivial_cell"] = await trivial_cells(app, service, args.calls)
            result["concurrent_trivial"] = []
            result["concurrent_cpu"] = []
            for count in args.sessions:
                _log(f"{count} concurrent sessions ...")
                result["concurrent_trivial"].append(await concurrent(app, service, count, args.duration, "1"))
                result["concurrent_cpu"].append(
                    await concurrent(app, service, count, args.duration, "sum(range(2_000_000))"))
            return result
    finally:
        await upstream.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="trivial cells in the warm session")
    parser.add_argument("--rounds", type=int, default=10, help="containers created for the first-result timing")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per concurrency level")
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
