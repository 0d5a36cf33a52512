"""The fuzz test's server: Parley in-process on an event loop of its own thread, so the (sync) hypothesis tests can
send requests to one app for the whole module. Its upstream is the fake Chat Completions server, called with a
recognisable key that must never appear in a reply; the warnings and errors logged during a request are kept to
explain a failure."""

from __future__ import annotations

import asyncio
import logging
import threading
import traceback
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from fuzz_strategies import MODELS, PLACEHOLDERS, UPSTREAM_SECRET
from pydantic import SecretStr

from parley.config import EmbeddedConfig, ModelConfig, Settings
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import InProcess, in_process

REQUEST_TIMEOUT_S = 30.0


@dataclass
class Reply:
    status: int
    content_type: str
    body: bytes
    logs: list[str]
    crash: str | None = None  # the exception the app let escape (the transport re-raises it), with its traceback


class _Records(logging.Handler):
    """Warnings and errors logged while a request runs, with their tracebacks."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class FuzzServer:
    """One app and its fake upstream on a private event loop; `send` is called from the test's thread."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.ids: dict[str, str] = {}  # placeholder (fuzz_strategies.PLACEHOLDERS) -> a real object's id
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="fuzz-parley")
        self._stack = AsyncExitStack()
        self._records = _Records()
        self._app: InProcess | None = None

    def __enter__(self) -> FuzzServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(60)
        logging.getLogger().addHandler(self._records)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeHandler(self._records)
        asyncio.run_coroutine_threadsafe(self._stack.aclose(), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        fake = FakeUpstream()
        await fake.start()
        self._stack.push_async_callback(fake.stop)
        models = [ModelConfig(id=name, base_url=fake.base_url, upstream_model=upstream,
                              api_key=SecretStr(UPSTREAM_SECRET)) for name, upstream in MODELS.items()]
        settings = Settings(data_dir=self.data_dir, models=models, embedded=EmbeddedConfig(enabled=False))
        self._app = await self._stack.enter_async_context(in_process(settings))
        http = self._app.http
        created = (await http.post("/v1/responses", json={"model": "fake", "input": "hi"})).json()
        background = (await http.post("/v1/responses", json={"model": "fake", "input": "hi",
                                                             "background": True})).json()
        conversation = (await http.post("/v1/conversations", json={"items": [
            {"type": "message", "role": "user", "content": "hello"}]})).json()
        items = (await http.get(f"/v1/conversations/{conversation['id']}/items")).json()
        prompt = (await http.post("/v1/prompts", json={"instructions": "Be {{tone}}.", "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "About {{topic}}"}]}]})).json()
        real = (created["id"], background["id"], conversation["id"], items["data"][0]["id"], prompt["id"])
        self.ids = dict(zip(PLACEHOLDERS, real, strict=True))

    def send(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> Reply:
        self._records.lines.clear()
        future = asyncio.run_coroutine_threadsafe(self._send(method, url, body, headers), self._loop)
        reply = future.result(REQUEST_TIMEOUT_S + 5)
        reply.logs = list(self._records.lines)
        return reply

    async def _send(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> Reply:
        assert self._app is not None
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                response = await self._app.http.request(method, url, content=body, headers=headers)
        except TimeoutError:
            return Reply(0, "", b"", [], crash=f"no complete reply within {REQUEST_TIMEOUT_S} s")
        except Exception:
            return Reply(0, "", b"", [], crash=traceback.format_exc())
        return Reply(response.status_code, response.headers.get("content-type", ""), response.content, [])
