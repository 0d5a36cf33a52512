"""Bearer-key authentication: a key resolves to its project. Keys are looked up by hash, cached briefly.

Local development mode: when no key exists at all, any bearer (or none) maps to the `default`
project. The CLI refuses to bind a non-loopback address in that mode unless explicitly allowed.
"""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request

from parley.errors import Unauthorized
from parley.store.base import KeyStore
from parley.store.sql import hash_key

DEFAULT_PROJECT = "default"


class Authenticator:
    def __init__(self, keys: KeyStore, cache_ttl_s: float) -> None:
        self._keys = keys
        self._ttl = cache_ttl_s
        self._cache: dict[str, tuple[str | None, float]] = {}
        self._open_mode: tuple[bool, float] = (False, 0.0)
        self._refresh: asyncio.Future[bool] | None = None

    async def open_mode(self) -> bool:
        """True while no API key exists (local development mode). One refresh at a time: when the cached
        answer expires under load, concurrent requests share a single query instead of each sending one."""
        is_open, expires = self._open_mode
        if time.monotonic() < expires:
            return is_open
        if self._refresh is None:
            self._refresh = asyncio.ensure_future(self._load_open_mode())
        refresh = self._refresh
        try:
            return await asyncio.shield(refresh)
        finally:
            if refresh.done() and self._refresh is refresh:
                self._refresh = None

    async def _load_open_mode(self) -> bool:
        is_open = not await self._keys.any_active_key()
        self._open_mode = (is_open, time.monotonic() + self._ttl)
        return is_open

    async def project_of(self, request: Request) -> str:
        if await self.open_mode():
            return DEFAULT_PROJECT
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.")
        digest = hash_key(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now < cached[1]:
            project = cached[0]
        else:
            record = await self._keys.find_key(digest)
            project = record.project_id if record else None
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (project, now + self._ttl)
        if project is None:
            # Never echo the key back: show only its first characters, as OpenAI does.
            raise Unauthorized(f"Incorrect API key provided: {token[:8]}****.")
        return project
