"""image_generation and tool_search: what Parley adds to an image call, and what deferring tools saves. Prints one
JSON document (progress on stderr).

    .venv/bin/python -m bench.tools_issue18 [--rounds 50] [--tools 200 2000]

Parley runs in-process (the real app, the SDK over httpx's ASGI transport); the model is the scripted
`call-agent` (parley.testing.fake_agent) and the images upstream `parley.testing.fake_images`, both on loopback.

- `image_generation`: the same 64x64 PNG asked of the fake images upstream directly (`direct`, httpx) and through a
  response whose model calls the tool (`response_with_call`: two model turns around the call, the item stored), next
  to the same response shape without the tool (`response_plain`: one turn). Side by side in one run.
- `tool_search`: for N deferred function tools, the bytes of the first upstream request with the tools deferred
  against all of them offered up front, and the time of one server-side search (BM25 over the N tools).
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
import orjson

from parley.config import EmbeddedConfig, ImagesConfig, ModelConfig, Settings
from parley.schema.tools import ClientTool
from parley.testing.fake_agent import AgentUpstream
from parley.testing.fake_images import FakeImages
from parley.testing.in_process import in_process
from parley.tools.tool_search import rank


def _ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 3),
            "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)] * 1000, 3), "n": len(ordered)}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _tools(count: int) -> list[dict[str, Any]]:
    topics = ["weather", "calendar", "email", "invoice", "customer", "ticket", "deploy", "backup", "report", "map"]
    return [{"type": "function", "name": f"{topics[i % 10]}_action_{i}", "defer_loading": True,
             "description": f"Do action {i} on the {topics[i % 10]} service: a longer description of what it does, "
                            "its limits and when to use it, as real tool catalogs have.",
             "parameters": {"type": "object", "properties": {"id": {"type": "string"}, "note": {"type": "string"}}}}
            for i in range(count)]


async def main(rounds: int, counts: list[int]) -> dict[str, Any]:
    agent, images = AgentUpstream(), FakeImages()
    await agent.start()
    await images.start()
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            settings = Settings(data_dir=Path(data_dir), embedded=EmbeddedConfig(enabled=False),
                                models=[ModelConfig(id="agent", base_url=agent.base_url, upstream_model="call-agent",
                                                    context_window=1_000_000)],
                                images=ImagesConfig(base_url=images.base_url, model="img-1"))
            async with in_process(settings) as app, httpx.AsyncClient() as direct_http:
                sdk = app.sdk()
                ask = json.dumps({"call": "image_generation", "arguments": {"prompt": "a boat"}})
                tool = [{"type": "image_generation", "size": "64x64"}]
                direct: list[float] = []
                with_call: list[float] = []
                plain: list[float] = []
                _log("image_generation ...")
                for _ in range(rounds):
                    started = time.perf_counter()
                    reply = await direct_http.post(f"{images.base_url}/images/generations",
                                                   json={"model": "img-1", "prompt": "a boat", "size": "64x64"})
                    direct.append(time.perf_counter() - started)
                    assert reply.status_code == 200
                    started = time.perf_counter()
                    response = await sdk.responses.create(model="agent", input=ask, tools=tool)  # type: ignore[arg-type]
                    with_call.append(time.perf_counter() - started)
                    assert response.output[0].type == "image_generation_call"
                    started = time.perf_counter()
                    await sdk.responses.create(model="agent", input="a boat")
                    plain.append(time.perf_counter() - started)
                image = {"direct": _ms(direct), "response_with_call": _ms(with_call), "response_plain": _ms(plain),
                         "added_by_call_p50_ms": round((statistics.median(with_call) - statistics.median(plain))
                                                       * 1000, 3)}
                search: dict[str, Any] = {}
                for count in counts:
                    _log(f"tool_search over {count} tools ...")
                    tools = _tools(count)
                    plan = json.dumps([{"call": "tool_search", "arguments": {"query": "invoice"}}])
                    await sdk.responses.create(model="agent", input=plan,
                                               tools=[*tools, {"type": "tool_search"}])  # type: ignore[list-item]
                    deferred_bytes = len(orjson.dumps(agent.requests[-2]))
                    await sdk.responses.create(model="agent", input="hi",
                                               tools=[{k: v for k, v in t.items() if k != "defer_loading"}
                                                      for t in tools])  # type: ignore[misc]
                    upfront_bytes = len(orjson.dumps(agent.requests[-1]))
                    catalog = [ClientTool("function", t["name"], t["name"], description=t["description"],
                                          parameters=t["parameters"], deferred=True) for t in tools]
                    timings: list[float] = []
                    for _ in range(rounds):
                        started = time.perf_counter()
                        found = rank(catalog, "send the invoice", 8)
                        timings.append(time.perf_counter() - started)
                    assert found and "invoice" in found[0].name
                    search[str(count)] = {"first_request_bytes_deferred": deferred_bytes,
                                          "first_request_bytes_upfront": upfront_bytes, "search": _ms(timings)}
                return {"image_generation": image, "tool_search": search,
                        "params": {"rounds": rounds, "tools": counts}}
    finally:
        await agent.stop()
        await images.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--tools", type=int, nargs="+", default=[200, 2000])
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.rounds, args.tools)), indent=2))
