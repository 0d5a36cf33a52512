"""Gateway overhead per upstream kind: each wire format called directly, side by side with the same call through
Parley's `/v1/responses`.

What runs (all on 127.0.0.1, free ports, started and torn down by this script):
  * upstream: `python -m bench.upstream`, the raw-asyncio fake that answers every format from pre-built bytes:
    Chat Completions, Responses (`/v1/responses`), Anthropic Messages (`/v1/messages`) and Gemini
    (`/v1beta/models/{model}:generateContent` / `:streamGenerateContent?alt=sse`), always the same 32-token text.
  * parley: `parley serve` (temporary SQLite data dir, embedded model off) with one model per kind,
    `bench-<kind>`, pointing at the upstream (`upstream_model = "fixed"`).
  * the load generator: this process (bench.load).

Per kind, per scenario (non-streaming / streaming x each `--concurrency`), rounds alternate as in bench.gateway:
  * direct = the upstream's own endpoint with exactly the body Parley's translation sends it;
  * parley = POST {parley}/v1/responses {"model": "bench-<kind>", "input": prompt, "stream": ...}.
The JSON report has, per kind, the scenarios (added latency p50/p99, first event, throughput ratio, CPU per
request of each process; bench/README.md explains them) and the project's targets checked on them.

Run: `python -m bench.providers [--kinds anthropic gemini] [--duration 2] [--rounds 3] [--concurrency 1 64]
[--output FILE]`. JSON to stdout (and --output); progress to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
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

from bench.gateway import MODES, REPO, _cpu_now, _environment, _parley_argv
from bench.load import Target, run_round, session
from bench.procs import Child, child_env, free_port, sample, start_upstream
from bench.report import TargetRuns, emit, process_summary, summarize_scenario, targets
from parley.config import ProfileOverrides
from parley.providers.anthropic_request import anthropic_body
from parley.providers.base import ModelCall
from parley.providers.chat_request import chat_body
from parley.providers.gemini_request import gemini_body, gemini_path
from parley.providers.native_profiles import resolve_native_profile
from parley.providers.profiles import PROFILES
from parley.providers.responses_request import responses_body

KINDS = ("chat_completions", "openai_responses", "anthropic", "gemini")
_BASE = {"chat_completions": "/v1", "openai_responses": "/v1", "anthropic": "/v1", "gemini": "/v1beta"}
_PROFILE = {"chat_completions": "generic", "openai_responses": "openai", "anthropic": "anthropic", "gemini": "gemini"}
# How a complete direct stream ends (None: `data: [DONE]`).
_END = {"chat_completions": None, "openai_responses": b'"response.completed"', "anthropic": b'"message_stop"',
        "gemini": b'"finishReason":"STOP"'}


@dataclass(frozen=True, slots=True)
class Options:
    kinds: tuple[str, ...]
    duration_s: float
    rounds: int
    warmup_s: float
    concurrency: tuple[int, ...]
    modes: tuple[str, ...]
    prompt: str
    store: bool
    output: Path | None
    workers: int = 1


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.providers",
                                     description="Parley vs each upstream kind called directly (JSON).")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="default: all four")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measured round (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per target and scenario (default 3)")
    parser.add_argument("--warmup", type=float, default=0.5, help="unrecorded warm-up seconds per target and scenario")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64], help="concurrency levels (default 1 64)")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES), help="default: both")
    parser.add_argument("--prompt", default="Say hello in one short sentence.", help="the user message")
    parser.add_argument("--no-store", action="store_true", help="send store=false to Parley (default: stored)")
    parser.add_argument("--output", type=Path, help="also write the JSON report to this file")
    parser.add_argument("--workers", type=int, default=1, help="parley serve --workers (default 1)")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.rounds < 1 or min(args.concurrency) < 1:
        parser.error("--duration must be > 0, --rounds >= 1 and every --concurrency >= 1")
    return Options(tuple(args.kinds), args.duration, args.rounds, max(0.0, args.warmup), tuple(args.concurrency),
                   tuple(args.modes), args.prompt, not args.no_store, args.output, max(1, args.workers))


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _config(upstream_url: str, kinds: tuple[str, ...]) -> str:
    config = "[embedded]\nenabled = false\n\n"
    for kind in kinds:
        config += (f'[[models]]\nid = "bench-{kind}"\nprovider = "{kind}"\nbase_url = "{upstream_url}{_BASE[kind]}"\n'
                   f'upstream_model = "fixed"\nprofile = "{_PROFILE[kind]}"\napi_key = "bench"\n\n')
    return config


def direct_request(kind: str, prompt: str, stream: bool) -> tuple[str, dict[str, Any]]:
    """The path and body Parley's translation sends the upstream for this prompt."""
    item = {"id": "msg_1", "type": "message", "role": "user", "content": [{"type": "input_text", "text": prompt}]}
    call = ModelCall("fixed", [item], stream=stream)
    if kind == "chat_completions":
        return "/v1/chat/completions", chat_body(call, PROFILES["generic"])
    profile = resolve_native_profile(kind, _PROFILE[kind], ProfileOverrides())
    if kind == "openai_responses":
        return "/v1/responses", responses_body(call, profile)
    if kind == "anthropic":
        return "/v1/messages", anthropic_body(call, profile)
    return "/v1beta" + gemini_path(call), gemini_body(call, profile)


