"""Reading pages for open_page/find_in_page: readable text from HTML, limits, the page cache (fresh pages
are not fetched again; with live access off only the cache is read), allowed domains (also after redirects)."""

from __future__ import annotations

import asyncio
import time

import pytest
from tests.waiting import LIMIT_S

from parley.testing.fake_search import PAGES
from parley.tools.web.pages import (
    CachedPage,
    Fetched,
    FetchFailed,
    PageLimits,
    PageReader,
    PageUnavailable,
    find_in_text,
    query_terms,
    readable_text,
)

PARIS = "https://en.example.org/wiki/Paris"


class MemoryCache:
    def __init__(self) -> None:
        self.pages: dict[tuple[str, str], CachedPage] = {}

    async def get_page(self, project_id: str, url: str) -> CachedPage | None:
        return self.pages.get((project_id, url))

    async def put_page(self, project_id: str, page: CachedPage) -> None:
        self.pages[(project_id, page.url)] = page

    async def search_pages(self, project_id: str, terms: list[str], limit: int) -> list[CachedPage]:
        found = [p for (proj, _), p in self.pages.items()
                 if proj == project_id and any(t in (p.title + p.text).lower() for t in terms)]
        return sorted(found, key=lambda p: -p.fetched_at)[:limit]


class StubFetcher:
    """Serves fake_search.PAGES by name at any URL ending in it; records the URLs asked for."""

    def __init__(self, redirect_to: str | None = None, hang: bool = False) -> None:
        self.urls: list[str] = []
        self.redirect_to = redirect_to
        self.hang = hang

    async def fetch(self, url: str, *, max_bytes: int, timeout_s: float) -> Fetched:
        self.urls.append(url)
        if self.hang:
            await asyncio.sleep(3600)
        name = url.rsplit("/", 1)[-1].lower()
        if name not in PAGES:
            raise FetchFailed("the page answered HTTP 404")
        content_type, body = PAGES[name]
        return Fetched(self.redirect_to or url, content_type, body[:max_bytes], len(body) > max_bytes)


def _reader(fetcher: StubFetcher | None = None, cache: MemoryCache | None = None, **limits: float) -> PageReader:
    return PageReader(cache or MemoryCache(), fetcher, PageLimits(**limits))  # type: ignore[arg-type]


def test_html_becomes_readable_text_without_boilerplate() -> None:
    title, text = readable_text(Fetched(PARIS, *PAGES["paris"]))
    assert title == "Paris"
    assert "capital and most populous city of France" in text and "Eiffel Tower" in text
    assert "Cookie settings" not in text and "Menu item" not in text


def test_plain_text_and_refused_types() -> None:
    assert readable_text(Fetched("https://x.example/notes.txt", *PAGES["notes.txt"])) == (
        "notes.txt", "Plain notes about the Seine river.\nSecond line.")
    with pytest.raises(PageUnavailable, match="application/pdf file"):
        readable_text(Fetched("https://x.example/report.pdf", *PAGES["report.pdf"]))


async def test_a_page_is_read_once_then_served_from_the_cache() -> None:
    fetcher, cache = StubFetcher(), MemoryCache()
    reader = _reader(fetcher, cache)
    first = await reader.read("proj", PARIS.replace("Paris", "paris"), live=True)
    again = await reader.read("proj", PARIS.replace("Paris", "paris"), live=True)
    assert first == again and len(fetcher.urls) == 1
    assert "Eiffel Tower" in first.text
    # The page as if cached two hours ago, past the TTL (an hour): fetched again (no waiting for the clock).
    cache.pages = {key: CachedPage(page.url, page.title, page.text, page.fetched_at - 7200)
                   for key, page in cache.pages.items()}
    await reader.read("proj", PARIS.replace("Paris", "paris"), live=True)
    assert len(fetcher.urls) == 2  # older than the TTL: fetched again


