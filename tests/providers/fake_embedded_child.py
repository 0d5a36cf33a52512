"""A stand-in for llama-cpp-python's server as the embedded model's child (EmbeddedConfig.server_command).

    python fake_embedded_child.py MODE [--record DIR] --config_file PATH

MODE: `segfault` (writes to stderr, then SIGSEGV at start-up), `exit` (an error message, exit code 3),
`hang` (never serves), `crash-on-use` (serves GET /v1/models, SIGSEGV at the first chat completion), `serve`
(streams the JSON of the request body it got back as the answer; a message containing "forever" streams
until the client goes away). With --record DIR it writes its pid to DIR/pid, each request body to
DIR/requests.jsonl and one line to DIR/disconnects per stream its client left.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def _crash(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
    # To this thread: a process-wide kill() may be taken by another thread while this one goes on answering.
    signal.pthread_kill(threading.get_ident(), signal.SIGSEGV)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mode = "serve"
    record: Path | None = None

    def log_message(self, format: str, *args: Any) -> None:
        print(format % args, file=sys.stderr, flush=True)

    def do_GET(self) -> None:
        body = json.dumps({"object": "list", "data": [{"id": "fake", "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if self.record is not None:
            with (self.record / "requests.jsonl").open("a") as out:
                out.write(json.dumps(request) + "\n")
        if self.mode == "crash-on-use":
            _crash("fake child: ggml_backend_amx_mul_mat: crashing at the first decode")
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        forever = "forever" in json.dumps(request["messages"])
        try:
            if forever:
                while True:
                    self._chunk({"content": "x"})
                    time.sleep(0.01)
            self._chunk({"content": json.dumps(request)})
            self._chunk({}, "stop")
            self._send(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            if self.record is not None:
                with (self.record / "disconnects").open("a") as out:
                    out.write("disconnected\n")
            self.close_connection = True

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> None:
        chunk = {"object": "chat.completion.chunk", "model": "fake",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        self._send(b"data: " + json.dumps(chunk).encode() + b"\n\n")

    def _send(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["segfault", "exit", "hang", "crash-on-use", "serve"])
    parser.add_argument("--record", type=Path)
    parser.add_argument("--config_file", type=Path, required=True)
    args = parser.parse_args()
    if args.record is not None:
        args.record.mkdir(parents=True, exist_ok=True)
        (args.record / "pid").write_text(str(os.getpid()))
    config = json.loads(args.config_file.read_text())
    print(f"fake child: loading {config['models'][0]['model']}", file=sys.stderr, flush=True)
    if args.mode == "segfault":
        _crash("fake child: illegal memory access in llama_decode")
    if args.mode == "exit":
        sys.exit("fake child: error loading model: unknown model architecture")
    if args.mode == "hang":
        while True:
            time.sleep(1)
    _Handler.mode = args.mode
    _Handler.record = args.record
    ThreadingHTTPServer((config["host"], config["port"]), _Handler).serve_forever()


if __name__ == "__main__":
    main()