def _targets(opts: Options, kind: str, upstream_url: str, parley_url: str, stream: bool) -> dict[str, Target]:
    path, body = direct_request(kind, opts.prompt, stream)
    responses: dict[str, Any] = {"model": f"bench-{kind}", "input": opts.prompt, "stream": stream}
    if not opts.store:
        responses["store"] = False
    return {
        "direct": Target("direct", upstream_url + path, orjson.dumps(body), stream, _END[kind]),
        "parley": Target("parley", f"{parley_url}/v1/responses", orjson.dumps(responses), stream),
    }


@dataclass(frozen=True, slots=True)
class Servers:
    upstream: Child
    parley: Child
    upstream_url: str
    parley_url: str
    parley_startup_s: float


@contextlib.contextmanager
def servers(opts: Options, workdir: Path) -> Iterator[Servers]:
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    parley_port = free_port()
    children: list[Child] = []
    try:
        upstream, upstream_url = start_upstream(workdir, env)
        children.append(upstream)
        config = workdir / "config.toml"
        config.write_text(_config(upstream_url, opts.kinds))
        argv = [*_parley_argv(), "serve", "--host", "127.0.0.1", "--port", str(parley_port), "--data-dir",
                str(workdir / "data"), "--config", str(config), "--log-level", "warning",
                "--workers", str(opts.workers)]
        parley = Child("parley", argv, workdir / "parley.log", env)
        children.append(parley)
        parley_url = f"http://127.0.0.1:{parley_port}"
        startup = parley.wait_ready(f"{parley_url}/health")
        _log(f"upstream pid {upstream.pid}; parley pid {parley.pid} (ready in {startup:.2f} s)")
        yield Servers(upstream, parley, upstream_url, parley_url, startup)
    finally:
        for child in reversed(children):
            child.stop()


async def _measure(opts: Options, srv: Servers) -> dict[str, list[dict[str, Any]]]:
    pids = {"parley": srv.parley.pid, "upstream": srv.upstream.pid, "load_generator": os.getpid()}
    peak = max(opts.concurrency)
    results: dict[str, list[dict[str, Any]]] = {}
    async with session(peak) as direct_http, session(peak) as parley_http:
        http: dict[str, aiohttp.ClientSession] = {"direct": direct_http, "parley": parley_http}
        for kind in opts.kinds:
            scenarios: list[dict[str, Any]] = []
            for mode in opts.modes:
                stream = MODES[mode]
                by_name = _targets(opts, kind, srv.upstream_url, srv.parley_url, stream)
                for concurrency in opts.concurrency:
                    name = f"{mode}_c{concurrency}"
                    runs = {"direct": TargetRuns(), "parley": TargetRuns()}
                    if opts.warmup_s > 0:
                        for key, target in by_name.items():
                            await run_round(http[key], target, concurrency, opts.warmup_s)
                    for index in range(opts.rounds):
                        for key in ("direct", "parley") if index % 2 == 0 else ("parley", "direct"):
                            before = _cpu_now(pids)
                            result = await run_round(http[key], by_name[key], concurrency, opts.duration_s)
                            after = _cpu_now(pids)
                            runs[key].add(result, {p: after[p] - before[p] for p in after})
                    scenario = summarize_scenario(name, stream, concurrency, runs)
                    _log(f"{kind} {name}: direct {scenario['direct']['rps']} rps, parley {scenario['parley']['rps']} "
                         f"rps (ratio {scenario['throughput_ratio']}), added p50 {scenario['added_latency_ms_p50']} ms")
                    scenarios.append(scenario)
            results[kind] = scenarios
    return results


def run(opts: Options) -> dict[str, Any]:
    environment = _environment()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="parley-bench-providers-") as tmp, servers(opts, Path(tmp)) as srv:
        idle = sample(srv.parley.pid)
        measured = uvloop.run(_measure(opts, srv))
        end = sample(srv.parley.pid)
    return {
        "benchmark": "providers",
        "config": {"kinds": list(opts.kinds), "duration_s": opts.duration_s, "rounds": opts.rounds,
                   "warmup_s": opts.warmup_s, "concurrency": list(opts.concurrency), "modes": list(opts.modes),
                   "prompt": opts.prompt, "store": opts.store, "answer_tokens": 32, "workers": opts.workers},
        "environment": environment,
        "kinds": {kind: {"scenarios": runs, "targets": targets(runs)} for kind, runs in measured.items()},
        "parley_process": process_summary(srv.parley_startup_s, idle, end),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    emit(run(opts), opts.output)


if __name__ == "__main__":
    main()
