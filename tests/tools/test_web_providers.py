"""Search providers against local servers speaking the SearXNG, Brave and Tavily APIs over real HTTP, and the
ddgs provider's error mapping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tests.waiting import LIMIT_S

from parley.providers.http1 import Http1Pool
from parley.testing.fake_search import KEY, FakeSearch
from parley.tools.web import ddgs_provider
from parley.tools.web.ddgs_provider import DdgsProvider, DdgsSettings
from parley.tools.web.providers import BraveProvider, ProviderHttp, SearxngProvider, TavilyProvider, plain
from parley.tools.web.search import SearchFailed, SearchProvider, SearchQuery, UserLocation


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeSearch]:
    server = FakeSearch()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[Http1Pool]:
    pool = Http1Pool()
    yield pool
    await pool.close()


def _providers(fake: FakeSearch, http: Http1Pool, key: str = KEY, timeout_s: float = 30.0) -> list[SearchProvider]:
    # 30 s: the fake answers at once, but a busy machine must not turn that into a timeout
    return [
        SearxngProvider(ProviderHttp(http, fake.root + "/searxng", timeout_s)),
        BraveProvider(ProviderHttp(http, fake.root + "/brave", timeout_s), key),
        TavilyProvider(ProviderHttp(http, fake.root + "/tavily", timeout_s), key),
    ]


def _last(fake: FakeSearch, api: str) -> dict[str, Any]:
    return next(r for r in reversed(fake.requests) if r["api"] == api)


async def test_each_provider_maps_its_results(fake: FakeSearch, http: Http1Pool) -> None:
    for provider in _providers(fake, http):
        results = await provider.search(SearchQuery("paris capital", 5))
        urls = [r.url for r in results]
        assert "https://en.example.org/wiki/Paris" in urls, provider.name
        paris = next(r for r in results if r.url.endswith("/Paris"))
        # HTML highlighting and entities in snippets become plain text.
        assert paris.snippet == "Paris is the capital of France & its largest city.", provider.name
        assert paris.title == "Paris - Example Encyclopedia"
    assert _last(fake, "searxng")["params"]["format"] == "json"
    assert _last(fake, "brave")["headers"]["x-subscription-token"] == KEY
    assert _last(fake, "tavily")["headers"]["authorization"] == f"Bearer {KEY}"


async def test_result_count_is_bounded(fake: FakeSearch, http: Http1Pool) -> None:
    for provider in _providers(fake, http):
        assert len(await provider.search(SearchQuery("capital", 1))) == 1, provider.name
    assert _last(fake, "brave")["params"]["count"] == "1"
    assert _last(fake, "tavily")["body"]["max_results"] == 1


async def test_allowed_domains_reach_the_provider(fake: FakeSearch, http: Http1Pool) -> None:
    searxng, brave, tavily = _providers(fake, http)
    await searxng.search(SearchQuery("paris", 5, ("example.org",)))
    assert _last(fake, "searxng")["params"]["q"] == "paris site:example.org"
    await brave.search(SearchQuery("paris", 5, ("example.org", "example.net")))
    assert _last(fake, "brave")["params"]["q"] == "paris (site:example.org OR site:example.net)"
    results = await tavily.search(SearchQuery("paris", 5, ("example.net",)))
    assert _last(fake, "tavily")["body"]["include_domains"] == ["example.net"]
    assert [r.url for r in results] == ["https://news.example.net/france/capital"]


async def test_brave_gets_the_user_location(fake: FakeSearch, http: Http1Pool) -> None:
    brave = _providers(fake, http)[1]
    where = UserLocation(city="Paris", country="fr", region="Île-de-France", timezone="Europe/Paris")
    await brave.search(SearchQuery("paris", 3, location=where))
    request = _last(fake, "brave")
    assert request["params"]["country"] == "FR"
    assert request["headers"]["x-loc-city"] == "Paris"
    assert request["headers"]["x-loc-timezone"] == "Europe/Paris"
    assert "x-loc-state-name" not in request["headers"]  # not ASCII: not sent as a header


async def test_tavily_sends_page_text_for_a_full_text_query(fake: FakeSearch, http: Http1Pool) -> None:
    tavily = _providers(fake, http)[2]
    results = await tavily.search(SearchQuery("paris capital", 5, full_text=True))
    assert _last(fake, "tavily")["body"]["include_raw_content"] is True
    assert results[0].extra and "most populous" in results[0].extra[0]


@pytest.mark.parametrize(("query", "message"), [
    ("boom", r"answered with an error \(HTTP 500\)"),
    ("ratelimit", "rate limit"),
    ("garbage", "could not be read"),
])
async def test_provider_errors_are_search_failures(fake: FakeSearch, http: Http1Pool, query: str,
                                                   message: str) -> None:
    for provider in _providers(fake, http):
        with pytest.raises(SearchFailed, match=message):
            await provider.search(SearchQuery(query, 3))


async def test_a_refused_key_says_so_without_the_key(fake: FakeSearch, http: Http1Pool) -> None:
    for provider in _providers(fake, http, key="wrong-key-123")[1:]:
        with pytest.raises(SearchFailed) as caught:
            await provider.search(SearchQuery("paris", 3))
        assert "credentials" in str(caught.value) and "wrong-key-123" not in str(caught.value)


async def test_a_slow_provider_times_out(fake: FakeSearch, http: Http1Pool) -> None:
    fake.hold = asyncio.Event()  # "slow" answers only once this is set: only the 0.3 s timeout can end a search
    try:
        for provider in _providers(fake, http, timeout_s=0.3):
            async with asyncio.timeout(LIMIT_S):  # fails a search that never ends; times nothing
                with pytest.raises(SearchFailed, match=r"did not answer within 0\.3 seconds"):
                    await provider.search(SearchQuery("slow", 3))
    finally:
        fake.hold.set()
        fake.hold = None


async def test_an_unreachable_provider_is_a_search_failure(http: Http1Pool) -> None:
    provider = SearxngProvider(ProviderHttp(http, "http://127.0.0.1:9/searxng", 2.0))
    with pytest.raises(SearchFailed, match="could not be reached"):
        await provider.search(SearchQuery("paris", 3))


def test_plain_text_of_snippets() -> None:
    assert plain("a <b>bold</b> &amp; <i>it</i>\n  x") == "a bold & it x"


# -- ddgs: every exception it raises, mapped (test_web_ddgs.py runs the real package through a proxy) ------


class _FakeDDGS:
    outcome: Any = None
    calls: list[dict[str, Any]] = []

    def __init__(self, proxy: str | None = None, timeout: int | None = 5, *, verify: bool | str = True) -> None:
        self.settings = {"proxy": proxy, "timeout": timeout, "verify": verify}

    def text(self, query: str, **kwargs: Any) -> list[dict[str, Any]]:
        _FakeDDGS.calls.append({"query": query, **kwargs, **self.settings})
        if isinstance(self.outcome, Exception):
            raise self.outcome
        result: list[dict[str, Any]] = self.outcome
        return result


@pytest.fixture
def fake_ddgs(monkeypatch: pytest.MonkeyPatch) -> type[_FakeDDGS]:
    import ddgs

    monkeypatch.setattr(ddgs, "DDGS", _FakeDDGS)
    _FakeDDGS.calls = []
    return _FakeDDGS


async def test_ddgs_results_and_settings(fake_ddgs: type[_FakeDDGS]) -> None:
    fake_ddgs.outcome = [{"title": "Paris", "href": "https://example.org/paris", "body": "Capital of France."},
                         {"title": "No link", "body": "dropped"}]
    provider = DdgsProvider(DdgsSettings(timeout_s=2.5, backend="duckduckgo", proxy="http://proxy:3128"))
    results = await provider.search(SearchQuery("paris", 4, ("example.org",)))
    assert [(r.url, r.title, r.snippet) for r in results] == [("https://example.org/paris", "Paris",
                                                               "Capital of France.")]
    assert fake_ddgs.calls == [{"query": "paris site:example.org", "max_results": 4, "backend": "duckduckgo",
                                "proxy": "http://proxy:3128", "timeout": 3, "verify": True}]


async def test_ddgs_errors_are_mapped(fake_ddgs: type[_FakeDDGS]) -> None:
    from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException

    provider = DdgsProvider(DdgsSettings(timeout_s=2))
    fake_ddgs.outcome = DDGSException("No results found.")
    assert await provider.search(SearchQuery("nothing", 3)) == []
    for error, message in ((RatelimitException("202 Ratelimit"), "rate limit"),
                           (TimeoutException("timed out"), "did not answer within 2 seconds"),
                           (DDGSException("ConnectError: http://user:secret@proxy"), "could not be reached")):
        fake_ddgs.outcome = error
        with pytest.raises(SearchFailed, match=message) as caught:
            await provider.search(SearchQuery("paris", 3))
        assert "secret" not in str(caught.value)


def test_ddgs_module_imports_ddgs_lazily() -> None:
    assert "DDGS" not in vars(ddgs_provider)
