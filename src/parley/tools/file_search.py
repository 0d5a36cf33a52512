"""The `file_search` tool: the model searches the request's vector stores; hits come back numbered for citing.

Offered to the model as a function `file_search(queries: string[])`. A call becomes a `file_search_call` item
(`queries`, `status`, `results`) with the events `in_progress` → `searching` → `completed`; the hits go back
to the model as numbered passages ("[3] file: report.pdf ..."), and each marker the model writes becomes a
`file_citation` annotation (engine/citations.py). Only the listed stores are searched, with the tool's
`max_num_results`, `filters` and `ranking_options`. A failed search is a `failed` item and an error text for
the model, never empty results that look like success.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from parley.ids import new_id
from parley.tools.base import BuiltinCall, Citations, ItemEmitter, Source, ToolOutcome, function_pair

Item = dict[str, Any]
NAME = "file_search"
DEFAULT_MAX_RESULTS = 10  # OpenAI's default for file_search
_MAX_QUERIES = 5
_MAX_PASSAGE_CHARS = 4000

FUNCTION = {
    "name": NAME,
    "description": (
        "Search the user's files (their vector stores) for passages relevant to the question. Use it whenever "
        "the answer may be in the user's files. Give one to five short search queries."
    ),
    "parameters": {
        "type": "object",
        "properties": {
            "queries": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": _MAX_QUERIES,
                        "description": "Search queries, e.g. the question rephrased with its key terms."},
        },
        "required": ["queries"],
        "additionalProperties": False,
    },
}


class SearchHit(Protocol):
    @property
    def file_id(self) -> str: ...
    @property
    def filename(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def text(self) -> str: ...
    @property
    def attributes(self) -> dict[str, Any]: ...


class VectorSearch(Protocol):
    """What the tool needs from the vector stores service."""

    async def search(
        self, project_id: str, vector_store_ids: list[str], queries: list[str], *, max_num_results: int,
        filters: dict[str, Any] | None, ranking_options: dict[str, Any] | None,
    ) -> Sequence[SearchHit]: ...


@dataclass(frozen=True, slots=True)
class FileSearchTool:
    project_id: str
    vector_store_ids: list[str]
    search: VectorSearch
    max_num_results: int = DEFAULT_MAX_RESULTS
    filters: dict[str, Any] | None = None
    ranking_options: dict[str, Any] | None = None

    @property
    def upstream_name(self) -> str:
        return NAME

    def function(self) -> dict[str, Any]:
        return FUNCTION

    async def run(self, call: BuiltinCall, emit: ItemEmitter, citations: Citations) -> ToolOutcome:
        queries = parse_queries(call.arguments)
        item: Item = {"id": new_id("fs"), "type": "file_search_call", "status": "in_progress",
                      "queries": queries or [], "results": None}
        emit.start(item)
        emit.progress("response.file_search_call.in_progress")
        if not queries:
            return self.failed(call, "the call had no search queries (expected {\"queries\": [\"...\"]})", item)
        item = {**item, "status": "searching"}
        emit.update(item)
        emit.progress("response.file_search_call.searching")
        hits = await self.search.search(
            self.project_id, self.vector_store_ids, queries, max_num_results=self.max_num_results,
            filters=self.filters, ranking_options=self.ranking_options,
        )
        results = [{"file_id": h.file_id, "filename": h.filename, "score": round(float(h.score), 4), "text": h.text,
                    "attributes": dict(h.attributes)} for h in hits]
        item = {**item, "status": "completed", "results": results}
        emit.update(item)
        emit.progress("response.file_search_call.completed")
        markers = [citations.next_marker() for _ in results]
        sources = {marker: Source({"type": "file_citation", "file_id": r["file_id"], "filename": r["filename"]})
                   for marker, r in zip(markers, results, strict=True)}
        return ToolOutcome(item, model_text(queries, results, markers), sources)

    def failed(self, call: BuiltinCall, message: str, item: Item | None) -> ToolOutcome:
        base = item or {"id": new_id("fs"), "type": "file_search_call", "queries": parse_queries(call.arguments) or []}
        failed = {**base, "status": "failed", "results": None}
        return ToolOutcome(failed, f"The file search failed: {message}.")


def parse_queries(arguments: str) -> list[str] | None:
    """The model's queries; also a single `query` string (small models write that). None when unusable."""
    try:
        data = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    raw = data.get("queries", data.get("query"))
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        return None
    queries = [q.strip() for q in raw if isinstance(q, str) and q.strip()]
    return queries[:_MAX_QUERIES] or None


def model_text(queries: list[str], results: list[dict[str, Any]], markers: list[int]) -> str:
    """The hits as the model reads them: numbered passages, and how to cite them."""
    asked = "; ".join(queries)
    if not results:
        return f"File search for {asked!r} found nothing in the user's files."
    lines = [f"File search results for {asked!r}:"]
    for marker, result in zip(markers, results, strict=True):
        # Results resent by a client may lack fields (all are optional in the SDK's type).
        text = str(result.get("text") or "")
        if len(text) > _MAX_PASSAGE_CHARS:
            text = text[:_MAX_PASSAGE_CHARS] + " [...]"
        name = result.get("filename") or result.get("file_id") or "unknown file"
        score = result.get("score")
        scored = f" (score {score:.2f})" if isinstance(score, int | float) else ""
        lines.append(f"\n[{marker}] file: {name}{scored}\n{text}")
    lines.append("\nWhen you use a passage, cite it with its marker right after the statement, e.g. [1].")
    return "\n".join(lines)


def replay(item: Item) -> list[Item]:
    """A stored file_search_call as the function call the model made and the passages it was given."""
    queries = item.get("queries") or []
    arguments = orjson.dumps({"queries": queries}).decode()
    results = item.get("results")
    if item.get("status") == "failed":
        output = "The file search failed."
    elif results is None:
        output = f"File search for {'; '.join(queries)!r} ran; its results are not available any more."
    else:
        output = model_text(queries, results, list(range(1, len(results) + 1)))
    return function_pair(str(item["id"]), NAME, arguments, output)
