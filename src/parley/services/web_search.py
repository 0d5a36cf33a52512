"""The server's web search: the configured provider, the page reader over the store's page cache and the SSRF-
guarded fetcher, and, per request, a `web_search` tool set up from the request's tool entry.

A request asking for live web access (`external_web_access` true or absent) on a server with no provider
configured is refused before anything runs (400 naming `tools[i]`); `external_web_access: false` always
works, on the project's page cache alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from parley.config import WebSearchConfig
from parley.errors import InvalidRequest
from parley.providers.http1 import Http1Pool
from parley.schema.builtin_tools import WebSearchParams, WebSearchPreviewParams
from parley.schema.tools import BuiltinSpec
from parley.store.base import WebPageRecord
from parley.tools.web.ddgs_provider import DdgsProvider, DdgsSettings
from parley.tools.web.pages import CachedPage, PageFetcher, PageLimits, PageReader
from parley.tools.web.providers import (
    BRAVE_URL,
    TAVILY_URL,
    BraveProvider,
    ProviderHttp,
    SearxngProvider,
    TavilyProvider,
)
from parley.tools.web.search import SearchProvider, UserLocation
from parley.tools.web_search import WebSearchSettings, WebSearchTool


class WebPageStore(Protocol):
    """The page cache's table (store/sql_web_pages.py)."""

    async def get_web_page(self, project_id: str, url: str) -> WebPageRecord | None: ...
    async def put_web_page(self, project_id: str, page: WebPageRecord, *, keep_s: float) -> None: ...
    async def search_web_pages(self, project_id: str, terms: list[str], limit: int) -> list[WebPageRecord]: ...


@dataclass(frozen=True, slots=True)
class StorePageCache:
    """tools.web.pages.PageCache over the store, keeping pages `keep_s` seconds."""

    store: WebPageStore
    keep_s: float

    async def get_page(self, project_id: str, url: str) -> CachedPage | None:
        record = await self.store.get_web_page(project_id, url)
        return _page(record) if record is not None else None

    async def put_page(self, project_id: str, page: CachedPage) -> None:
        record = WebPageRecord(page.url, page.title, page.text, page.fetched_at)
        await self.store.put_web_page(project_id, record, keep_s=self.keep_s)

    async def search_pages(self, project_id: str, terms: list[str], limit: int) -> list[CachedPage]:
        return [_page(record) for record in await self.store.search_web_pages(project_id, terms, limit)]


def _page(record: WebPageRecord) -> CachedPage:
    return CachedPage(record.url, record.title, record.text, record.fetched_at)


class ConfigurationError(ValueError):
    """The [web_search] configuration cannot work (raised at start-up)."""


def build_provider(config: WebSearchConfig, http: Http1Pool) -> SearchProvider | None:
    """The configured search provider (None for `none`); keys come from the environment via the config."""
    kind = config.provider
    if kind == "none":
        return None
    if kind == "ddgs":
        return DdgsProvider(DdgsSettings(config.timeout_s, config.backend, config.proxy, config.ca_file))
    if kind == "searxng":
        if not config.base_url:
            raise ConfigurationError("web_search.provider 'searxng' needs web_search.base_url (your instance)")
        return SearxngProvider(ProviderHttp(http, config.base_url, config.timeout_s))
    key = config.resolved_api_key()
    if not key:
        raise ConfigurationError(
            f"web_search.provider '{kind}' needs an API key: set web_search.api_key_env to the name of an "
            "environment variable that holds it" + (f" ({config.api_key_env} is empty)" if config.api_key_env else "")
        )
    if kind == "brave":
        return BraveProvider(ProviderHttp(http, config.base_url or BRAVE_URL, config.timeout_s), key)
    return TavilyProvider(ProviderHttp(http, config.base_url or TAVILY_URL, config.timeout_s), key)


class WebSearchService:
    def __init__(self, config: WebSearchConfig, provider: SearchProvider | None, store: WebPageStore,
                 fetcher: PageFetcher | None) -> None:
        self._config = config
        self._provider = provider
        limits = PageLimits(config.page_max_bytes, config.page_timeout_s, config.page_cache_ttl_s)
        self.pages = PageReader(StorePageCache(store, config.page_cache_keep_days * 86400), fetcher, limits)

    def tool(self, project_id: str, spec: BuiltinSpec) -> WebSearchTool:
        params = spec.params
        assert isinstance(params, WebSearchParams | WebSearchPreviewParams)
        live = not (isinstance(params, WebSearchParams) and params.external_web_access is False)
        if live and self._provider is None:
            raise InvalidRequest(
                f"The {spec.type} tool needs live web access, but this server has no search provider configured "
                "(set [web_search] provider in its configuration). Send \"external_web_access\": false to search "
                "only the server's page cache.", param=spec.param, code="unsupported_tool")
        domains: tuple[str, ...] = ()
        if isinstance(params, WebSearchParams) and params.filters is not None:
            domains = tuple(params.filters.allowed_domains or ())
        location = None
        if params.user_location is not None:
            where = params.user_location
            location = UserLocation(where.city, where.country, where.region, where.timezone)
        settings = WebSearchSettings(live=live, context_size=params.search_context_size or "medium",
                                     allowed_domains=domains, location=location, max_results=self._config.max_results)
        return WebSearchTool(project_id, settings, self._provider, self.pages)
