"""Search providers over their real HTTP APIs: SearXNG (self-hosted JSON API), Brave and Tavily.

Each translates a `SearchQuery` into one request and the answer into `SearchResult`s; every failure becomes
a `SearchFailed` with a message fit for the model (the details go to the log, never a key). Requests go
through the app's keep-alive pool (`providers/http1.py`): search APIs need what model APIs need (a GET or a
JSON POST, a JSON answer, TLS, timeouts) and the pool is already there, so no second HTTP client is pulled in.
The whole call (connect, headers, body) is bounded by the configured timeout; bodies are capped.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode

import orjson

from parley.providers.http1 import ConnectFailed, Endpoint, Http1Pool, HttpError, Response
from parley.tools.web.domains import site_operator
from parley.tools.web.search import SearchFailed, SearchQuery, SearchResult

log = logging.getLogger("parley.web_search")
_MAX_BODY = 4 * 1024 * 1024
BRAVE_URL = "https://api.search.brave.com"
TAVILY_URL = "https://api.tavily.com"


@dataclass(frozen=True, slots=True)
class ProviderHttp:
    """How a provider reaches its API: the pool, the API root and the time limit of one search."""

    http: Http1Pool
    base_url: str
    timeout_s: float


class _Text(HTMLParser):
    """Snippets of some APIs carry HTML highlighting (`<strong>`) and entities: keep the text only."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def plain(fragment: str) -> str:
    parser = _Text()
    parser.feed(fragment)
    parser.close()
    return " ".join("".join(parser.parts).split())


async def _read(resp: Response) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in resp.iter_chunks():
        size += len(chunk)
        if size > _MAX_BODY:
            raise SearchFailed("the search provider sent an answer too large to read")
        parts.append(chunk)
    return b"".join(parts)


async def call_json(api: ProviderHttp, name: str, path: str, *, headers: dict[str, str],
                    body: bytes | None = None) -> Any:
    """GET (no body) or POST `path` under the API root; the parsed JSON answer of a 200, else SearchFailed."""
    url = api.base_url.rstrip("/") + path
    method = "GET" if body is None else "POST"
    head = {"accept": "application/json", **headers}
    if body is not None:
        head["content-type"] = "application/json"
    try:
        async with asyncio.timeout(api.timeout_s):
            resp = await api.http.request(Endpoint.parse(url), method, head, body or b"",
                                          connect_timeout=api.timeout_s, read_timeout=api.timeout_s)
            try:
                raw = await _read(resp)
            except BaseException:
                resp.close()
                raise
            resp.release()
    except TimeoutError:
        raise SearchFailed(f"the search provider did not answer within {api.timeout_s:g} seconds") from None
    except ConnectFailed as exc:
        log.warning("web search: %s unreachable: %s", name, exc)
        raise SearchFailed("the search provider could not be reached") from None
    except HttpError as exc:
        log.warning("web search: %s: %s", name, exc)
        raise SearchFailed("the connection to the search provider failed") from None
    status = resp.status
    if status != 200:
        log.warning("web search: %s answered HTTP %s: %s", name, status, raw[:300].decode(errors="replace"))
        if status in (401, 403):
            raise SearchFailed("the search provider refused this server's credentials (a configuration problem)")
        if status == 429:
            raise SearchFailed("the search provider's rate limit was reached; try again later")
        raise SearchFailed(f"the search provider answered with an error (HTTP {status})")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        log.warning("web search: %s sent non-JSON: %r", name, raw[:200])
        raise SearchFailed("the search provider sent an answer that could not be read") from None


def _results(raw: Any, path: tuple[str, ...], name: str) -> list[dict[str, Any]]:
    """The list of result objects at `path` in a provider's answer (SearchFailed if the shape is wrong)."""
    node = raw
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return []
    if not isinstance(node, list):
        log.warning("web search: %s answer has no result list at %s", name, ".".join(path))
        raise SearchFailed("the search provider sent an answer that could not be read")
    return [entry for entry in node if isinstance(entry, dict) and isinstance(entry.get("url"), str)]


def _text(value: Any) -> str:
    return plain(value) if isinstance(value, str) else ""


def _header_safe(value: str | None) -> str | None:
    """A location value as an HTTP header value: printable ASCII only, else not sent."""
    if value and value.isascii() and value.isprintable():
        return value
    return None


class SearxngProvider:
    """SearXNG's search API: `GET /search?q=...&format=json` (the instance must enable the json format)."""

    name = "searxng"

    def __init__(self, api: ProviderHttp) -> None:
        self._api = api

    async def search(self, query: SearchQuery) -> list[SearchResult]:
        params = {"q": query.text + site_operator(query.allowed_domains), "format": "json", "pageno": "1"}
        raw = await call_json(self._api, self.name, "/search?" + urlencode(params), headers={})
        return [SearchResult(entry["url"], _text(entry.get("title")), _text(entry.get("content")))
                for entry in _results(raw, ("results",), self.name)][: query.max_results]


class BraveProvider:
    """Brave Search's web search API: `GET /res/v1/web/search` with the key in `X-Subscription-Token`; the
    user's location as `country` and Brave's `X-Loc-*` headers."""

    name = "brave"

    def __init__(self, api: ProviderHttp, api_key: str) -> None:
        self._api = api
        self._key = api_key

    async def search(self, query: SearchQuery) -> list[SearchResult]:
        params = {"q": query.text + site_operator(query.allowed_domains), "count": str(min(query.max_results, 20))}
        headers = {"x-subscription-token": self._key}
        location = query.location
        if location is not None:
            if location.country:
                params["country"] = location.country.upper()
            for header, value in (("x-loc-city", location.city), ("x-loc-state-name", location.region),
                                  ("x-loc-country", location.country), ("x-loc-timezone", location.timezone)):
                safe = _header_safe(value)
                if safe is not None:
                    headers[header] = safe
        raw = await call_json(self._api, self.name, "/res/v1/web/search?" + urlencode(params), headers=headers)
        out: list[SearchResult] = []
        for entry in _results(raw, ("web", "results"), self.name):
            extra = entry.get("extra_snippets")
            snippets = tuple(plain(s) for s in extra if isinstance(s, str)) if isinstance(extra, list) else ()
            out.append(SearchResult(entry["url"], _text(entry.get("title")), _text(entry.get("description")),
                                    snippets))
        return out[: query.max_results]


class TavilyProvider:
    """Tavily's search API: `POST /search` with the key as a bearer token; `include_domains` filters natively,
    and a `high` context size asks for each page's text (`include_raw_content`)."""

    name = "tavily"

    def __init__(self, api: ProviderHttp, api_key: str) -> None:
        self._api = api
        self._key = api_key

    async def search(self, query: SearchQuery) -> list[SearchResult]:
        body: dict[str, Any] = {"query": query.text, "max_results": query.max_results, "search_depth": "basic",
                                "include_raw_content": query.full_text}
        if query.allowed_domains:
            body["include_domains"] = list(query.allowed_domains)
        raw = await call_json(self._api, self.name, "/search", headers={"authorization": f"Bearer {self._key}"},
                              body=orjson.dumps(body))
        out: list[SearchResult] = []
        for entry in _results(raw, ("results",), self.name):
            content = entry.get("raw_content")
            extra = (content,) if isinstance(content, str) and content.strip() else ()
            out.append(SearchResult(entry["url"], _text(entry.get("title")), _text(entry.get("content")), extra))
        return out[: query.max_results]
