"""What the providers' SDK types would cost on Parley's hot path: parsing one streamed reply per wire format.

For each native format, the stream of a 32-token answer (the events the test fakes send, which the tests check
against the SDK types) is parsed `--repeat` times two ways:
  * parley: orjson + the provider's parser (a few type checks per event, providers/*_events.py);
  * sdk:    the SDK's own type per event, validated from the JSON bytes by pydantic (anthropic's
            RawMessageStreamEvent, google-genai's GenerateContentResponse, openai's ResponseStreamEvent),
            which is what building the events from SDK objects would cost before any translation.
It also measures what importing each SDK costs a fresh interpreter (time and resident memory).

Run: `python -m bench.wire_types [--repeat 2000]`. JSON to stdout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from parley.providers.anthropic_events import AnthropicParser
from parley.providers.base import ModelCall
from parley.providers.gemini_events import GeminiParser
from parley.providers.responses_events import ResponsesParser
from parley.testing import fake_anthropic, fake_gemini, fake_responses_upstream
from parley.testing.fake_plan import RequestView, plan

CALL = ModelCall("fixed", [])


def _payloads(frames: list[bytes]) -> list[bytes]:
    out = []
    for frame in frames:
        for line in frame.replace(b"\r\n", b"\n").split(b"\n"):
            if line.startswith(b"data:"):
                out.append(line[5:].strip())
    return out


def streams() -> dict[str, list[bytes]]:
    answer = plan("fixed", RequestView())
    usage = {"input_tokens": 8, "output_tokens": 32, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    responses = fake_responses_upstream.build("fixed", {"model": "fixed"}, plan("fixed", RequestView()))
    return {
        "anthropic": _payloads(fake_anthropic.frames("fixed", answer, usage)),
        "gemini": _payloads([b"data: " + orjson.dumps(c) for c in fake_gemini.chunks("fixed", answer, False)]),
        "openai_responses": _payloads(responses.frames),
    }


def _parley(kind: str) -> Callable[[list[bytes]], None]:
    parsers = {"anthropic": AnthropicParser, "gemini": GeminiParser, "openai_responses": ResponsesParser}

    def parse(payloads: list[bytes]) -> None:
        parser = parsers[kind](CALL, 1_000_000)  # type: ignore[abstract]
        for payload in payloads:
            parser.event(orjson.loads(payload))
        parser.end()

    return parse


def _sdk(kind: str) -> Callable[[list[bytes]], None]:
    from pydantic import TypeAdapter

    if kind == "anthropic":
        from anthropic.types import RawMessageStreamEvent

        adapter: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
        validate: Callable[[bytes], Any] = adapter.validate_json
        skip = (b'{"type":"ping"}',)
    elif kind == "gemini":
        from google.genai import types

        validate = types.GenerateContentResponse.model_validate_json
        skip = ()
    else:
        from openai.types.responses import ResponseStreamEvent

        validate = TypeAdapter(ResponseStreamEvent).validate_json
        skip = ()

    def parse(payloads: list[bytes]) -> None:
        for payload in payloads:
            if payload not in skip:
                validate(payload)

    return parse


def _time(fn: Callable[[list[bytes]], None], payloads: list[bytes], repeat: int) -> float:
    fn(payloads)  # warm up (the SDK builds its validators lazily)
    started = time.perf_counter()
    for _ in range(repeat):
        fn(payloads)
    return (time.perf_counter() - started) / repeat * 1e6


def import_cost(module: str) -> dict[str, float]:
    rss = "int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])"
    code = (f"import time; r0 = {rss}; t = time.perf_counter(); import {module}; dt = time.perf_counter() - t; "
            f"print(dt * 1000, ({rss} - r0) / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return {"ms": round(float(out[0]), 1), "rss_mb": round(float(out[1]), 1)}


def run(repeat: int) -> dict[str, Any]:
    report: dict[str, Any] = {"benchmark": "wire_types", "repeat": repeat, "answer_tokens": 32, "formats": {}}
    for kind, payloads in streams().items():
        parley_us = _time(_parley(kind), payloads, repeat)
        sdk_us = _time(_sdk(kind), payloads, repeat)
        report["formats"][kind] = {
            "events": len(payloads), "parley_us_per_stream": round(parley_us, 1),
            "sdk_us_per_stream": round(sdk_us, 1), "sdk_over_parley": round(sdk_us / parley_us, 1),
            "parley_us_per_event": round(parley_us / len(payloads), 2),
            "sdk_us_per_event": round(sdk_us / len(payloads), 2),
        }
    report["import"] = {name: import_cost(name) for name in ("anthropic", "google.genai", "openai")}
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.wire_types", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000, help="streams parsed per format and way (default 2000)")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.repeat), indent=2))


if __name__ == "__main__":
    main()
