"""/v1/models in the Anthropic Models API's shape, for requests carrying `anthropic-version` (the Anthropic SDK's
`models.list()` / `models.retrieve()`; api/models.py answers everyone else in OpenAI's shape).

A model is `{"type": "model", "id", "display_name", "created_at" (RFC 3339), "lifecycle", "max_input_tokens"}`;
a list is `{"data", "has_more", "first_id", "last_id"}`, paged with `limit` (1-1000, default 20), `after_id` and
`before_id` over the configured order.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request

from parley.api.http import query_int
from parley.errors import NotFound
from parley.providers.registry import ModelEntry


def anthropic_model(entry: ModelEntry) -> dict[str, Any]:
    created = datetime.fromtimestamp(entry.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": "model", "id": entry.id, "display_name": entry.id, "created_at": created, "lifecycle": "active",
            "max_input_tokens": entry.context_window}


def anthropic_model_list(request: Request, entries: list[ModelEntry]) -> dict[str, Any]:
    limit = query_int(request, "limit", 20, 1, 1000)
    ids = [entry.id for entry in entries]
    start, end = 0, len(entries)
    after, before = request.query_params.get("after_id"), request.query_params.get("before_id")
    if after is not None:
        start = _position(ids, after, "after_id") + 1
    if before is not None:
        end = _position(ids, before, "before_id")
        start = max(start, end - limit) if after is None else start
    page = entries[start:end][:limit]
    data = [anthropic_model(entry) for entry in page]
    has_more = (start + len(page) < end) if before is None else start > 0
    return {"data": data, "has_more": has_more, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}


def _position(ids: list[str], model_id: str, param: str) -> int:
    try:
        return ids.index(model_id)
    except ValueError:
        raise NotFound(f"The model '{model_id}' does not exist.", param=param, code="model_not_found") from None
