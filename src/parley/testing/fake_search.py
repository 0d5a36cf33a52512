"""Fake web search APIs over real HTTP, for tests: SearXNG, Brave and Tavily, each speaking its real shape, plus
plain web pages.

One aiohttp server, each API under its own prefix (point a provider's `base_url` at it):
  /searxng  GET /search?q=...&format=json       -> {"query", "number_of_results", "results": [{url, title,
                                                    content, engine}]} (403 unless format=json, as SearXNG)
  /brave    GET /res/v1/web/search?q=&count=    -> {"type": "search", "web": {"results": [{title,url,description,
            (X-Subscription-Token required)        extra_snippets}]}}; errors in Brave's ErrorResponse shape
  /tavily   POST /search {query, max_results, include_domains, include_raw_content}
            (Authorization: Bearer <key>)       -> {"query", "results": [{title,url,content,score,raw_content}]}
  /pages/<name>                                 -> the HTML (or other) pages of PAGES
Queries choose failures: "boom" -> HTTP 500, "ratelimit" -> 429, "garbage" -> a 200 that is not JSON,
"slow" -> answers after 5 s (or once `hold` is set, when there is one). Other queries match DOCUMENTS by word.
Every request is recorded in `requests`.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from parley.testing.fake_server import Threaded, serve_app

KEY = "test-search-key"


@dataclass(frozen=True)
class Document:
    url: str
    title: str
    content: str
    raw_content: str = ""


DOCUMENTS = (
    Document("https://en.example.org/wiki/Paris", "Paris - Example Encyclopedia",
             "Paris is the <strong>capital</strong> of France &amp; its largest city.",
             "Paris is the capital and most populous city of France. " * 20),
    Document("https://www.travel.example.com/paris", "Visiting Paris", "Paris travel guide: museums, food, walks."),
    Document("https://news.example.net/france/capital", "Why Paris is the capital",
             "A history of the French capital."),
    Document("https://en.example.org/wiki/Berlin", "Berlin - Example Encyclopedia",
             "Berlin is the capital of Germany."),
)

PARIS_HTML = """<!doctype html><html><head><title>Paris - Example Encyclopedia</title></head><body>
<nav><a href="/">Home</a> | <a href="/about">About</a> | Menu item</nav>
<article><h1>Paris</h1>
<p>Paris is the capital and most populous city of France. With an estimated population of 2,102,650 residents
in January 2023 in an area of more than 105 square kilometres, Paris is the fourth-most populous city in the
European Union and the 30th most densely populated city in the world in 2022.</p>
<p>The Eiffel Tower, completed in 1889, is the most visited paid monument in the world. The river Seine runs
through the city, and the Louvre is the world's most-visited art museum.</p>
</article><footer>Copyright Example Encyclopedia. Cookie settings.</footer></body></html>"""

PAGES: dict[str, tuple[str, bytes]] = {
    "paris": ("text/html; charset=utf-8", PARIS_HTML.encode()),
    "notes.txt": ("text/plain; charset=utf-8", b"Plain notes about the Seine river.\nSecond line."),
    "report.pdf": ("application/pdf", b"%PDF-1.4 not really"),
    "big": ("text/html", ("<html><body><article>" + "<p>Lorem ipsum dolor sit amet. </p>" * 20000
                          + "</article></body></html>").encode()),
}


def _headers(request: web.Request) -> dict[str, str]:
    return {name.lower(): value for name, value in request.headers.items()}


def _matches(query: str, domains: list[str] | None = None) -> list[Document]:
    words = [w for w in re.findall(r"\w+", query.lower()) if not w.startswith("site")]
    sites = re.findall(r"site:([\w.-]+)", query)
    allowed = (domains or []) + sites
    out = []
    for doc in DOCUMENTS:
        host = doc.url.split("/")[2]
        if allowed and not any(host == d or host.endswith("." + d) for d in allowed):
            continue
        text = (doc.title + " " + doc.content).lower()
        if any(w in text for w in words):
            out.append(doc)
    return out


@dataclass
class FakeSearch:
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    # When set, a "slow" query waits until it is set instead of 5 s: a test holds a tool call open as long as it
    # needs (e.g. to steer a response in its tool loop) without depending on how long anything takes.
    hold: asyncio.Event | None = None
    _runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/searxng/search", self._searxng)
        app.router.add_get("/brave/res/v1/web/search", self._brave)
        app.router.add_post("/tavily/search", self._tavily)
        app.router.add_get("/pages/{name}", self._page)
        return app

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._runner, self.port = await serve_app(self.app(), shutdown_timeout=0.5)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _failure(self, query: str) -> web.Response | None:
        if "boom" in query:
            return web.json_response({"error": "internal"}, status=500)
        if "ratelimit" in query:
            return web.json_response({"error": "too many requests"}, status=429)
        if "garbage" in query:
            return web.Response(text="<html>not json</html>", content_type="text/html")
        if "slow" in query:
            if self.hold is not None:
                await self.hold.wait()
            else:
                await asyncio.sleep(5)
        return None

    async def _searxng(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        self.requests.append({"api": "searxng", "params": params, "headers": _headers(request)})
        if params.get("format") != "json":
            return web.Response(status=403, text="Forbidden")
        query = params.get("q", "")
        failure = await self._failure(query)
        if failure is not None:
            return failure
        results = [{"url": d.url, "title": d.title, "content": d.content, "engine": "fake", "score": 1.0}
                   for d in _matches(query)]
        return web.json_response({"query": query, "number_of_results": len(results), "results": results,
                                  "answers": [], "suggestions": [], "infoboxes": [], "unresponsive_engines": []})

    async def _brave(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        self.requests.append({"api": "brave", "params": params, "headers": _headers(request)})
        if request.headers.get("X-Subscription-Token") != KEY:
            return web.json_response({"type": "ErrorResponse", "error": {
                "id": "x", "status": 401, "code": "SUBSCRIPTION_TOKEN_INVALID",
                "detail": "The provided subscription token is invalid."}}, status=401)
        query = params.get("q", "")
        failure = await self._failure(query)
        if failure is not None:
            return failure
        count = int(params.get("count", "20"))
        results = [{"title": d.title, "url": d.url, "description": d.content, "type": "search_result",
                    "extra_snippets": [f"More about {d.title}."]} for d in _matches(query)][:count]
        return web.json_response({"type": "search", "query": {"original": query}, "web": {"type": "search",
                                                                                           "results": results}})

    async def _tavily(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"api": "tavily", "body": body, "headers": _headers(request)})
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return web.json_response({"detail": {"error": "Unauthorized: missing or invalid API key."}}, status=401)
        query = str(body.get("query", ""))
        failure = await self._failure(query)
        if failure is not None:
            return failure
        docs = _matches(query, body.get("include_domains"))[: int(body.get("max_results", 5))]
        results = [{"title": d.title, "url": d.url, "content": d.content, "score": 0.9,
                    "raw_content": d.raw_content if body.get("include_raw_content") else None} for d in docs]
        return web.json_response({"query": query, "answer": None, "images": [], "results": results,
                                  "response_time": 0.01})

    async def _page(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.requests.append({"api": "page", "name": name})
        if name == "redirect-out":
            raise web.HTTPFound("https://elsewhere.example.com/page")
        if name not in PAGES:
            return web.Response(status=404, text="not found")
        content_type, body = PAGES[name]
        return web.Response(body=body, headers={"content-type": content_type})


class ThreadedFakeSearch(Threaded[FakeSearch]):
    """The fake search APIs on their own event loop in a daemon thread (for servers in other processes)."""

    def __init__(self) -> None:
        super().__init__(FakeSearch, "fake-search")
