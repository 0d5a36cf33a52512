"""The SSRF guard: every server-side fetch of a URL that a client or a model chose (`file_url`, image URLs, web
pages, MCP servers) goes through `UrlFetcher`.

A host is resolved, and refused if any of its addresses is loopback, link-local, private (RFC 1918, ULA),
multicast, unspecified or otherwise not globally routable (IPv4 and IPv6; IPv4-mapped, 6to4 and Teredo IPv6
addresses are judged by the IPv4 address inside) unless the configuration allows that host or network
(`[fetch] allow`). The check happens where the connection is made (an httpcore network backend), and the
connection goes to the very address that was checked: a DNS answer cannot change between check and connect
(rebinding), and every redirect is a new request, checked again. Bodies are bounded in bytes, the whole fetch
(redirects included) in time; no proxy from the environment is used.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urljoin, urlsplit

import certifi
import httpcore

from parley.errors import UrlFetchFailed

log = logging.getLogger("parley.fetch")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "Parley (server-side fetch)"


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[Address]:
        """Every address of `host` (never empty: raise OSError if there is none)."""
        ...


class SystemResolver:
    """The operating system's resolver (getaddrinfo, in the event loop's thread pool)."""

    async def resolve(self, host: str, port: int) -> list[Address]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        found: list[Address] = []
        for *_, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if address not in found:
                found.append(address)
        return found


def address_refusal(address: Address) -> str | None:
    """Why an address may not be fetched from by default (None: it is a global unicast address)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None:
            return address_refusal(embedded)
    checks = (("loopback", address.is_loopback), ("unspecified", address.is_unspecified),
              ("link-local", address.is_link_local), ("multicast", address.is_multicast),
              ("reserved", address.is_reserved), ("private", address.is_private))
    for reason, matches in checks:
        if matches:
            return reason
    return None if address.is_global else "reserved"


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """Which non-global hosts and networks may be fetched from anyway (hosts by name, case-insensitive)."""

    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[Network, ...] = ()

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> FetchPolicy:
        """`["127.0.0.1/32", "::1", "files.internal"]`: CIDRs, addresses or host names."""
        hosts: set[str] = set()
        networks: list[Network] = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def refusal(self, host: str, address: Address) -> str | None:
        if host.lower().rstrip(".") in self.allow_hosts:
            return None
        reason = address_refusal(address)
        if reason is None:
            return None
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        if any(address in network or (mapped is not None and mapped in network) for network in self.allow_networks):
            return None
        return reason


@dataclass(frozen=True, slots=True)
class FetchLimits:
    timeout_s: float = 30.0
    max_bytes: int = 64 * 1024 * 1024
    max_redirects: int = 5


@dataclass(frozen=True, slots=True)
class FetchResult:
    """A fetched body: `url` is the final URL (after redirects); `truncated` when it was cut at max_bytes."""

    url: str
    status: int
    content_type: str
    body: bytes
    truncated: bool = False


