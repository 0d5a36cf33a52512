"""`tool_search` run by the server: the model searches the request's deferred tools (`defer_loading: true`) by
name and description, and the tools found are offered to it from the next turn on.

Offered as a function `tool_search(query)` whose description lists what can be searched (each namespace's name and
description, the other deferred tools' names). A call becomes two items, `tool_search_call`
(`arguments`, `execution: "server"`) then `tool_search_output` (`tools`: the definitions found, as the client
declared them, namespace members grouped under their namespace). The ranking is BM25 (k1 1.2, b 0.75: the
weighting of the vector stores' full-text search, services/vector_search.py) over each tool's words — its name
(counted twice), namespace, description and parameter names, common words left out — with an exact name
first. At most `limit` tools
are loaded per search.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson

from parley.ids import new_id
from parley.schema.client_tools import tool_search_text
from parley.schema.tools import ClientTool
from parley.tools.base import BuiltinCall, Citations, Following, ItemEmitter, ToolOutcome

Item = dict[str, Any]
NAME = "tool_search"
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_K1, _B = 1.2, 0.75
_ON_LOOP = 200  # larger catalogs are searched in a worker thread
# Words too common in tool descriptions and queries to say which tool is meant.
_STOP = frozenset("a an and any by for from i in is it me my of on or the this to up with".split())


def words(text: str) -> list[str]:
    """Lower-case words of `text`, snake_case and camelCase split (`getWeather` -> get, weather)."""
    return [word for word in (w.lower() for w in _WORD.findall(text)) if word not in _STOP]


def _document(tool: ClientTool) -> list[str]:
    parts = [tool.name, tool.name, tool.namespace or "", tool.namespace_description or "", tool.description or ""]
    properties = (tool.parameters or {}).get("properties")
    if isinstance(properties, dict):
        parts += [str(key) for key in properties]
    return words(" ".join(parts))


def rank(catalog: Sequence[ClientTool], query: str, limit: int) -> list[ClientTool]:
    """The tools best matching `query`, best first (only tools sharing a word with it)."""
    terms = set(words(query))
    exact = [tool for tool in catalog if query.strip() in (tool.name, tool.upstream_name)]
    docs = [_document(tool) for tool in catalog]
    if not docs:
        return []
    average = sum(len(doc) for doc in docs) / len(docs) or 1.0
    frequency = Counter(term for doc in docs for term in set(doc) if term in terms)
    scored: list[tuple[float, int]] = []
    for index, doc in enumerate(docs):
        counts = Counter(doc)
        score = 0.0
        for term in terms:
            tf = counts.get(term, 0)
            if tf:
                idf = math.log(1 + (len(docs) - frequency[term] + 0.5) / (frequency[term] + 0.5))
                score += idf * tf * (_K1 + 1) / (tf + _K1 * (1 - _B + _B * len(doc) / average))
        if score > 0:
            scored.append((-score, index))
    found = exact + [catalog[index] for _, index in sorted(scored) if catalog[index] not in exact]
    return found[:limit]


def definitions(tools: Sequence[ClientTool]) -> list[dict[str, Any]]:
    """The found tools as the client declared them; namespace members grouped under their namespace."""
    out: list[dict[str, Any]] = []
    groups: dict[str, dict[str, Any]] = {}
    for tool in tools:
        declared = dict(tool.declared or {"type": tool.kind, "name": tool.name})
        if tool.namespace is None:
            out.append(declared)
            continue
        group = groups.get(tool.namespace)
        if group is None:
            group = {"type": "namespace", "name": tool.namespace, "description": tool.namespace_description or "",
                     "tools": []}
            groups[tool.namespace] = group
            out.append(group)
        group["tools"].append(declared)
    return out


class ToolSearchTool:
    def __init__(self, catalog: Sequence[ClientTool], limit: int = 8) -> None:
        self._catalog = list(catalog)
        self._limit = limit

    @property
    def upstream_name(self) -> str:
        return NAME

    def function(self) -> dict[str, Any]:
        # Namespaces with their description, other tools by name only: a catalog of thousands stays small
        # (bench/tools_issue18.py measures the first request's size).
        listed: list[str] = []
        seen: set[str] = set()
        for tool in self._catalog:
            if tool.namespace is not None and tool.namespace not in seen:
                seen.add(tool.namespace)
                listed.append(f"- {tool.namespace} (a group of tools): {tool.namespace_description or ''}"
                              .rstrip(": "))
        names = [tool.name for tool in self._catalog if tool.namespace is None]
        if names:
            listed.append("- tools: " + ", ".join(names))
        catalog = "\n".join(listed) or "(none)"
        return {
            "name": NAME,
            "description": "Search for more tools by what they do; the tools found can be called from your next "
                           f"step on. Searchable:\n{catalog}",
            "parameters": {"type": "object", "properties": {"query": {
                "type": "string", "description": "Words describing the tools you need (or a tool's name)."}},
                "required": ["query"], "additionalProperties": False},
        }

    async def run(self, call: BuiltinCall, emit: ItemEmitter, citations: Citations) -> ToolOutcome:
        try:
            arguments = orjson.loads(call.arguments or "{}")
        except orjson.JSONDecodeError:
            arguments = {"query": call.arguments}
        if not isinstance(arguments, dict):
            arguments = {"query": str(arguments)}
        query = arguments.get("query")
        text = query if isinstance(query, str) else ""
        if len(self._catalog) > _ON_LOOP:  # ~1 ms per 100 tools (bench/tools_issue18.py): off the event loop
            found = await asyncio.to_thread(rank, self._catalog, text, self._limit)
        else:
            found = rank(self._catalog, text, self._limit)
        tools = definitions(found)
        search: Item = {"id": new_id("tsc"), "type": "tool_search_call", "call_id": call.call_id,
                        "arguments": arguments, "execution": "server", "status": "completed"}
        output: Item = {"id": new_id("tso"), "type": "tool_search_output", "call_id": call.call_id,
                        "execution": "server", "status": "completed", "tools": tools}
        return ToolOutcome(search, tool_search_text(tools), more_items=(Following(output),),
                           load=tuple(tool.upstream_function() for tool in found))

    def failed(self, call: BuiltinCall, message: str, item: Item | None) -> ToolOutcome:
        search = item or {"id": new_id("tsc"), "type": "tool_search_call", "call_id": call.call_id,
                          "arguments": {}, "execution": "server"}
        return ToolOutcome({**search, "status": "incomplete"}, f"The tool search failed: {message}.")
