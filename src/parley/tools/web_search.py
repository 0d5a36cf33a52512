"""The `web_search` tool: the model searches the web, opens pages and finds text in them; what it reads comes
back numbered for citing, and each marker it writes becomes a `url_citation` spanning a Markdown link.

Offered as one function `web_search(action, query|queries, url, pattern)`; each call is one
`web_search_call` item whose `action` has the SDK's shapes (`search` with `query`/`queries`/`sources`,
`open_page` with `url`, `find_in_page` with `url` + `pattern`), with the events `in_progress` → `searching`
→ `completed`. Status `incomplete`: some of several queries failed; `failed`: nothing could be done (the
provider failed or timed out, the page could not be read). The item is stored whole (`action.sources`, and
`results`: what the model was given) and shown as `include` asks (schema/present.py).

`external_web_access: false` searches and opens only the project's page cache: nothing leaves the machine.
`search_context_size` sets how much text reaches the model; `filters.allowed_domains` filters results and
page opens (subdomains included, also after redirects); `user_location` goes to providers that localise.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from parley.ids import new_id
from parley.tools.base import BuiltinCall, Citations, ItemEmitter, Source, ToolOutcome, function_pair
from parley.tools.web.domains import allowed, host_of
from parley.tools.web.pages import PageReader, PageUnavailable, find_in_text
from parley.tools.web.search import SearchFailed, SearchProvider, SearchQuery, SearchResult, UserLocation

Item = dict[str, Any]
NAME = "web_search"
ContextSize = Literal["low", "medium", "high"]
_MAX_QUERIES = 3


@dataclass(frozen=True, slots=True)
class Budget:
    """How much text reaches the model, by `search_context_size`."""

    results: int  # results per search
    result_chars: int  # per result (snippet and any extra text the provider sent)
    page_chars: int  # of an opened page
    find_window: int  # characters either side of a find_in_page match
    find_matches: int


BUDGETS: dict[str, Budget] = {
    "low": Budget(results=3, result_chars=300, page_chars=4_000, find_window=150, find_matches=3),
    "medium": Budget(results=5, result_chars=800, page_chars=12_000, find_window=300, find_matches=5),
    "high": Budget(results=10, result_chars=3_000, page_chars=40_000, find_window=600, find_matches=10),
}


@dataclass(frozen=True, slots=True)
class WebSearchSettings:
    """One request's `web_search` tool entry, validated, plus the server's limits."""

    live: bool = True  # external_web_access
    context_size: ContextSize = "medium"
    allowed_domains: tuple[str, ...] = ()
    location: UserLocation | None = None
    max_results: int = 8  # asked of the provider per query at most

    @property
    def budget(self) -> Budget:
        return BUDGETS[self.context_size]


def function(live: bool) -> dict[str, Any]:
    where = ("the web" if live else
             "the pages this server cached earlier (live web access is off: only those pages can be found or opened)")
    return {
        "name": NAME,
        "description": (
            f"Search {where}. action 'search' (the default) takes a `query` (or up to {_MAX_QUERIES} `queries`) "
            "and returns numbered results; 'open_page' reads the page at `url`; 'find_in_page' finds `pattern` "
            "in the page at `url`. Cite what you use with its marker, e.g. [1]."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "action": {"type": "string", "enum": ["search", "open_page", "find_in_page"],
                           "description": "What to do; default 'search'."},
                "query": {"type": "string", "description": "search: what to look for."},
                "queries": {"type": "array", "items": {"type": "string"}, "maxItems": _MAX_QUERIES,
                            "description": "search: several queries at once (instead of query)."},
                "url": {"type": "string", "description": "open_page, find_in_page: the page's URL."},
                "pattern": {"type": "string", "description": "find_in_page: the text to find."},
            },
            "additionalProperties": False,
        },
    }


@dataclass(slots=True)
class Found:
    """What one action produced: the results the model reads, and how the call ended."""

    results: list[dict[str, str]] = field(default_factory=list)  # {url, title, text}
    status: Literal["completed", "incomplete"] = "completed"
    notes: list[str] = field(default_factory=list)


class WebSearchTool:
    def __init__(self, project_id: str, settings: WebSearchSettings, provider: SearchProvider | None,
                 pages: PageReader) -> None:
        self.project_id = project_id
        self.settings = settings
        self._provider = provider
        self._pages = pages

    @property
    def upstream_name(self) -> str:
        return NAME

    def function(self) -> dict[str, Any]:
        return function(self.settings.live)

    async def run(self, call: BuiltinCall, emit: ItemEmitter, citations: Citations) -> ToolOutcome:
        action, problem = parse_action(call.arguments)
        item: Item = {"id": new_id("ws"), "type": "web_search_call", "status": "in_progress", "action": action}
        emit.start(item)
        emit.progress("response.web_search_call.in_progress")
        if problem is not None:
            return self.failed(call, problem, item)
        item = {**item, "status": "searching"}
        emit.update(item)
        emit.progress("response.web_search_call.searching")
        try:
            found = await self._act(action)
        except (SearchFailed, PageUnavailable) as exc:
            return self.failed(call, str(exc), item)
        if action["type"] == "search":
            action = {**action, "sources": [{"type": "url", "url": r["url"]} for r in found.results]}
        item = {**item, "status": found.status, "action": action, "results": found.results}
        emit.update(item)
        if found.status == "completed":
            emit.progress("response.web_search_call.completed")
        markers = [citations.next_marker() for _ in found.results]
        sources = {marker: url_source(r["url"], r["title"]) for marker, r in zip(markers, found.results, strict=True)}
        text = model_text(action, found.results, markers)
        if found.notes:
            text += "\n\n" + "\n".join(found.notes)
        if not self.settings.live:
            text += "\n\n(Live web access is off for this request: only pages cached earlier were searched.)"
        return ToolOutcome(item, text, sources)

    def failed(self, call: BuiltinCall, message: str, item: Item | None) -> ToolOutcome:
        base = item or {"id": new_id("ws"), "type": "web_search_call", "action": parse_action(call.arguments)[0]}
        failed = {**base, "status": "failed"}
        return ToolOutcome(failed, f"The web search failed: {message}.")

    async def _act(self, action: dict[str, Any]) -> Found:
        settings = self.settings
        if action["type"] == "search":
            return await self._search(action.get("queries") or [action["query"]])
        page = await self._pages.read(self.project_id, action["url"], live=settings.live,
                                      domains=settings.allowed_domains)
        budget = settings.budget
        if action["type"] == "open_page":
            text = page.text[: budget.page_chars]
            if len(page.text) > budget.page_chars:
                text += " [...]"
            return Found([{"url": page.url, "title": page.title, "text": text}])
        passages = find_in_text(page.text, action["pattern"], window=budget.find_window, limit=budget.find_matches)
        text = "\n".join(passages) if passages else f"The text {action['pattern']!r} does not occur on this page."
        return Found([{"url": page.url, "title": page.title, "text": text}])

    async def _search(self, queries: list[str]) -> Found:
        outcomes = await asyncio.gather(*(self._one_query(q) for q in queries), return_exceptions=True)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        for failure in failures:
            if not isinstance(failure, SearchFailed):
                raise failure
        if len(failures) == len(outcomes):
            raise failures[0]
        budget = self.settings.budget
        seen: set[str] = set()
        found = Found(status="incomplete" if failures else "completed")
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                continue
            for result in outcome:
                if result.url in seen or not allowed(result.url, self.settings.allowed_domains):
                    continue
                seen.add(result.url)
                found.results.append({"url": result.url, "title": result.title or result.url,
                                      "text": _result_text(result, budget.result_chars)})
        found.results = found.results[: budget.results * len(queries)]
        found.notes = [f"One of the queries failed: {failure}." for failure in failures]
        return found

    async def _one_query(self, text: str) -> list[SearchResult]:
        settings = self.settings
        count = min(settings.max_results, settings.budget.results)
        if not settings.live:
            pages = await self._pages.search_cache(self.project_id, text, count, settings.allowed_domains)
            return [SearchResult(p.url, p.title, p.text) for p in pages]
        if self._provider is None:  # the service refuses such a request; kept as a clear outcome
            raise SearchFailed("this server has no search provider configured")
        query = SearchQuery(text, count, settings.allowed_domains, settings.location,
                            full_text=settings.context_size == "high")
        return await self._provider.search(query)


def _result_text(result: SearchResult, limit: int) -> str:
    text = " ".join(part for part in (result.snippet, *result.extra) if part)
    return text if len(text) <= limit else text[:limit].rstrip() + " [...]"


def parse_action(arguments: str) -> tuple[dict[str, Any], str | None]:
    """The call's action in the SDK's shape, and why it is unusable (None when it is fine)."""
    try:
        data = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        return {"type": "search", "query": ""}, "the arguments were not a JSON object"
    kind = data.get("action") or ("open_page" if data.get("url") and not data.get("query") else "search")
    if kind == "search":
        raw = data.get("queries") or data.get("query")
        listed = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
        queries = [q.strip() for q in listed if isinstance(q, str) and q.strip()][:_MAX_QUERIES]
        if not queries:
            return {"type": "search", "query": ""}, "a search needs a query"
        action: dict[str, Any] = {"type": "search", "query": queries[0]}
        if len(queries) > 1:
            action["queries"] = queries
        return action, None
    if kind not in ("open_page", "find_in_page"):
        return {"type": "search", "query": ""}, f"unknown action {kind!r} (use search, open_page or find_in_page)"
    url = data.get("url")
    if not isinstance(url, str) or host_of(url) is None or not url.lower().startswith(("http://", "https://")):
        return {"type": kind, "url": str(url or ""), **({"pattern": ""} if kind == "find_in_page" else {})}, \
            f"{kind} needs an http(s) url"
    if kind == "open_page":
        return {"type": "open_page", "url": url}, None
    pattern = data.get("pattern")
    if not isinstance(pattern, str) or not pattern.strip():
        return {"type": "find_in_page", "url": url, "pattern": ""}, "find_in_page needs a pattern"
    return {"type": "find_in_page", "url": url, "pattern": pattern}, None


def url_source(url: str, title: str) -> Source:
    """A citable page: the marker becomes a Markdown link to it, which the url_citation spans."""
    host = host_of(url) or url
    label = host.removeprefix("www.")
    link = url.replace(" ", "%20").replace("(", "%28").replace(")", "%29")
    return Source({"type": "url_citation", "url": url, "title": title or label}, inline=f"([{label}]({link}))")


def model_text(action: dict[str, Any], results: list[dict[str, Any]], markers: list[int]) -> str:
    """What the model reads: numbered results or the page's text, and how to cite them."""
    kind = action.get("type")
    if kind == "search":
        asked = "; ".join(action.get("queries") or [action.get("query") or ""])
        if not results:
            return f"Web search for {asked!r} found nothing."
        lines = [f"Web search results for {asked!r}:"]
        for marker, result in zip(markers, results, strict=True):
            lines.append(f"\n[{marker}] {result['title']} — {result['url']}\n{result['text']}")
        lines.append("\nCite a result with its marker right after what it supports, e.g. [1]. "
                     "To read a page, call web_search with action 'open_page' and its url.")
        return "\n".join(lines)
    if not results:
        return f"The page {action.get('url')} could not be read."
    result, marker = results[0], markers[0]
    what = f"Passages containing {action.get('pattern')!r}" if kind == "find_in_page" else "Text"
    return (f"{what} of the page [{marker}] {result['title']} — {result['url']}:\n\n{result['text']}\n\n"
            f"Cite this page with its marker, e.g. [{marker}].")


def replay(item: Item) -> list[Item]:
    """A stored web_search_call as the function call the model made and the text it was given."""
    action = item.get("action") or {"type": "search", "query": ""}
    kind = action.get("type", "search")
    arguments: dict[str, Any] = {"action": kind}
    for key in ("query", "queries", "url", "pattern"):
        if action.get(key):
            arguments[key] = action[key]
    results = item.get("results")
    if item.get("status") == "failed":
        output = "The web search failed."
    elif isinstance(results, list):
        output = model_text(action, results, list(range(1, len(results) + 1)))
    else:  # resent by a client without its results (they are not part of the SDK's item)
        sources = [s.get("url") for s in action.get("sources") or () if isinstance(s, dict)]
        output = "The web search ran" + (f"; it found: {', '.join(map(str, sources))}." if sources else ".")
    return function_pair(str(item.get("id") or new_id("ws")), NAME, orjson.dumps(arguments).decode(), output)
