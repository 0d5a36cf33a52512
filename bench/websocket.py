"""WebSocket mode vs HTTP: a 100-turn chain, Parley's own cost per turn, and the memory of idle connections.

What runs (all on 127.0.0.1, free ports, started and torn down by this script):
  * upstream: `python -m bench.upstream` (the same 32-token answer to every call, from pre-built bytes);
  * parley: `parley serve` (SQLite in a temporary data dir), model "bench" -> the upstream;
  * the client: this process (uvloop; `websockets` for WebSocket mode, aiohttp with keep-alive for HTTP).

One chain is `--turns` turns (default 100), each a streamed response to a short user message that continues
the chain, read to its end before the next turn is sent:
  * ws_store_true / ws_store_false: one WebSocket; each turn is a `response.create` with the new message and
    `previous_response_id` (the connection's memory holds the chain);
  * http_store_true: each turn is `POST /v1/responses` (`stream: true`) with `previous_response_id` (the chain
    is read from the database);
  * http_store_false: each turn is `POST /v1/responses` (`stream: true`, `store: false`) with the whole
    history as `input`, as a client without stored state (Codex over HTTP) sends it;
  * direct: each turn is `POST /v1/chat/completions` to the upstream with the growing message list: what
    Parley sends upstream, with no gateway in between.
Scenarios alternate within each of `--rounds` rounds. Per scenario: the time per turn (send -> terminal
event; p50, mean) and what it adds to direct's, and the CPU per turn of Parley, the upstream and the client
(/proc), so "Parley's own cost per turn" is Parley's CPU per turn.
Then `--idle` WebSocket connections (default 500) are opened and left idle: Parley's RSS before and after.

Run: `python -m bench.websocket [--turns 100] [--rounds 5] [--idle 500] [--output FILE]`; JSON on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop
from websockets.asyncio.client import ClientConnection, connect

from bench.load import percentile
from bench.procs import Child, child_env, free_port, sample, start_upstream
from bench.report import emit

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = ("direct", "ws_store_true", "ws_store_false", "http_store_true", "http_store_false")
TERMINAL = (b'"type":"response.completed"', b'"type":"response.failed"', b'"type":"response.incomplete"')
Turn = Callable[[int], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Options:
    turns: int
    rounds: int
    idle: int
    output: Path | None


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _message(turn: int) -> str:
    return f"Turn {turn}: say something short."


class Chain:
    """One client's chain in one scenario; `turn(i)` sends turn i and reads its answer to the end."""

    def __init__(self, scenario: str, parley: str, upstream: str, http: aiohttp.ClientSession,
                 ws: ClientConnection | None) -> None:
        self.scenario = scenario
        self._parley = parley
        self._upstream = upstream
        self._http = http
        self._ws = ws
        self._previous: str | None = None
        self._history: list[dict[str, Any]] = []  # http_store_false: Responses items; direct: chat messages

    async def turn(self, index: int) -> None:
        text = _message(index)
        if self.scenario == "direct":
            await self._direct(text)
        elif self.scenario.startswith("ws_"):
            await self._websocket(text, self.scenario == "ws_store_true")
        elif self.scenario == "http_store_true":
            await self._http_chained(text)
        else:
            await self._http_resent(text)

    async def _direct(self, text: str) -> None:
        self._history.append({"role": "user", "content": text})
        body = {"model": "fixed", "messages": self._history, "stream": True, "stream_options": {"include_usage": True}}
        async with self._http.post(f"{self._upstream}/v1/chat/completions", data=orjson.dumps(body),
                                   headers={"content-type": "application/json"}) as resp:
            answer = await resp.read()
        assert resp.status == 200 and answer.rstrip().endswith(b"[DONE]"), answer[-200:]
        self._history.append({"role": "assistant", "content": " ".join(["token"] * 32)})

    async def _websocket(self, text: str, store: bool) -> None:
        assert self._ws is not None
        event: dict[str, Any] = {"type": "response.create", "model": "bench", "input": text, "store": store}
        if self._previous is not None:
            event["previous_response_id"] = self._previous
        await self._ws.send(orjson.dumps(event).decode())
        while True:
            frame = await self._ws.recv(decode=False)
            if any(kind in frame[:64] for kind in TERMINAL) or frame.startswith(b'{"type":"error"'):
                break
        data = orjson.loads(frame)
        assert data["type"] == "response.completed", data
        self._previous = data["response"]["id"]

    async def _http_chained(self, text: str) -> None:
        body: dict[str, Any] = {"model": "bench", "input": text, "stream": True}
        if self._previous is not None:
            body["previous_response_id"] = self._previous
        self._previous = await self._post(body)

    async def _http_resent(self, text: str) -> None:
        self._history.append({"role": "user", "content": text})
        body = {"model": "bench", "input": self._history, "stream": True, "store": False}
        await self._post(body)
        self._history.append({"role": "assistant", "content": " ".join(["token"] * 32)})

    async def _post(self, body: dict[str, Any]) -> str:
        async with self._http.post(f"{self._parley}/v1/responses", data=orjson.dumps(body),
                                   headers={"content-type": "application/json", "authorization": "Bearer bench"}
                                   ) as resp:
            answer = await resp.read()
        assert resp.status == 200 and answer.rstrip().endswith(b"data: [DONE]"), answer[-300:]
        start = answer.rindex(b"event: response.completed")
        data = orjson.loads(answer[answer.index(b"data: ", start) + 6:].split(b"\n", 1)[0])
        response_id: str = data["response"]["id"]
        return response_id


@dataclass
class Totals:
    times: list[float]
    cpu: dict[str, float]
    turns: int = 0

    def add(self, times: list[float], cpu: dict[str, float]) -> None:
        self.times += times
        self.turns += len(times)
        for name, used in cpu.items():
            self.cpu[name] = self.cpu.get(name, 0.0) + used