async def test_without_live_access_only_the_cache_is_read() -> None:
    fetcher, cache = StubFetcher(), MemoryCache()
    reader = _reader(fetcher, cache)
    with pytest.raises(PageUnavailable, match="not in the local page cache"):
        await reader.read("proj", "https://en.example.org/paris", live=False)
    assert fetcher.urls == []
    await reader.read("proj", "https://en.example.org/paris", live=True)
    old = cache.pages[("proj", "https://en.example.org/paris")]
    cache.pages[("proj", old.url)] = CachedPage(old.url, old.title, old.text, int(time.time()) - 10**6)
    page = await reader.read("proj", "https://en.example.org/paris", live=False)  # however old
    assert page.title == "Paris" and len(fetcher.urls) == 1
    with pytest.raises(PageUnavailable, match="not in the local page cache"):
        await reader.read("other-project", "https://en.example.org/paris", live=False)


async def test_allowed_domains_apply_to_the_url_and_to_redirects() -> None:
    with pytest.raises(PageUnavailable, match="outside the domains"):
        await _reader(StubFetcher()).read("proj", "https://evil.example.com/paris", live=True,
                                          domains=("example.org",))
    redirected = _reader(StubFetcher(redirect_to="https://elsewhere.example.com/paris"))
    with pytest.raises(PageUnavailable, match=r"redirected to https://elsewhere\.example\.com/paris"):
        await redirected.read("proj", "https://en.example.org/paris", live=True, domains=("example.org",))
    page = await _reader(StubFetcher()).read("proj", "https://deep.en.example.org/paris", live=True,
                                             domains=("example.org",))
    assert page.title == "Paris"


async def test_fetch_failures_limits_and_no_fetcher() -> None:
    with pytest.raises(PageUnavailable, match="HTTP 404"):
        await _reader(StubFetcher()).read("proj", "https://x.example/missing", live=True)
    # The fetcher sleeps an hour: only the 0.2 s timeout can end the read (the deadline fails one that never does).
    async with asyncio.timeout(LIMIT_S):
        with pytest.raises(PageUnavailable, match=r"did not load within 0\.2 seconds"):
            await _reader(StubFetcher(hang=True), timeout_s=0.2).read("proj", "https://x.example/paris", live=True)
    big = await _reader(StubFetcher(), max_bytes=5000).read("proj", "https://x.example/big", live=True)
    assert big.text.endswith("[The page was longer; the rest was not read.]")
    with pytest.raises(PageUnavailable, match="cannot fetch web pages"):
        await _reader(None).read("proj", "https://x.example/paris", live=True)


async def test_cache_search_ranks_by_the_query_words() -> None:
    cache = MemoryCache()
    now = int(time.time())
    for url, title, text in [("https://a.example/1", "Seine", "Paris river"),
                             ("https://a.example/2", "Paris", "Paris capital of France, Paris."),
                             ("https://b.example/3", "Lyon", "a city of France")]:
        await cache.put_page("proj", CachedPage(url, title, text, now))
    reader = _reader(None, cache)
    found = await reader.search_cache("proj", "Paris capital", 5)
    assert [p.url for p in found] == ["https://a.example/2", "https://a.example/1"]
    assert [p.url for p in await reader.search_cache("proj", "france", 5, ("b.example",))] == ["https://b.example/3"]
    assert await reader.search_cache("proj", "a", 5) == []
    assert query_terms("The Eiffel tower, 1889!") == ["the", "eiffel", "tower", "1889"]


def test_find_in_text_gives_passages_around_each_match() -> None:
    text = "alpha beta gamma. " * 3 + "The Eiffel Tower was completed in 1889. " + "delta " * 50
    passages = find_in_text(text, "eiffel tower", window=20, limit=5)
    assert len(passages) == 1 and "Eiffel Tower" in passages[0] and passages[0].startswith("...")
    assert find_in_text(text, "beta", window=5, limit=2) == ["...lpha beta gamm...", "...lpha beta gamm..."]
    assert find_in_text(text, "zeta", window=5, limit=2) == []
