"""Reading web pages for `open_page` and `find_in_page`, and the page cache that `external_web_access: false`
searches.

A live read goes through a `PageFetcher` (the SSRF guard: no loopback, link-local or private addresses
unless allowed by config, checked again after redirects), bounded in size and time; HTML becomes readable
text with trafilatura (boilerplate such as menus and footers removed), in a worker thread since it is CPU
work. Every page read is kept in the project's page cache; a page cached less than `cache_ttl_s` ago is
not fetched again, and with live access off only the cache is used. Failures are `PageUnavailable` with a
message for the model.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote, urlsplit

from parley.errors import UrlFetchFailed
from parley.retrieval.fetch import UrlFetcher
from parley.tools.web.domains import allowed

log = logging.getLogger("parley.web_search")

MAX_TEXT_CHARS = 200_000  # what is kept of one page's readable text
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/ld+json")


@dataclass(frozen=True, slots=True)
class CachedPage:
    url: str
    title: str
    text: str
    fetched_at: int  # Unix seconds


@dataclass(frozen=True, slots=True)
class Fetched:
    """What a fetcher got: the final URL (after redirects), the content type and the (capped) body."""

    url: str
    content_type: str
    body: bytes
    truncated: bool = False


class FetchFailed(Exception):
    """A fetch did not produce a page; `str(exc)` says why, in words fit for the model."""


class PageFetcher(Protocol):
    async def fetch(self, url: str, *, max_bytes: int, timeout_s: float) -> Fetched:
        """GET `url` through the SSRF guard; FetchFailed when refused or failed (or not 200)."""
        ...


class GuardedFetcher:
    """PageFetcher over the SSRF guard (retrieval/fetch.py): refused addresses and failed fetches become
    FetchFailed with the guard's reason."""

    def __init__(self, fetcher: UrlFetcher) -> None:
        self._fetcher = fetcher

    async def fetch(self, url: str, *, max_bytes: int, timeout_s: float) -> Fetched:
        try:
            got = await self._fetcher.fetch(url, max_bytes=max_bytes, timeout_s=timeout_s, truncate=True)
        except UrlFetchFailed as err:
            raise FetchFailed(err.message) from None
        return Fetched(got.url, got.content_type, got.body, got.truncated)


class PageCache(Protocol):
    async def get_page(self, project_id: str, url: str) -> CachedPage | None: ...

    async def put_page(self, project_id: str, page: CachedPage) -> None: ...

    async def search_pages(self, project_id: str, terms: list[str], limit: int) -> list[CachedPage]: ...


class PageUnavailable(Exception):
    """The page could not be read; `str(exc)` says why, in words fit for the model."""


@dataclass(frozen=True, slots=True)
class PageLimits:
    max_bytes: int = 2 * 1024 * 1024
    timeout_s: float = 10.0
    cache_ttl_s: float = 3600.0


class PageReader:
    """Pages by URL: from the project's cache when fresh enough (or when live access is off), else fetched."""

    def __init__(self, cache: PageCache, fetcher: PageFetcher | None, limits: PageLimits) -> None:
        self._cache = cache
        self._fetcher = fetcher
        self._limits = limits

    @property
    def can_fetch(self) -> bool:
        return self._fetcher is not None

    async def read(self, project_id: str, url: str, *, live: bool, domains: tuple[str, ...] = ()) -> CachedPage:
        if not allowed(url, domains):
            raise PageUnavailable("this URL is outside the domains this search may use")
        cached = await self._cache.get_page(project_id, url)
        if cached is not None and (not live or time.time() - cached.fetched_at <= self._limits.cache_ttl_s):
            return cached
        if not live:
            raise PageUnavailable("this page is not in the local page cache, and live web access is off")
        if self._fetcher is None:
            if cached is not None:
                return cached
            raise PageUnavailable("this server cannot fetch web pages")
        limits = self._limits
        try:
            async with asyncio.timeout(limits.timeout_s):
                fetched = await self._fetcher.fetch(url, max_bytes=limits.max_bytes, timeout_s=limits.timeout_s)
        except TimeoutError:
            raise PageUnavailable(f"the page did not load within {limits.timeout_s:g} seconds") from None
        except FetchFailed as exc:
            raise PageUnavailable(str(exc)) from None
        if fetched.url != url and not allowed(fetched.url, domains):
            raise PageUnavailable(f"the page redirected to {fetched.url}, outside the allowed domains")
        title, text = await asyncio.to_thread(readable_text, fetched)
        page = CachedPage(fetched.url, title, text, int(time.time()))
        await self._cache.put_page(project_id, page)
        return page

    async def search_cache(self, project_id: str, query: str, limit: int,
                           domains: tuple[str, ...] = ()) -> list[CachedPage]:
        """Cached pages matching the query's words best (all of them first, then most occurrences)."""
        terms = query_terms(query)
        if not terms:
            return []
        candidates = await self._cache.search_pages(project_id, terms, 200)
        scored = [(score(page, terms), page) for page in candidates if allowed(page.url, domains)]
        scored.sort(key=lambda pair: pair[0], reverse=True)
        return [page for value, page in scored if value > (0, 0)][:limit]