class _Refused(Exception):
    """Raised where the connection would be made; becomes UrlFetchFailed(url_refused)."""


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the guard in front: resolve, check every address, connect to a checked
    one. TLS still verifies the certificate against the host name (httpcore passes it as server_hostname)."""

    def __init__(self, policy: FetchPolicy, resolver: Resolver) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(  # httpcore's interface, `timeout` included
        self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self.checked_addresses(host, port)
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as err:
                failure = err
        assert failure is not None
        raise failure

    async def checked_addresses(self, host: str, port: int) -> list[Address]:
        try:
            addresses: list[Address] = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                addresses = await self._resolver.resolve(host, port)
            except OSError as err:
                raise httpcore.ConnectError(f"cannot resolve {host}: {err}") from None
        if not addresses:
            raise httpcore.ConnectError(f"{host} has no address")
        for address in addresses:
            reason = self._policy.refusal(host, address)
            if reason is not None:
                log.info("fetch refused: %s resolves to %s (%s)", host, address, reason)
                raise _Refused(f"its host resolves to a {reason} address")
        return addresses

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None,  # noqa: ASYNC109
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise _Refused("unix sockets are never fetched from")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class UrlFetcher:
    """GET a URL through the guard. One per app (a keep-alive pool); `close()` it at shutdown."""

    def __init__(self, policy: FetchPolicy, limits: FetchLimits, resolver: Resolver | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.limits = limits
        context = ssl_context or ssl.create_default_context(cafile=certifi.where())
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context, max_connections=50, keepalive_expiry=5.0, retries=0,
            network_backend=GuardedBackend(policy, resolver or SystemResolver()),
        )

    async def close(self) -> None:
        await self._pool.aclose()

    async def fetch(self, url: str, *, max_bytes: int | None = None, timeout_s: float | None = None,
                    truncate: bool = False, param: str | None = None) -> FetchResult:
        """The body at `url` (2xx only), following up to `max_redirects` redirects. Past `max_bytes` the body
        is cut (`truncate`) or refused (`url_too_large`). Every failure is UrlFetchFailed naming `param`."""
        limit = max_bytes if max_bytes is not None else self.limits.max_bytes
        seconds = timeout_s if timeout_s is not None else self.limits.timeout_s
        try:
            async with asyncio.timeout(seconds):
                return await self._follow(url, limit, truncate, param)
        except TimeoutError:
            raise UrlFetchFailed(f"Fetching {_shown(url)} took longer than {seconds:g} seconds.", "url_timeout",
                                 param) from None

    async def _follow(self, url: str, limit: int, truncate: bool, param: str | None) -> FetchResult:
        current = url
        for _ in range(self.limits.max_redirects + 1):
            target = _target(current, param)
            try:
                async with self._pool.stream("GET", target.url, headers=target.headers) as response:
                    location = _header(response.headers, b"location")
                    if response.status in _REDIRECTS and location:
                        current = urljoin(current, location)
                        continue
                    if not 200 <= response.status < 300:
                        raise UrlFetchFailed(f"{_shown(current)} answered HTTP {response.status}.", param=param)
                    body, cut = await _read(response, limit, truncate, current, param)
                    content_type = _header(response.headers, b"content-type")
                    return FetchResult(current, response.status, content_type, body, cut)
            except _Refused as err:
                raise UrlFetchFailed(f"Refused to fetch {_shown(current)}: {err} (server-side fetches of loopback, "
                                     "private and link-local addresses are off unless the server allows them).",
                                     "url_refused", param) from None
            except httpcore.TimeoutException:
                raise UrlFetchFailed(f"Fetching {_shown(current)} timed out.", "url_timeout", param) from None
            except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as err:
                raise UrlFetchFailed(f"Fetching {_shown(current)} failed: {err or type(err).__name__}.",
                                     param=param) from None
        raise UrlFetchFailed(f"{_shown(url)} redirected more than {self.limits.max_redirects} times.", param=param)


@dataclass(frozen=True, slots=True)
class _Target:
    url: httpcore.URL
    headers: list[tuple[bytes, bytes]]


def _target(url: str, param: str | None) -> _Target:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UrlFetchFailed(f"{_shown(url)} is not a valid URL.", "invalid_value", param) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlFetchFailed(f"{_shown(url)} is not an http(s) URL.", "invalid_value", param)
    host = parts.hostname
    try:
        ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise UrlFetchFailed(f"{_shown(url)} has an invalid host name.", "invalid_value", param) from None
    bracketed = f"[{ascii_host}]" if ":" in ascii_host else ascii_host
    authority = bracketed if port is None else f"{bracketed}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    target = httpcore.URL(scheme=parts.scheme, host=ascii_host, port=port, target=path)
    headers = [(b"Host", authority.encode()), (b"User-Agent", USER_AGENT.encode()), (b"Accept", b"*/*"),
               (b"Accept-Encoding", b"gzip, deflate")]
    return _Target(target, headers)


async def _read(response: httpcore.Response, limit: int, truncate: bool, url: str,
                param: str | None) -> tuple[bytes, bool]:
    """The body, decoded from gzip/deflate, at most `limit` bytes after decoding (a compressed bomb is cut
    as it inflates, never inflated whole)."""
    encoding = _header(response.headers, b"content-encoding").lower()
    if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
        raise UrlFetchFailed(f"{_shown(url)} sent an unsupported content-encoding ({encoding}).", param=param)
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if "gzip" in encoding else zlib.MAX_WBITS) \
        if encoding not in ("", "identity") else None
    body = bytearray()
    async for piece in response.aiter_stream():
        if inflater is not None:
            try:
                piece = inflater.decompress(piece, limit + 1 - len(body))
            except zlib.error:
                raise UrlFetchFailed(f"{_shown(url)} sent a corrupt {encoding} body.", param=param) from None
        body += piece
        if len(body) > limit:
            if not truncate:
                raise UrlFetchFailed(f"{_shown(url)} is larger than the limit of {limit} bytes.", "url_too_large",
                                     param)
            return bytes(body[:limit]), True
    return bytes(body), False


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return ""


def _shown(url: str) -> str:
    """The URL as errors show it: without credentials, and not endless."""
    try:
        parts = urlsplit(url)
        if parts.username or parts.password:
            url = parts._replace(netloc=parts.hostname or "").geturl()
    except ValueError:
        pass
    return url if len(url) <= 200 else url[:200] + "..."