async def _chain(opts: Options, scenario: str, urls: tuple[str, str], http: aiohttp.ClientSession,
                 pids: dict[str, int]) -> tuple[list[float], dict[str, float]]:
    parley, upstream = urls
    ws = None
    if scenario.startswith("ws_"):
        ws = await connect(parley.replace("http://", "ws://") + "/v1/responses", compression=None, max_size=None,
                           additional_headers={"authorization": "Bearer bench"})
    try:
        chain = Chain(scenario, parley, upstream, http, ws)
        before = {name: sample(pid, descendants=False).cpu_s for name, pid in pids.items()}
        times = []
        for index in range(opts.turns):
            started = time.perf_counter()
            await chain.turn(index)
            times.append(time.perf_counter() - started)
        after = {name: sample(pid, descendants=False).cpu_s for name, pid in pids.items()}
    finally:
        if ws is not None:
            await ws.close()
    return times, {name: after[name] - before[name] for name in pids}


def _summary(totals: Totals, direct: Totals) -> dict[str, Any]:
    times = sorted(totals.times)
    direct_p50 = percentile(sorted(direct.times), 50)
    per_turn = {name: round(used / totals.turns * 1000, 3) for name, used in totals.cpu.items()}
    return {
        "turns": totals.turns,
        "turn_ms_p50": round(percentile(times, 50) * 1000, 3),
        "turn_ms_mean": round(statistics.fmean(times) * 1000, 3),
        "turn_ms_p90": round(percentile(times, 90) * 1000, 3),
        "added_ms_p50": round((percentile(times, 50) - direct_p50) * 1000, 3),
        "cpu_ms_per_turn": per_turn,
    }


async def _idle_memory(opts: Options, parley: str, pid: int) -> dict[str, Any]:
    """RSS of Parley before and after `opts.idle` WebSocket connections are opened and left idle."""
    await asyncio.sleep(1.0)
    before = sample(pid, descendants=False).rss_mb
    url = parley.replace("http://", "ws://") + "/v1/responses"
    sockets: list[ClientConnection] = []
    try:
        for start in range(0, opts.idle, 50):
            sockets += await asyncio.gather(*(connect(url, compression=None, additional_headers={
                "authorization": "Bearer bench"}) for _ in range(min(50, opts.idle - start))))
        await asyncio.sleep(1.0)
        after = sample(pid, descendants=False).rss_mb
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return {"connections": len(sockets), "rss_mb_before": round(before, 1), "rss_mb_after": round(after, 1),
            "kb_per_connection": round((after - before) * 1024 / max(1, len(sockets)), 1)}


async def _measure(opts: Options, urls: tuple[str, str], pids: dict[str, int]) -> dict[str, Any]:
    totals = {scenario: Totals([], {}) for scenario in SCENARIOS}
    connector = aiohttp.TCPConnector(limit=4, keepalive_timeout=120)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                     timeout=aiohttp.ClientTimeout(total=60)) as http:
        for scenario in SCENARIOS:  # one unrecorded warm-up chain each
            await _chain(Options(10, 1, 0, None), scenario, urls, http, pids)
        for index in range(opts.rounds):
            order = SCENARIOS if index % 2 == 0 else tuple(reversed(SCENARIOS))
            for scenario in order:
                times, cpu = await _chain(opts, scenario, urls, http, pids)
                totals[scenario].add(times, cpu)
            _log(f"round {index + 1}/{opts.rounds} done")
    report = {scenario: _summary(totals[scenario], totals["direct"]) for scenario in SCENARIOS}
    idle = await _idle_memory(opts, urls[0], pids["parley"]) if opts.idle else None
    return {"scenarios": report, "idle_connections": idle}


def run(opts: Options) -> dict[str, Any]:
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    parley_port = free_port()
    with tempfile.TemporaryDirectory(prefix="parley-bench-ws-") as tmp:
        work = Path(tmp)
        upstream, upstream_url = start_upstream(work, env)
        parley = None
        try:
            config = work / "config.toml"
            config.write_text("[embedded]\nenabled = false\n\n"
                              f'[[models]]\nid = "bench"\nbase_url = "{upstream_url}/v1"\nupstream_model = "fixed"\n'
                              "context_window = 1000000\n")
            script = Path(sys.executable).parent / "parley"
            argv = [str(script), "serve", "--port", str(parley_port), "--data-dir", str(work / "data"),
                    "--config", str(config), "--log-level", "warning"]
            parley = Child("parley", argv, work / "parley.log", env)
            parley_url = f"http://127.0.0.1:{parley_port}"
            parley.wait_ready(f"{parley_url}/health")
            pids = {"parley": parley.pid, "upstream": upstream.pid, "client": os.getpid()}
            measured = uvloop.run(_measure(opts, (parley_url, upstream_url), pids))
        finally:
            if parley is not None:
                parley.stop()
            upstream.stop()
    return {"benchmark": "websocket",
            "config": {"turns": opts.turns, "rounds": opts.rounds, "idle": opts.idle, "answer_tokens": 32},
            "environment": {"cpus": len(os.sched_getaffinity(0)), "python": sys.version.split()[0]}, **measured}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.websocket", description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=100, help="turns per chain (default 100)")
    parser.add_argument("--rounds", type=int, default=5, help="chains per scenario (default 5)")
    parser.add_argument("--idle", type=int, default=500, help="idle WebSocket connections to open (default 500)")
    parser.add_argument("--output", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    emit(run(Options(args.turns, args.rounds, args.idle, args.output)), args.output)


if __name__ == "__main__":
    main()