def query_terms(query: str) -> list[str]:
    words = re.findall(r"\w+", query.lower())
    terms = [w for w in dict.fromkeys(words) if len(w) > 2 or w.isdigit()]
    return terms[:12]


def score(page: CachedPage, terms: list[str]) -> tuple[int, int]:
    """(distinct terms found, occurrences with title matches weighted 5x)."""
    title, text = page.title.lower(), page.text.lower()
    found = [t for t in terms if t in title or t in text]
    hits = sum(5 * title.count(t) + min(text.count(t), 50) for t in found)
    return len(found), hits


def readable_text(fetched: Fetched) -> tuple[str, str]:
    """(title, readable text) of a fetched page. CPU work: run it in a thread."""
    kind = fetched.content_type.split(";", 1)[0].strip().lower()
    if kind in _HTML_TYPES or (not kind and fetched.body.lstrip()[:15].lower().startswith((b"<!doctype", b"<html"))):
        title, text = _html_text(fetched.body, fetched.url)
    elif kind.startswith(_TEXT_TYPES):
        title, text = _url_title(fetched.url), _decode(fetched.body, fetched.content_type)
    else:
        raise PageUnavailable(f"the page is a {kind or 'binary'} file, which cannot be read as text")
    text = text.strip()
    if fetched.truncated:
        text += "\n[The page was longer; the rest was not read.]"
    return title, text[:MAX_TEXT_CHARS]


def _html_text(body: bytes, url: str) -> tuple[str, str]:
    import trafilatura  # on first use: loads lxml and its models

    document = trafilatura.bare_extraction(body, url=url, with_metadata=True, include_comments=False,
                                           include_tables=True, favor_recall=True)
    # bare_extraction gives a Document (a dict only with as_dict=True, which is not asked for here).
    text = str(getattr(document, "text", None) or "")
    title = str(getattr(document, "title", None) or "")
    if not text:  # too short or unusual for the extractor: keep the page's whole text
        text = trafilatura.html2txt(body) or ""
    return title or _url_title(url), text


def _decode(body: bytes, content_type: str) -> str:
    match = re.search(r"charset=([\w.-]+)", content_type, re.IGNORECASE)
    try:
        return body.decode(match.group(1) if match else "utf-8", errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def _url_title(url: str) -> str:
    parts = urlsplit(url)
    name = unquote(parts.path.rstrip("/").rsplit("/", 1)[-1])
    return name or parts.hostname or url


def find_in_text(text: str, pattern: str, *, window: int, limit: int) -> list[str]:
    """Passages around each case-insensitive occurrence of `pattern` (plain text, not a regex)."""
    lowered, needle = text.lower(), pattern.lower().strip()
    if not needle:
        return []
    passages: list[str] = []
    start = 0
    covered = -1
    while len(passages) < limit:
        at = lowered.find(needle, start)
        if at < 0:
            break
        if at > covered:
            left, right = max(0, at - window), min(len(text), at + len(needle) + window)
            passages.append(("..." if left else "") + text[left:right].strip() + ("..." if right < len(text) else ""))
            covered = right
        start = at + len(needle)
    return passages
