"""The ddgs provider running the real `ddgs` package (and its HTTP client, primp) offline: it is given a proxy
and a CA file (the `[web_search] proxy` / `ca_file` settings, meant for TLS-inspecting corporate proxies), and a
local intercepting proxy answers as html.duckduckgo.com, with TLS still verified against that CA."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from parley.config import EmbeddedConfig, ModelConfig, Settings, WebSearchConfig
from parley.testing.fake_agent import AgentUpstream
from parley.testing.in_process import in_process
from parley.testing.tls_proxy import TlsInterceptingProxy
from parley.tools.web.ddgs_provider import DdgsProvider, DdgsSettings
from parley.tools.web.search import SearchFailed, SearchQuery

DDG_HOST = "html.duckduckgo.com"
RESULT = """<div class="result results_links web-result"><div class="links_main links_deep result__body">
<h2 class="result__title"><a rel="nofollow" class="result__a" href="{url}">{title}</a></h2>
<a class="result__snippet" href="{url}">{snippet}</a></div></div>"""
DOCS = [("https://en.example.org/wiki/Paris", "Paris - Example", "Paris is the <b>capital</b> of France."),
        ("https://travel.example.com/paris", "Visiting Paris", "Museums, food and walks.")]


def _duckduckgo(host: str, request_line: str, body: bytes) -> tuple[int, str, bytes]:
    """DuckDuckGo's HTML endpoint, as ddgs's parser reads it (results in `div.result__body`)."""
    if host != DDG_HOST or not request_line.startswith("POST /html/"):
        return 404, "text/plain", b"not here"
    query = parse_qs(body.decode())["q"][0]
    hits = [RESULT.format(url=u, title=t, snippet=s) for u, t, s in DOCS if "nothing" not in query]
    return 200, "text/html; charset=utf-8", ("<html><body>" + "".join(hits) + "</body></html>").encode()


@pytest.fixture(scope="module")
async def proxy(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TlsInterceptingProxy]:
    server = TlsInterceptingProxy(tmp_path_factory.mktemp("tls-proxy"), [DDG_HOST], _duckduckgo)
    await server.start()
    yield server
    await server.stop()


def _provider(proxy: TlsInterceptingProxy, ca_file: Path | None = None) -> DdgsProvider:
    return DdgsProvider(DdgsSettings(timeout_s=5, backend="duckduckgo", proxy=proxy.url,
                                     ca_file=ca_file or proxy.ca_path))


async def test_ddgs_searches_through_the_proxy(proxy: TlsInterceptingProxy) -> None:
    results = await _provider(proxy).search(SearchQuery("paris capital", 5))
    assert [(r.url, r.title, r.snippet) for r in results] == [
        ("https://en.example.org/wiki/Paris", "Paris - Example", "Paris is the capital of France."),
        ("https://travel.example.com/paris", "Visiting Paris", "Museums, food and walks.")]
    host, request_line, body = proxy.seen[-1]
    assert host == DDG_HOST and request_line.startswith("POST /html/ ")
    assert parse_qs(body.decode())["q"] == ["paris capital"]
    await _provider(proxy).search(SearchQuery("paris", 1, ("example.org",)))
    assert parse_qs(proxy.seen[-1][2].decode())["q"] == ["paris site:example.org"]


async def test_no_results_is_an_empty_list(proxy: TlsInterceptingProxy) -> None:
    assert await _provider(proxy).search(SearchQuery("nothing at all", 5)) == []


async def test_tls_is_verified_and_failures_are_search_failures(proxy: TlsInterceptingProxy, tmp_path: Path) -> None:
    other = TlsInterceptingProxy(tmp_path, ["unrelated.example"], _duckduckgo)  # a CA that did not sign the leaf
    with pytest.raises(SearchFailed, match="could not be reached"):
        await _provider(proxy, ca_file=other.ca_path).search(SearchQuery("paris", 3))
    closed = DdgsProvider(DdgsSettings(timeout_s=3, backend="duckduckgo", proxy="http://127.0.0.1:9"))
    with pytest.raises(SearchFailed, match="could not be reached"):
        await closed.search(SearchQuery("paris", 3))


async def test_a_response_with_ddgs_as_the_provider(proxy: TlsInterceptingProxy, tmp_path: Path) -> None:
    upstream = AgentUpstream()
    await upstream.start()
    web = WebSearchConfig(provider="ddgs", backend="duckduckgo", proxy=proxy.url, ca_file=proxy.ca_path)
    settings = Settings(data_dir=tmp_path, embedded=EmbeddedConfig(enabled=False), web_search=web,
                        models=[ModelConfig(id="web-agent", base_url=upstream.base_url, upstream_model="web-agent")])
    try:
        async with in_process(settings) as parley:
            response = await parley.sdk().responses.create(model="web-agent", input="paris", tools=[
                {"type": "web_search"}], include=["web_search_call.action.sources"])
    finally:
        await upstream.stop()
    call = response.output[0].model_dump()
    assert call["status"] == "completed"
    assert [s["url"] for s in call["action"]["sources"]] == [url for url, _, _ in DOCS]
    assert response.output_text == "The answer is here ([en.example.org](https://en.example.org/wiki/Paris))."
