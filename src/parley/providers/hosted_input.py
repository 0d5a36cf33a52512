"""A hosted tool's items as a Responses upstream takes them back when a `store: false` client resends them.

A hosting upstream's item (providers/base.py HostedItem) goes back to it verbatim through its `upstream` state.
A `store: false` client (Codex, the Agents SDK) instead resends its copy: Parley's view of the item, without
`upstream` (only reasoning is sealed, engine/sealing.py; a client's `upstream` is dropped on input). To an upstream
that hosts the tool that makes the item, that copy goes as the item it is, as OpenAI takes it as input
(openai's `ResponseInputItemParam`): only the fields of that input type (never a Parley field such as a Parley
web search's `results`), and Parley's id only where the input type requires an id (the mcp approval and call
items name each other by it); where it is optional it is left out. Anywhere else such an item is replayed as
the function call it stands for (tools/replay.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from parley.providers.base import HostedTool, Item

# Item types of the upstream's own tools, by the type of the tool entry that makes them.
HOSTED_ITEM: dict[str, tuple[str, ...]] = {
    "web_search": ("web_search_call",), "web_search_preview": ("web_search_call",),
    "file_search": ("file_search_call",), "code_interpreter": ("code_interpreter_call",),
    "mcp": ("mcp_call", "mcp_list_tools", "mcp_approval_request"), "image_generation": ("image_generation_call",),
    "tool_search": ("tool_search_call", "tool_search_output"), "shell": ("shell_call", "shell_call_output")}
_MCP = frozenset({"mcp_list_tools", "mcp_approval_request", "mcp_approval_response", "mcp_call"})
# Hosted items that are no call of their tool (what tool_choice checks count).
NOT_CALLS = frozenset({"mcp_list_tools"})

# The fields of each input item type (openai/types/responses/response_input_item_param.py and the params it
# names; tests/providers/test_hosted_input.py compares them with the installed package).
INPUT_FIELDS: dict[str, frozenset[str]] = {
    "web_search_call": frozenset({"type", "id", "status", "action"}),
    "file_search_call": frozenset({"type", "id", "status", "queries", "results"}),
    "code_interpreter_call": frozenset({"type", "id", "status", "code", "container_id", "outputs"}),
    "image_generation_call": frozenset({"type", "id", "status", "result", "action", "background", "error",
                                        "output_format", "quality", "revised_prompt", "size", "svg_usage"}),
    "mcp_list_tools": frozenset({"type", "id", "server_label", "tools", "error"}),
    "mcp_approval_request": frozenset({"type", "id", "server_label", "name", "arguments"}),
    "mcp_approval_response": frozenset({"type", "id", "approval_request_id", "approve", "reason"}),
    "mcp_call": frozenset({"type", "id", "server_label", "name", "arguments", "approval_request_id", "error",
                           "output", "status"}),
    "tool_search_call": frozenset({"type", "id", "call_id", "execution", "arguments", "status"}),
    "tool_search_output": frozenset({"type", "id", "call_id", "execution", "tools", "status"}),
    "shell_call": frozenset({"type", "id", "call_id", "action", "caller", "environment", "status"}),
    "shell_call_output": frozenset({"type", "id", "call_id", "caller", "output", "max_output_length", "status"}),
}
# The input types whose `id` is required.
ID_REQUIRED = frozenset({"web_search_call", "file_search_call", "code_interpreter_call", "image_generation_call",
                         "mcp_list_tools", "mcp_approval_request", "mcp_call"})


def hosted_types(hosted_tools: Sequence[HostedTool]) -> dict[str, str]:
    """Item type -> the upstream name of the hosted tool that makes it."""
    found: dict[str, str] = {}
    for hosted in hosted_tools:
        kind = str(hosted.entry.get("type", ""))
        base = "web_search" if kind.startswith("web_search_preview") else kind.split("_20")[0]
        for item_type in HOSTED_ITEM.get(base, ()):
            found[item_type] = hosted.name
    return found


def hosted_servers(hosted_tools: Sequence[HostedTool]) -> frozenset[str]:
    """The `server_label`s of the MCP servers the upstream hosts."""
    return frozenset(str(h.entry.get("server_label")) for h in hosted_tools if h.entry.get("type") == "mcp")


def hosted_items(hosted_tools: Sequence[HostedTool]) -> Callable[[Item], bool]:
    """Whether an item is one of the hosted tools': of a type they make, or an MCP item of a server the upstream
    hosts (an `mcp_approval_response` when it hosts any; tools/mcp/replay.py also checks its request's server)."""
    types = frozenset(hosted_types(hosted_tools)) - _MCP
    servers = hosted_servers(hosted_tools)

    def holds(item: Item) -> bool:
        kind = item["type"]
        if kind == "mcp_approval_response":
            return bool(servers)
        if kind in _MCP:
            return item.get("server_label") in servers
        return kind in types

    return holds


def resent_item(item: Item) -> dict[str, Any]:
    """A client's copy of a hosted item as the Responses input item of its type."""
    kind = item["type"]
    fields = INPUT_FIELDS[kind] if kind in ID_REQUIRED else INPUT_FIELDS[kind] - {"id"}
    return {key: value for key, value in item.items() if key in fields}
