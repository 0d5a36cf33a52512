"""Cache-affine routing: how often a conversation's next turn reaches the deployment that already holds its prompt
prefix, with and without `cache_affinity`, and what choosing a deployment costs. Prints one JSON document (progress
on stderr).

    .venv/bin/python -m bench.routing [--conversations 48] [--turns 6] [--parallel 8] [--output FILE]

Two deployments of one public model, each its own fake Chat Completions upstream (`parley.testing.fake_upstream`)
on loopback, like two regions of one provider. Parley runs in-process (the real app over httpx's ASGI transport).
Each conversation is a chain of `--turns` stored responses (`previous_response_id`), so every turn's prompt starts
with the previous turn's prompt; half the conversations send a `prompt_cache_key`, the other half none but a long
per-conversation `instructions` (the "same long prefix" case). `--parallel` conversations run at once.

The upstreams stand in for a provider's prompt cache, which is per deployment: a turn *hits* when the deployment
serving it has already served an earlier turn of the same conversation, and then the longest such earlier prompt (a
prefix of this one) counts as cached input. Reported per route setup: the hit rate over turns 2..n (turn 1 can never
hit), how often a turn went where the previous one did (`same_as_previous_turn`: the whole history cached), the
share of input words that were cached, and how the turns split between the deployments. With every turn after the
first on its conversation's deployment, the hit rate and `same_as_previous_turn` are 1.0.

`order_us` is the time `RoutedProvider.order` takes for one call (the per-turn cost of picking a deployment, affinity
hashing included, and of checking per-minute limits: the `ordered, ...` pair); a model that is not routed does not
pay it at all.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.report import emit
from parley.config import EmbeddedConfig, ModelConfig, RouteConfig, RouteStrategy, Settings
from parley.providers.base import ModelCall
from parley.providers.routing import Deployment, RoutedProvider
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import in_process

SETUPS: list[tuple[str, RouteStrategy, bool]] = [
    ("weighted, affinity", "weighted", True),
    ("weighted, no affinity", "weighted", False),
    ("least_busy, affinity", "least_busy", True),
    ("least_busy, no affinity", "least_busy", False),
]
_INSTRUCTIONS_WORDS = 400  # the "long prefix" of a conversation without a prompt_cache_key


def _text(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # content parts
        return " ".join(str(part.get("text") or "") for part in content)
    return str(content)


def _words(messages: list[dict[str, Any]]) -> int:
    return sum(len(_text(m).split()) for m in messages)


def _conversation(messages: list[dict[str, Any]]) -> str:
    """The conversation a recorded upstream request belongs to: its first user message names it."""
    first = next(m for m in messages if m.get("role") == "user")
    return _text(first).split(":", 1)[0]


def _score(upstreams: dict[str, FakeUpstream], start: dict[str, int]) -> dict[str, Any]:
    """Replay what each deployment received, in arrival order, through a per-deployment prefix cache."""
    # A conversation's turns are sequential and each prompt contains the one before, so ordering a conversation's
    # requests (whichever deployment got them) by prompt length recovers its turn order.
    arrivals = [(name, body["messages"]) for name, upstream in upstreams.items()
                for body in upstream.requests[start[name]:]]
    arrivals.sort(key=lambda a: (_conversation(a[1]), _words(a[1])))
    seen: dict[tuple[str, str], int] = {}  # (deployment, conversation) -> longest prompt it served, in words
    last: dict[str, str] = {}  # conversation -> deployment of its previous turn
    hits = later = cached = total = same = 0
    split = dict.fromkeys(upstreams, 0)
    for name, messages in arrivals:
        conv = _conversation(messages)
        words = _words(messages)
        total += words
        split[name] += 1
        if conv in last:
            later += 1
            same += last[conv] == name
            if (name, conv) in seen:
                hits += 1
                cached += seen[(name, conv)]
        seen[(name, conv)] = max(seen.get((name, conv), 0), words)
        last[conv] = name
    return {"turns": len(arrivals), "hit_rate": round(hits / later, 3) if later else None,
            "same_as_previous_turn": round(same / later, 3) if later else None,
            "cached_input_share": round(cached / total, 3) if total else None, "turns_per_deployment": split}


async def _run_setup(setup: tuple[str, RouteStrategy, bool], upstreams: dict[str, FakeUpstream],
                     args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    label, strategy, affinity = setup
    models = [ModelConfig(id=name, base_url=u.base_url, upstream_model="echo")
              for name, u in upstreams.items()]
    weights = [1.0] * len(models) if strategy == "weighted" else None
    route = RouteConfig(id="chat", deployments=list(upstreams), strategy=strategy, weights=weights,
                        cache_affinity=affinity)
    settings = Settings(data_dir=data_dir, embedded=EmbeddedConfig(enabled=False), models=models, routes=[route])
    start = {name: len(u.requests) for name, u in upstreams.items()}
    gate = asyncio.Semaphore(args.parallel)
    async with in_process(settings) as app:
        async def conversation(n: int) -> None:
            async with gate:
                keyed = n % 2 == 0
                body: dict[str, Any] = {"model": "chat"}
                if keyed:
                    body["prompt_cache_key"] = f"user-{n}"
                else:
                    body["instructions"] = f"conversation {n} rules: " + "be precise " * (_INSTRUCTIONS_WORDS // 2)
                previous: str | None = None
                for turn in range(args.turns):
                    text = f"c{n}: turn {turn} " + "some question words " * 20
                    payload = {**body, "input": text, **({"previous_response_id": previous} if previous else {})}
                    resp = await app.http.post("/v1/responses", json=payload)
                    resp.raise_for_status()
                    previous = resp.json()["id"]

        started = time.perf_counter()
        await asyncio.gather(*(conversation(n) for n in range(args.conversations)))
        elapsed = time.perf_counter() - started
    result = _score(upstreams, start)
    result["setup"] = label
    result["seconds"] = round(elapsed, 2)
    print(f"[bench] {label}: hit rate {result['hit_rate']}, same {result['same_as_previous_turn']}, "
          f"cached input {result['cached_input_share']}, "
          f"split {result['turns_per_deployment']}", file=sys.stderr)
    return result


class _Idle:
    """A deployment's provider for timing `order` alone: never opened, so its methods are never called."""

    async def open(self, call: ModelCall) -> Any:
        raise AssertionError("timing `order` never opens a turn")

    async def count_tokens(self, call: ModelCall) -> Any:
        raise AssertionError("timing `order` never counts tokens")


