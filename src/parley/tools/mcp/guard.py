"""The SSRF guard for MCP servers a client names by URL: the MCP SDK's HTTP client (httpx2) connects only to
addresses the guard of retrieval/fetch.py allows.

Its transport's network backend resolves the host, refuses it when any address is loopback, private,
link-local or otherwise not global (unless `[fetch] allow` lists the host or network: one allowlist for every
server-side fetch) and connects to the very address it checked, so a DNS answer cannot change between check
and connect; TLS still verifies the host name. Every connection is checked, redirects included. `refusal()`
is the same check made up front, so a refused URL is a 400 naming the parameter rather than a failed listing.
Operators' own servers (`[[mcp_servers]]`) are trusted and not guarded.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from collections.abc import Iterable
from urllib.parse import urlsplit

import certifi
import httpcore2
import httpx2

from parley.retrieval.fetch import Address, FetchPolicy, Resolver

log = logging.getLogger("parley.mcp")


class GuardedNetwork(httpcore2.AsyncNetworkBackend):
    """httpcore2's network backend with the guard in front: resolve, check every address, connect to one."""

    def __init__(self, policy: FetchPolicy, resolver: Resolver) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(  # httpcore2's interface, `timeout` included
        self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        try:
            addresses = await checked_addresses(self._policy, self._resolver, host, port)
        except OSError as err:
            raise httpcore2.ConnectError(str(err)) from None
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as err:
                failure = err
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        raise httpcore2.ConnectError("unix sockets are never connected to")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class Refused(OSError):
    """The host resolves to an address the guard does not allow."""


async def checked_addresses(policy: FetchPolicy, resolver: Resolver, host: str, port: int) -> list[Address]:
    """Every address of `host`, each allowed by `policy` (Refused if one is not; OSError if none resolves)."""
    try:
        addresses: list[Address] = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        addresses = await resolver.resolve(host, port)
    if not addresses:
        raise OSError(f"{host} has no address")
    for address in addresses:
        reason = policy.refusal(host, address)
        if reason is not None:
            log.info("MCP connection refused: %s resolves to %s (%s)", host, address, reason)
            raise Refused(f"its host resolves to a {reason} address")
    return addresses


async def refusal(url: str, policy: FetchPolicy, resolver: Resolver) -> str | None:
    """Why the guard would refuse to connect to `url` (None: allowed, or its host does not resolve: the
    connection then fails like any unreachable server)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        await checked_addresses(policy, resolver, host, port)
    except Refused as err:
        return str(err)
    except (OSError, ValueError):
        return None
    return None


class GuardedTransport(httpx2.AsyncHTTPTransport):
    """httpx2's transport over a connection pool whose network backend is the guard. httpx2 takes no network
    backend, so the pool it builds is replaced (`_pool` is what `handle_async_request` and closing use)."""

    def __init__(self, network: httpcore2.AsyncNetworkBackend, ssl_context: ssl.SSLContext | None = None) -> None:
        context = ssl_context or guard_ssl_context()
        super().__init__(verify=context, trust_env=False)  # (its own pool, unused, then built without cost)
        self._pool = httpcore2.AsyncConnectionPool(ssl_context=context, max_connections=20, keepalive_expiry=5.0,
                                                   network_backend=network)


def guard_ssl_context() -> ssl.SSLContext:
    """TLS for servers a client names: certifi's CA bundle, as every guarded fetch (retrieval/fetch.py)."""
    return ssl.create_default_context(cafile=certifi.where())
