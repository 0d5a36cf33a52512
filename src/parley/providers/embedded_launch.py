"""How the embedded model's child is started and how its end is told: its command and llama-cpp-python
config, the last lines of its output, and its exit status in words (signal names, exit codes)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import deque
from pathlib import Path
from typing import Any

from parley.config import EmbeddedConfig

# The second model alias of the child: the same weights loaded with logits for every token, which
# llama-cpp-python needs to answer `logprobs` ("logprobs is not supported for models created with
# logits_all=False", llama.py). Keeping them for every request cost ~190 KB per token of context (a
# 49,152-entry float32 row each): 1.5 GiB after 6,000 tokens. Only requests asking for logprobs use it;
# the server swaps the loaded model when the alias changes.
LOGPROBS_ALIAS_SUFFIX = "+logprobs"
# The child's grammar check (embedded_server.GrammarGate): a chat request's `tools`, `tool_choice` and
# `response_format` in, 200 when they can be decoded under a grammar, else the 400 a chat request would get;
# nothing is generated. A background response's create asks it before queueing (EmbeddedProvider.check).
GRAMMAR_CHECK_PATH = "/parley/grammar_check"
# llama.cpp's ggml_type numbers for the KV cache (ggml.h): GGML_TYPE_F16 = 1, GGML_TYPE_Q8_0 = 8.
_KV_TYPES = {"f16": 1, "q8_0": 8}
_MAX_LINE = 400  # characters of one output line kept (a runaway line must not fill the buffer)


def child_config(cfg: EmbeddedConfig, model_path: Path, port: int) -> dict[str, Any]:
    """llama-cpp-python's server config file (its ConfigFileSettings: server settings plus `models`)."""
    model = {
        "model": str(model_path), "model_alias": cfg.model_id, "n_ctx": cfg.context_window,
        "n_threads": cfg.threads, "n_threads_batch": cfg.threads, "logits_all": False,
        # Flash attention lets the V cache be quantized too (llama.cpp refuses a quantized V cache without it).
        "flash_attn": True, "type_k": _KV_TYPES[cfg.kv_cache_type], "type_v": _KV_TYPES[cfg.kv_cache_type],
    }
    return {
        "host": "127.0.0.1", "port": port,
        # The default (true) ends a running stream with [DONE] as soon as another request waits: concurrent
        # requests would cut each other off. With false they wait their turn for the one model.
        "interrupt_requests": False,
        "models": [model, {**model, "model_alias": cfg.model_id + LOGPROBS_ALIAS_SUFFIX, "logits_all": True}],
    }


def child_command(cfg: EmbeddedConfig, config_path: Path) -> list[str]:
    """The child's argv: the wrapper that ties its life to this process (embedded_child.py), then the server."""
    server = list(cfg.server_command or [sys.executable, "-m", "parley.providers.embedded_server"])
    return [sys.executable, "-m", "parley.providers.embedded_child", str(os.getpid()),
            *server, "--config_file", str(config_path)]


def describe_exit(code: int) -> str:
    """An exit status in words: 'was killed by signal SIGSEGV (11)' or 'exited with code 1'."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "an unknown signal"
        return f"was killed by signal {name} ({-code})"
    return f"exited with code {code}"


class OutputTail:
    """The last lines a child wrote (stdout and stderr together), bounded in count and length."""

    def __init__(self, max_lines: int) -> None:
        self._lines: deque[str] = deque(maxlen=max_lines)

    def add(self, line: str) -> None:
        line = line.rstrip()
        if line:
            self._lines.append(line if len(line) <= _MAX_LINE else line[:_MAX_LINE] + "…")

    def lines(self) -> list[str]:
        return list(self._lines)

    def clear(self) -> None:
        self._lines.clear()

    async def follow(self, stream: asyncio.StreamReader) -> None:
        """Read `stream` to its end. Reads chunks, not lines: a line longer than the reader's limit must not
        stop the reading (a child whose pipe is not drained blocks on its next write)."""
        pending = b""
        while chunk := await stream.read(65536):
            *complete, pending = (pending + chunk).split(b"\n")
            for raw in complete:
                self.add(raw.decode("utf-8", "replace"))
            if len(pending) > _MAX_LINE * 4:
                self.add(pending.decode("utf-8", "replace"))
                pending = b""
        self.add(pending.decode("utf-8", "replace"))
