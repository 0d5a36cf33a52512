"""DuckDuckGo and other engines through the `ddgs` package: web search with no API key.

`ddgs` is synchronous (its HTTP client is `primp`), so each search runs in a worker thread under ddgs's own
timeout and the tool's. Its exceptions are mapped to `SearchFailed`; "No results found." is an empty
result, not a failure. `proxy` and `ca_file` serve networks that reach the web through a (TLS-inspecting)
proxy; `backend` picks ddgs's engines (`auto`, or e.g. `duckduckgo`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parley.tools.web.domains import site_operator
from parley.tools.web.search import SearchFailed, SearchQuery, SearchResult

log = logging.getLogger("parley.web_search")


@dataclass(frozen=True, slots=True)
class DdgsSettings:
    timeout_s: float
    backend: str = "auto"
    proxy: str | None = None
    ca_file: Path | None = None


class DdgsProvider:
    name = "ddgs"

    def __init__(self, settings: DdgsSettings) -> None:
        self._settings = settings

    async def search(self, query: SearchQuery) -> list[SearchResult]:
        timeout = self._settings.timeout_s
        try:
            async with asyncio.timeout(timeout + 1):  # ddgs enforces `timeout` itself; this is the backstop
                rows = await asyncio.to_thread(self._search_sync, query)
        except TimeoutError:
            raise SearchFailed(f"the search provider did not answer within {timeout:g} seconds") from None
        out: list[SearchResult] = []
        for row in rows:
            url = row.get("href")
            if isinstance(url, str) and url:
                out.append(SearchResult(url, str(row.get("title") or ""), str(row.get("body") or "")))
        return out[: query.max_results]

    def _search_sync(self, query: SearchQuery) -> list[dict[str, Any]]:
        from ddgs import DDGS  # imported on first use: it loads primp and lxml
        from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException

        settings = self._settings
        verify: bool | str = str(settings.ca_file) if settings.ca_file is not None else True
        client = DDGS(proxy=settings.proxy, timeout=max(1, math.ceil(settings.timeout_s)), verify=verify)
        try:
            rows: list[dict[str, Any]] = client.text(query.text + site_operator(query.allowed_domains),
                                                     max_results=query.max_results, backend=settings.backend)
        except RatelimitException:
            raise SearchFailed("the search provider's rate limit was reached; try again later") from None
        except TimeoutException:
            raise SearchFailed(f"the search provider did not answer within {settings.timeout_s:g} seconds") from None
        except DDGSException as exc:
            if "no results" in str(exc).lower():
                return []
            log.warning("web search: ddgs failed: %s", exc)
            raise SearchFailed("the search engines could not be reached or sent nothing readable") from None
        return rows
