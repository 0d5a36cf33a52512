"""Stored MCP items -> what an upstream can take, so the model sees each call once, with its result or denial.

- `mcp_list_tools`: nothing (the tools are offered as functions on every turn).
- `mcp_call`: the function call the model made and its output (or why it failed), at the call's position.
- `mcp_approval_request`: nothing when the client approved it (its `mcp_call`, made at the start of the next
  response, carries the result; before that call exists the engine adds it, engine/run.py); when denied, the
  call and "the user denied it" at the request's position; with no answer, the call and "not made".
- `mcp_approval_response`: nothing (its decision shows in the items above).
The function names are those the tools are offered with (tools/mcp/names.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from parley.tools.base import function_pair
from parley.tools.mcp.items import call_text, denied_text, unapproved_text
from parley.tools.mcp.names import function_name

Item = dict[str, Any]
TYPES = frozenset({"mcp_list_tools", "mcp_call", "mcp_approval_request", "mcp_approval_response"})


def replay(items: list[Item], keep: Callable[[Item], bool] | None = None) -> list[Item]:
    """`items` with MCP items replaced as above (the same list when there are none). Items `keep` holds (of a
    server the upstream hosts) stay as they are, and so does an approval response to a request kept."""
    if not any(item["type"] in TYPES for item in items):
        return items
    kept = {id(item) for item in items
            if item["type"] in TYPES and item["type"] != "mcp_approval_response" and keep is not None and keep(item)}
    kept_requests = {item["id"] for item in items if id(item) in kept and item["type"] == "mcp_approval_request"}
    kept |= {id(item) for item in items
             if item["type"] == "mcp_approval_response" and item["approval_request_id"] in kept_requests}
    decisions: dict[str, Item] = {}
    for item in items:
        if item["type"] == "mcp_approval_response":
            decisions.setdefault(str(item["approval_request_id"]), item)
    called = {item.get("approval_request_id") for item in items if item["type"] == "mcp_call"}
    out: list[Item] = []
    for item in items:
        kind = item["type"]
        if kind not in TYPES or id(item) in kept:
            out.append(item)
        elif kind == "mcp_call":
            out += _pair(item, call_text(item))
        elif kind == "mcp_approval_request" and item["id"] not in called:
            decision = decisions.get(item["id"])
            if decision is None:
                out += _pair(item, unapproved_text(item["name"]))
            elif decision["approve"] is False:
                out += _pair(item, denied_text(item["name"], decision.get("reason")))
    return out


def _pair(item: Item, output: str) -> list[Item]:
    name = function_name(str(item["server_label"]), str(item["name"]))
    return function_pair(str(item["id"]), name, str(item["arguments"]), output)
