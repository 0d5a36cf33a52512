"""The items the `mcp` tool produces (`mcp_list_tools`, `mcp_approval_request`, `mcp_call`), their structured
errors, and the text the model reads for each (api-surface.md §5.5).

`mcp_call.error` is the SDK's structured error: `mcp_protocol_error` (a JSON-RPC error, or what Parley reports
in its terms: a timeout is code -32001, a lost connection -32000, unusable arguments -32602),
`mcp_tool_execution_error` (the tool answered with `isError`; `content` is what it said) and `http_error`
(the server answered an HTTP error status).
"""

from __future__ import annotations

from typing import Any

import orjson

from parley.ids import new_id
from parley.tools.mcp.policy import ListedTool

Item = dict[str, Any]

CONNECTION_CLOSED = -32000  # JSON-RPC codes of the MCP specification (mcp_types.jsonrpc)
REQUEST_TIMEOUT = -32001
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

LIST_COMPLETED = ("response.mcp_list_tools.in_progress", "response.mcp_list_tools.completed")
LIST_FAILED = ("response.mcp_list_tools.in_progress", "response.mcp_list_tools.failed")


def list_item(server_label: str, tools: list[ListedTool], error: str | None = None) -> Item:
    item: Item = {"id": new_id("mcpl"), "type": "mcp_list_tools", "server_label": server_label,
                  "tools": [tool.as_item_tool() for tool in tools]}
    if error is not None:
        item["error"] = error
    return item


def approval_request(server_label: str, name: str, arguments: str) -> Item:
    return {"id": new_id("mcpr"), "type": "mcp_approval_request", "server_label": server_label, "name": name,
            "arguments": arguments}


def call_item(server_label: str, name: str, arguments: str, approval_request_id: str | None) -> Item:
    return {"id": new_id("mcp"), "type": "mcp_call", "server_label": server_label, "name": name,
            "arguments": arguments, "status": "in_progress", "output": None, "error": None,
            "approval_request_id": approval_request_id}


def protocol_error(code: int, message: str) -> dict[str, Any]:
    return {"type": "mcp_protocol_error", "code": code, "message": message}


def http_error(status: int, message: str) -> dict[str, Any]:
    return {"type": "http_error", "code": status, "message": message}


def execution_error(content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "mcp_tool_execution_error", "content": content}


def content_text(content: list[dict[str, Any]], structured: Any = None, limit: int = 100_000) -> str:
    """A tool result as text: its text blocks, other blocks as JSON (or the structured content if there is
    no block), cut at `limit` characters."""
    parts = [str(block["text"]) if block.get("type") == "text" and "text" in block
             else orjson.dumps(block).decode() for block in content]
    text = "\n".join(parts)
    if not parts and structured is not None:
        text = orjson.dumps(structured).decode()
    return text if len(text) <= limit else text[:limit] + " [...]"


def error_text(error: Any) -> str:
    """What went wrong, in words (for the model, and for logs)."""
    if isinstance(error, str):
        return error
    if not isinstance(error, dict):
        return "unknown error"
    kind = error.get("type")
    if kind == "mcp_tool_execution_error":
        content = error.get("content")
        blocks = [block for block in content if isinstance(block, dict)] if isinstance(content, list) else []
        said = content_text(blocks, limit=4000) if blocks else (str(content) if content else "")
        return f"the tool reported an error: {said}" if said else "the tool reported an error"
    if kind == "http_error":
        return f"the MCP server answered HTTP {error.get('code')}: {error.get('message')}"
    return f"MCP error {error.get('code')}: {error.get('message')}"


def call_text(item: Item) -> str:
    """What the model reads for a finished `mcp_call`."""
    if item.get("error") is not None or item.get("status") == "failed":
        return f"The call of {item.get('name')} failed: {error_text(item.get('error'))}."
    output = item.get("output")
    return str(output) if output is not None else ""


def denied_text(name: str, reason: str | None) -> str:
    said = f" Their reason: {reason}" if reason else ""
    return f"The user denied this call of {name}; it was not made.{said}"


def unapproved_text(name: str) -> str:
    return f"This call of {name} was not made: it needed the user's approval, which was not given."
