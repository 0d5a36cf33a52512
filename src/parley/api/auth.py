"""Key authentication (`Authorization: Bearer`, or `x-api-key` as the Anthropic SDKs send it): a key resolves to its
project. Keys are looked up by hash, cached briefly.

Whether keys are required is the `auth` setting, not whether keys happen to exist right now:
- `keys`: every request needs an active key (with none yet, every request is a 401);
- `none`: local development mode, any bearer (or none) maps to the `default` project (the CLI refuses it on
  a non-loopback address unless explicitly allowed);
- `auto` (default): `none` while no key exists, `keys` from the moment one exists (at start-up, or created
  later; checked every `auth_cache_ttl_s` while open) until the server stops. Revoking every key never
  reopens a server that required keys.
A key resolves to a `Caller` (services/keys.py): its project, or for an admin key the admin endpoints only;
an expired key is refused like an unknown one. A key is never logged, nor its hash: only its id or its first
characters.
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal

from starlette.requests import HTTPConnection

from parley.errors import Unauthorized
from parley.services.keys import Caller
from parley.store.base import ApiKeyRecord, KeyStore
from parley.store.sql import hash_key

DEFAULT_PROJECT = "default"
AuthMode = Literal["auto", "keys", "none"]


class Authenticator:
    def __init__(self, keys: KeyStore, cache_ttl_s: float, mode: AuthMode = "auto") -> None:
        self._keys = keys
        self._ttl = cache_ttl_s
        self._mode = mode
        # key hash -> (its caller, when the key expires, until when this entry holds); caller None: no such key
        self._cache: dict[str, tuple[Caller | None, int | None, float]] = {}
        # auto: open until a key is seen, then closed for good (a latch: never back to open).
        self._required = mode == "keys"
        self._next_check = 0.0
        self._refresh: asyncio.Future[bool] | None = None

    async def open_mode(self) -> bool:
        """True while no key is required. In `auto` mode, while open, whether a key exists is checked at
        most every `auth_cache_ttl_s`, one query at a time: when the cached answer expires under load,
        concurrent requests share a single query instead of each sending one."""
        if self._required or self._mode == "none":
            return not self._required
        if time.monotonic() < self._next_check:
            return True
        if self._refresh is None:
            self._refresh = asyncio.ensure_future(self._look_for_keys())
        refresh = self._refresh
        try:
            return not await asyncio.shield(refresh)
        finally:
            if refresh.done() and self._refresh is refresh:
                self._refresh = None

    async def _look_for_keys(self) -> bool:
        if await self._keys.any_active_key():
            self._required = True
        self._next_check = time.monotonic() + self._ttl
        return self._required

    async def project_of(self, request: HTTPConnection) -> str:
        """The project a request acts in (403 for an admin key)."""
        return (await self.caller_of(request)).project

    async def caller_of(self, request: HTTPConnection) -> Caller:
        """The caller of an HTTP request, or of a WebSocket from its upgrade request's headers."""
        if not self._required and await self.open_mode():
            return _OPEN
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            token = request.headers.get("x-api-key", "").strip()  # the Anthropic SDKs' header (api/messages.py)
        if not token:
            raise Unauthorized("You didn't provide an API key. Send it as 'Authorization: Bearer <key>' "
                               "(or 'x-api-key: <key>').")
        digest = hash_key(token)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now < cached[2]:
            caller, expires_at = cached[0], cached[1]
        else:
            record = await self._keys.find_key(digest)
            caller, expires_at = _caller(record)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (caller, expires_at, now + self._ttl)
        if caller is None:
            # Never echo the key back: show only its first characters, as OpenAI does.
            raise Unauthorized(f"Incorrect API key provided: {token[:8]}****.")
        if expires_at is not None and expires_at <= time.time():
            raise Unauthorized(f"The API key {token[:8]}**** has expired.")
        return caller


def _caller(record: ApiKeyRecord | None) -> tuple[Caller | None, int | None]:
    return (Caller.of_key(record), record.expires_at) if record is not None else (None, None)


# Local development mode: the default project, allowed everything (admin endpoints included).
_OPEN = Caller(DEFAULT_PROJECT, admin=True)
