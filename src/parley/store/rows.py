"""Row shapes of the responses and items tables, shared by every module that writes them."""

from __future__ import annotations

from typing import Any

import orjson

Item = dict[str, Any]


def response_row(project_id: str, response: dict[str, Any]) -> dict[str, Any]:
    """The responses row: indexed columns plus the Response object without `output` (items hold it)."""
    body = {k: v for k, v in response.items() if k != "output"}
    return {
        "id": response["id"],
        "project_id": project_id,
        "created_at": response["created_at"],
        "status": response["status"],
        "model": response["model"],
        "previous_response_id": response.get("previous_response_id"),
        "conversation_id": (response.get("conversation") or {}).get("id"),
        "background": bool(response.get("background")),
        "body": orjson.dumps(body).decode(),
    }


def item_rows(project_id: str, response_id: str, kind: int, items: list[Item], start: int = 0) -> list[dict[str, Any]]:
    """Rows of the items table; kind 0 = input, 1 = output; positions count from `start`."""
    return [
        {
            "project_id": project_id,
            "response_id": response_id,
            "kind": kind,
            "position": position,
            "item_id": item["id"],
            "type": item["type"],
            "data": orjson.dumps(item).decode(),
        }
        for position, item in enumerate(items, start)
    ]
