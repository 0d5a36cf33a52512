"""Parley in-process, for tests: the real app and its lifespan behind httpx's ASGI transport, with the
official SDK on top. No sockets, but the same code path as a served request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from openai import AsyncOpenAI

from parley.app import ParleyApp, create_app
from parley.config import Settings


@dataclass
class InProcess:
    app: ParleyApp
    http: httpx.AsyncClient  # base URL http://parley (paths start with /v1)

    def sdk(self, api_key: str = "local") -> AsyncOpenAI:
        # The SDK is typed against its own httpx fork (httpx2); an httpx client works the same at run time.
        return AsyncOpenAI(base_url="http://parley/v1", api_key=api_key, http_client=self.http,  # type: ignore[arg-type]
                           max_retries=0)


@asynccontextmanager
async def in_process(settings: Settings) -> AsyncIterator[InProcess]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://parley")
        try:
            yield InProcess(app, http)
        finally:
            await http.aclose()
