"""What an oversized upstream reply costs Parley: peak RSS of the server process and bytes the client gets.

Starts `parley.testing.faulty_upstream` and `parley serve` (one worker) on free loopback ports, sends one
request for a `huge-<n>mb` reply (streamed and non-streamed) and prints one JSON document: for each mode the
status, the bytes the client received, how the response ended, and the server's RSS before, peak (VmHWM,
a fresh process per mode) and after.

  .venv/bin/python -m bench.big_reply                 # 30 MB, both modes, default caps
  .venv/bin/python -m bench.big_reply --mb 30 --config 'max_output_chars = 100000000'
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.procs import Child, child_env, free_port, sample


def _serve(workdir: Path, upstream_url: str, mb: float, extra: str) -> tuple[Child, str]:
    port = free_port()
    config = workdir / "parley.toml"
    config.write_text(
        f"{extra}\n[[models]]\nid = \"big\"\nbase_url = \"{upstream_url}\"\nupstream_model = \"huge-{mb:g}mb\"\n"
        "read_timeout_s = 120.0\n[embedded]\nenabled = false\n"
    )
    parley = Child("parley", [sys.executable, "-m", "parley.cli.main", "serve", "--port", str(port),
                              "--data-dir", str(workdir / "data"), "--config", str(config),
                              "--log-level", "warning"], workdir / "parley.log", child_env())
    root = f"http://127.0.0.1:{port}"
    parley.wait_ready(root + "/health")
    return parley, root


def _one(root: str, stream: bool) -> dict[str, Any]:
    body = {"model": "big", "input": "write a lot", "stream": stream}
    received = 0
    tail = b""
    terminal = "no terminal event"
    started = time.perf_counter()
    with httpx.Client(timeout=300.0) as http, http.stream("POST", root + "/v1/responses", json=body) as resp:
        for chunk in resp.iter_raw():
            received += len(chunk)
            window = tail[-64:] + chunk
            for kind in (b"response.completed", b"response.failed", b"response.incomplete"):
                if b"event: " + kind + b"\n" in window:
                    terminal = kind.decode()
            tail = window[-4096:]
        status = resp.status_code
    if stream:
        ending = terminal + (" + [DONE]" if tail.endswith(b"data: [DONE]\n\n") else " (no [DONE])")
    else:
        ending = tail[-300:].decode(errors="replace")
    return {"status": status, "client_bytes": received, "ending": ending,
            "seconds": round(time.perf_counter() - started, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=30.0, help="size of the upstream reply's text in MB")
    parser.add_argument("--config", default="", help="extra TOML lines for Parley (e.g. a cap)")
    parser.add_argument("--modes", nargs="+", default=["streaming", "non_streaming"])
    args = parser.parse_args()
    upstream_port = free_port()
    results: dict[str, Any] = {"mb": args.mb, "config": args.config}
    with tempfile.TemporaryDirectory(prefix="parley-big-") as tmp:
        workdir = Path(tmp)
        upstream = Child("upstream", [sys.executable, "-m", "parley.testing.faulty_upstream", "--port",
                                      str(upstream_port)], workdir / "upstream.log", child_env())
        try:
            time.sleep(1.0)
            for mode in args.modes:
                run_dir = workdir / mode
                run_dir.mkdir()
                parley, root = _serve(run_dir, f"http://127.0.0.1:{upstream_port}/v1", args.mb, args.config)
                try:
                    before = sample(parley.pid)
                    outcome = _one(root, stream=mode == "streaming")
                    time.sleep(0.5)
                    after = sample(parley.pid)
                finally:
                    parley.stop()
                results[mode] = {**outcome, "rss_before_mb": round(before.rss_mb, 1),
                                 "rss_peak_mb": round(after.rss_peak_mb, 1),
                                 "rss_peak_delta_mb": round(after.rss_peak_mb - before.rss_mb, 1),
                                 "rss_after_mb": round(after.rss_mb, 1)}
                print(f"{mode}: {results[mode]}", file=sys.stderr)
        finally:
            upstream.stop()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
