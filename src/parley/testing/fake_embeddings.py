"""A fake OpenAI-compatible embeddings server over real HTTP, for tests and benchmarks.

`POST /v1/embeddings {model, input: str | [str], encoding_format?, dimensions?}` answers
`{"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model", "usage"}` with deterministic
vectors: each word hashed into `dimensions` signed buckets (a bag of words: texts sharing words are similar).
A key, if set, must come as `Authorization: Bearer <key>` (else a 401 in OpenAI's shape). An input containing
"boom" gets a 500, "ratelimit" a 429; `delay_s` slows every request. Every request body is recorded in `requests`.

To catch a server mid-ingestion without timing anything: while `hold_after` is set, every request past the first
`hold_after` (counting all of `requests`) waits unanswered until it is None again; `held` is how many wait now, and
`abandoned` counts those whose client hung up while they waited (the server stopped that work). Set from any thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web

from parley.testing.fake_server import Threaded, serve_app

_WORD = re.compile(r"\w+")


def bag_of_words(text: str, dimensions: int) -> list[float]:
    vector = np.zeros(dimensions, dtype=np.float64)
    for word in _WORD.findall(text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        bucket = int.from_bytes(digest[:4], "little") % dimensions
        vector[bucket] += 1.0 if digest[4] & 1 else -1.0
    norm = float(np.linalg.norm(vector))
    if norm == 0:
        vector[0] = 1.0
        norm = 1.0
    return [float(x) for x in vector / norm]


@dataclass
class FakeEmbeddings:
    dimensions: int = 64
    key: str | None = None
    delay_s: float = 0.0
    hold_after: int | None = None
    held: int = 0
    abandoned: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/embeddings", self._embeddings)
        return app

    async def start(self) -> None:
        self._runner, self.port = await serve_app(self.app(), self.port, shutdown_timeout=0.5)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _embeddings(self, request: web.Request) -> web.Response:
        if self.key is not None and request.headers.get("authorization") != f"Bearer {self.key}":
            return web.json_response({"error": {"message": "Incorrect API key provided.", "type":
                                                "invalid_request_error", "code": "invalid_api_key"}}, status=401)
        body = await request.json()
        self.requests.append(body)
        if self.hold_after is not None and len(self.requests) > self.hold_after and not await self._hold(request):
            return web.Response()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return web.json_response({"error": {"message": "input must be a string or an array of strings",
                                                "type": "invalid_request_error"}}, status=400)
        joined = " ".join(texts)
        if "boom" in joined:
            return web.json_response({"error": {"message": "internal failure", "type": "server_error"}}, status=500)
        if "ratelimit" in joined:
            return web.json_response({"error": {"message": "slow down", "type": "rate_limit_error"}}, status=429)
        dimensions = int(body.get("dimensions") or self.dimensions)
        data = [{"object": "embedding", "index": i, "embedding": bag_of_words(t, dimensions)}
                for i, t in enumerate(texts)]
        tokens = sum(len(t.split()) for t in texts)
        return web.json_response({"object": "list", "data": data, "model": body.get("model"),
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def _hold(self, request: web.Request) -> bool:
        """Wait while `hold_after` is set; False (counted in `abandoned`) if the client goes away first."""
        self.held += 1
        try:
            for _ in itertools.count():
                if self.hold_after is None:
                    return True
                if request.transport is None or request.transport.is_closing():
                    self.abandoned += 1
                    return False
                await asyncio.sleep(0.02)
            raise AssertionError("unreachable")
        finally:
            self.held -= 1


class ThreadedFakeEmbeddings(Threaded[FakeEmbeddings]):
    """The fake on its own event loop in a daemon thread (for servers in other processes)."""

    def __init__(self, fake: FakeEmbeddings | None = None) -> None:
        super().__init__(lambda: fake or FakeEmbeddings(), "fake-embeddings")
