"""The SSRF guard against a real local HTTP server: loopback, private, link-local and other non-global
addresses refused (literal, resolved by name, reached by a redirect), the allowlist, the connection made to the
address that was checked, and the size and time limits."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from pydantic import ValidationError

from parley.config import FetchConfig
from parley.errors import UrlFetchFailed
from parley.retrieval.fetch import (
    Address,
    FetchLimits,
    FetchPolicy,
    SystemResolver,
    UrlFetcher,
    address_refusal,
)

LOOPBACK = ["127.0.0.1/32"]


@dataclass
class Server:
    port: int
    v6_port: int  # the same server on [::1]
    hosts: list[str] = field(default_factory=list)  # the Host header of every request

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[Server]:
    seen: list[str] = []

    async def page(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Host", ""))
        return web.Response(text="<html><title>t</title><p>hello</p></html>", content_type="text/html")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * int(request.query["n"]), content_type="application/octet-stream")

    async def bomb(request: web.Request) -> web.Response:
        body = gzip.compress(b"\0" * 50_000_000)  # ~50 KB on the wire, 50 MB inflated
        return web.Response(body=body, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.5)
        return web.Response(text="late")

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404, text="no")

    app = web.Application()
    app.add_routes([web.get("/page", page), web.get("/redirect", redirect), web.get("/loop", loop),
                    web.get("/big", big), web.get("/bomb", bomb), web.get("/slow", slow),
                    web.get("/missing", missing)])
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    v6 = web.TCPSite(runner, "::1", 0)
    await v6.start()
    ports = {address[0]: address[1] for address in runner.addresses}
    yield Server(ports["127.0.0.1"], ports["::1"], seen)
    await runner.cleanup()


class FakeResolver:
    """Names to addresses, counting lookups (the guard must resolve once per connection, and connect there)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    async def resolve(self, host: str, port: int) -> list[Address]:
        self.lookups.append(host)
        if host not in self.answers:
            raise OSError(f"unknown host {host}")
        return [ipaddress.ip_address(a) for a in self.answers[host]]


@pytest.fixture
async def fetcher_factory() -> AsyncIterator[list[UrlFetcher]]:
    made: list[UrlFetcher] = []
    yield made
    for fetcher in made:
        await fetcher.close()


def _fetcher(made: list[UrlFetcher], allow: list[str] | None = None, resolver: FakeResolver | None = None,
             **limits: float) -> UrlFetcher:
    fetcher = UrlFetcher(FetchPolicy.from_entries(allow or []), FetchLimits(**limits),  # type: ignore[arg-type]
                         resolver=resolver)
    made.append(fetcher)
    return fetcher


async def _refused(fetcher: UrlFetcher, url: str) -> UrlFetchFailed:
    with pytest.raises(UrlFetchFailed) as caught:
        await fetcher.fetch(url, param="input[0].content[0].file_url")
    assert caught.value.code == "url_refused", caught.value.message
    assert caught.value.status == 400 and caught.value.param == "input[0].content[0].file_url"
    return caught.value


@pytest.mark.parametrize(("address", "reason"), [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"), ("0.0.0.0", "unspecified"),
    ("::", "unspecified"), ("169.254.169.254", "link-local"), ("fe80::1", "link-local"), ("10.1.2.3", "private"),
    ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fd12:3456::1", "private"), ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"), ("100.64.0.1", "reserved"), ("240.0.0.1", "reserved"), ("192.0.2.1", "private"),
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.0.0.1", "private"), ("2002:7f00:1::1", "loopback"),
    ("2002:c0a8:101::1", "private"), ("8.8.8.8", None), ("2606:4700:4700::1111", None), ("::ffff:8.8.8.8", None),
])
def test_address_rules(address: str, reason: str | None) -> None:
    assert address_refusal(ipaddress.ip_address(address)) == reason


async def test_loopback_and_private_literals_are_refused(server: Server, fetcher_factory: list[UrlFetcher]) -> None:
    fetcher = _fetcher(fetcher_factory)
    for host in ("127.0.0.1", "[::1]", "0.0.0.0", "169.254.169.254", "10.0.0.1", "[::ffff:127.0.0.1]",
                 "2130706433"):  # the last one is 127.0.0.1 written as one number
        await _refused(fetcher, server.url("/page", host))


async def test_a_name_resolving_to_loopback_is_refused_by_the_system_resolver(
    server: Server, fetcher_factory: list[UrlFetcher]
) -> None:
    assert ipaddress.ip_address("127.0.0.1") in await SystemResolver().resolve("localhost", 80)
    error = await _refused(_fetcher(fetcher_factory), server.url("/page", "localhost"))
    assert "loopback" in error.message


async def test_a_name_resolving_to_a_private_address_is_refused(
    server: Server, fetcher_factory: list[UrlFetcher]
) -> None:
    resolver = FakeResolver({"intranet.example": ["10.1.2.3"], "mixed.example": ["93.184.216.34", "192.168.0.9"]})
    fetcher = _fetcher(fetcher_factory, resolver=resolver)
    await _refused(fetcher, "http://intranet.example/secret")
    await _refused(fetcher, "https://mixed.example/")  # one private answer is enough
    with pytest.raises(UrlFetchFailed) as unknown:
        await fetcher.fetch("http://nowhere.example/")
    assert unknown.value.code == "url_fetch_failed" and "resolve" in unknown.value.message