def _order_cost(rounds: int) -> dict[str, float]:
    """Microseconds per `order` call on a two-deployment route, by strategy, with a conversation-sized call."""
    items = [{"type": "message", "role": "user", "content": "some question words " * 20}] * 8
    out: dict[str, float] = {}
    for label, strategy, affinity in SETUPS:
        routed = RoutedProvider("chat", [Deployment("east", _Idle(), "x"), Deployment("west", _Idle(), "x")],
                                strategy=strategy, cache_affinity=affinity)
        for keyed in (True, False):
            call = ModelCall(upstream_model="chat", items=items, instructions="be precise " * 200,
                             prompt_cache_key="user-1" if keyed else None)
            started = time.perf_counter()
            for _ in range(rounds):
                routed.order(call)
            out[f"{label}, {'prompt_cache_key' if keyed else 'prefix'}"] = round(
                (time.perf_counter() - started) / rounds * 1e6, 2)
    # The same ordered route with per-minute limits on both deployments (never reached here): their check's cost.
    for limits in (False, True):
        rpm, tpm = (600, 150_000) if limits else (None, None)
        routed = RoutedProvider("chat", [Deployment(name, _Idle(), "x", requests_per_minute=rpm, tokens_per_minute=tpm)
                                         for name in ("east", "west")], cache_affinity=False)
        call = ModelCall(upstream_model="chat", items=items)
        started = time.perf_counter()
        for _ in range(rounds):
            routed.order(call)
        out[f"ordered, {'requests_per_minute + tokens_per_minute' if limits else 'no limits'}"] = round(
            (time.perf_counter() - started) / rounds * 1e6, 2)
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    upstreams = {"east": FakeUpstream(), "west": FakeUpstream()}
    for upstream in upstreams.values():
        await upstream.start()
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for index, setup in enumerate(SETUPS):
                data_dir = Path(tmp) / str(index)
                data_dir.mkdir()
                results.append(await _run_setup(setup, upstreams, args, data_dir))
    finally:
        for upstream in upstreams.values():
            await upstream.stop()
    return {"bench": "routing", "conversations": args.conversations, "turns": args.turns,
            "parallel": args.parallel, "setups": results,
            "order_us": _order_cost(args.order_rounds)}


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=48)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--order-rounds", type=int, default=20000)
    parser.add_argument("--output")
    args = parser.parse_args()
    emit(asyncio.run(main(args)), Path(args.output) if args.output else None)


if __name__ == "__main__":
    cli()
