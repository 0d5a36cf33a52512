"""The embedded model's child dies with Parley: a SIGKILLed `parley serve` (which cannot stop anything itself)
leaves no child behind holding its port and memory (PR_SET_PDEATHSIG, providers/embedded_child.py).
A fake child (tests/providers/fake_embedded_child.py) stands in for llama.cpp's server."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import httpx
from compat_support import ParleyServer

FAKE_CHILD = Path(__file__).parent.parent / "providers" / "fake_embedded_child.py"


def _alive(pid: int) -> bool:
    """Running (a zombie holds neither port nor memory: it only waits for its new parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _until(condition_met: object, what: str, limit_s: float = 30.0) -> None:
    """Wait for an event; the limit only ends a test that would otherwise hang."""
    deadline = time.monotonic() + limit_s
    while not callable(condition_met) or not condition_met():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


def test_embedded_child_dies_when_parley_is_sigkilled(tmp_path: Path) -> None:
    record = tmp_path / "child"
    command = [sys.executable, str(FAKE_CHILD), "serve", "--record", str(record)]
    config = (f'[embedded]\nenabled = true\nmodel_id = "fake-embedded"\nmodel_path = "{FAKE_CHILD}"\n'
              f"server_command = {json.dumps(command)}\n")
    server = ParleyServer(tmp_path / "parley", config)
    server.start()
    try:
        def ready() -> bool:
            listed = httpx.get(server.base_url + "/models", timeout=5).json()["data"]
            return bool(listed[0]["status"] == "ready")

        _until(ready, "the embedded model is ready")
        child = int((record / "pid").read_text())
        assert _alive(child)
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(10)
        _until(lambda: not _alive(child), f"the child {child} is gone after its parent was SIGKILLed")
    finally:
        server.stop()