async def test_the_allowlist_lets_a_network_or_a_host_through(
    server: Server, fetcher_factory: list[UrlFetcher]
) -> None:
    by_network = _fetcher(fetcher_factory, LOOPBACK)
    result = await by_network.fetch(server.url("/page"))
    assert (result.status, result.url, result.truncated) == (200, server.url("/page"), False)
    assert result.content_type.startswith("text/html") and b"hello" in result.body
    await _refused(by_network, server.url("/page", "127.0.0.2"))  # loopback, but not in 127.0.0.1/32

    resolver = FakeResolver({"files.internal": ["127.0.0.1"]})
    by_name = _fetcher(fetcher_factory, ["files.internal"], resolver)
    named = await by_name.fetch(server.url("/page", "files.internal"))
    assert named.status == 200 and server.hosts[-1] == f"files.internal:{server.port}"
    v6 = _fetcher(fetcher_factory, ["::1"])
    await v6.fetch(f"http://[::1]:{server.v6_port}/page")
    assert server.hosts[-1] == f"[::1]:{server.v6_port}"


async def test_the_connection_goes_to_the_address_that_was_checked(
    server: Server, fetcher_factory: list[UrlFetcher]
) -> None:
    class Rebinding(FakeResolver):
        """Answers an allowed address once, then a forbidden one: a second lookup would be a rebinding."""

        async def resolve(self, host: str, port: int) -> list[Address]:
            self.lookups.append(host)
            first = len(self.lookups) == 1
            return [ipaddress.ip_address("127.0.0.1" if first else "10.9.9.9")]

    resolver = Rebinding({})
    fetcher = _fetcher(fetcher_factory, LOOPBACK, resolver)
    result = await fetcher.fetch(server.url("/page", "rebind.example"))
    assert result.status == 200 and resolver.lookups == ["rebind.example"]
    assert server.hosts[-1] == f"rebind.example:{server.port}"  # same Host, connected to the checked address


async def test_redirects_are_checked_again(server: Server, fetcher_factory: list[UrlFetcher]) -> None:
    fetcher = _fetcher(fetcher_factory, LOOPBACK)
    followed = await fetcher.fetch(server.url("/redirect?to=/page"))
    assert followed.url == server.url("/page") and b"hello" in followed.body
    for target in (server.url("/page", "127.0.0.2"), f"http://[::1]:{server.port}/page",
                   "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/"):
        error = await _refused(fetcher, server.url(f"/redirect?to={target}"))
        assert "Refused to fetch" in error.message
    with pytest.raises(UrlFetchFailed, match="redirected more than"):
        await fetcher.fetch(server.url("/loop"))


async def test_size_limits(server: Server, fetcher_factory: list[UrlFetcher]) -> None:
    fetcher = _fetcher(fetcher_factory, LOOPBACK, max_bytes=1000)
    with pytest.raises(UrlFetchFailed) as too_large:
        await fetcher.fetch(server.url("/big?n=5000"))
    assert too_large.value.code == "url_too_large"
    cut = await fetcher.fetch(server.url("/big?n=5000"), truncate=True)
    assert cut.truncated and cut.body == b"x" * 1000
    whole = await fetcher.fetch(server.url("/big?n=1000"))
    assert not whole.truncated and len(whole.body) == 1000
    bigger = await fetcher.fetch(server.url("/big?n=5000"), max_bytes=10_000)
    assert len(bigger.body) == 5000
    bomb = _fetcher(fetcher_factory, LOOPBACK, max_bytes=1_000_000)
    with pytest.raises(UrlFetchFailed) as inflated:
        await bomb.fetch(server.url("/bomb"))
    assert inflated.value.code == "url_too_large"


async def test_time_limit_status_and_scheme(server: Server, fetcher_factory: list[UrlFetcher]) -> None:
    fetcher = _fetcher(fetcher_factory, LOOPBACK, timeout_s=0.3)
    with pytest.raises(UrlFetchFailed) as late:
        await fetcher.fetch(server.url("/slow"))
    assert late.value.code == "url_timeout"
    with pytest.raises(UrlFetchFailed, match="HTTP 404") as missing:
        await fetcher.fetch(server.url("/missing"))
    assert missing.value.code == "url_fetch_failed"
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/x", "gopher://127.0.0.1:70/", "http:///nohost", "not a url"):
        with pytest.raises(UrlFetchFailed) as wrong:
            await fetcher.fetch(url)
        assert wrong.value.code == "invalid_value"
    with pytest.raises(UrlFetchFailed) as closed:
        await fetcher.fetch("http://127.0.0.1:9/")  # nothing listens on the discard port
    assert closed.value.code == "url_fetch_failed"


def test_policy_entries() -> None:
    policy = FetchPolicy.from_entries(["10.0.0.0/8", "fd00::/8", "Files.Internal.", "127.0.0.1"])
    assert policy.refusal("x", ipaddress.ip_address("10.2.3.4")) is None
    assert policy.refusal("x", ipaddress.ip_address("::ffff:10.2.3.4")) is None
    assert policy.refusal("x", ipaddress.ip_address("fd00::5")) is None
    assert policy.refusal("files.internal", ipaddress.ip_address("192.168.1.1")) is None
    assert policy.refusal("x", ipaddress.ip_address("127.0.0.1")) is None
    assert policy.refusal("x", ipaddress.ip_address("127.0.0.2")) == "loopback"
    assert policy.refusal("x", ipaddress.ip_address("192.168.1.1")) == "private"


def test_allow_entries_are_checked_at_load() -> None:
    assert FetchConfig(allow=["127.0.0.1/32", "::1", "files.internal", "10.0.0.1"]).allow[2] == "files.internal"
    for wrong in ("10.0.0.0/33", "http://host", "host name", ""):
        with pytest.raises(ValidationError):
            FetchConfig(allow=[wrong])
