"""Stored items of built-in tools -> what an upstream can take: a function call and its output.

Providers know only messages, reasoning and function/custom calls. Before a context goes upstream (the next
turn of a response, or a later request along `previous_response_id` or a conversation), every built-in tool
item is replaced by the function call the model made and the text it was given back, rebuilt
deterministically from the stored item by the tool that made it. Items of unknown types pass unchanged.
MCP items are replayed together (tools/mcp/replay.py): whether an approval request shows depends on its answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from parley.schema.client_tools import REPLAYS as CLIENT_TOOL_REPLAYS
from parley.tools import code_interpreter as code_interpreter
from parley.tools import file_search as file_search
from parley.tools import image_generation as image_generation
from parley.tools import web_search as web_search
from parley.tools.mcp import replay as mcp_replay

Item = dict[str, Any]
Replay = Callable[[Item], list[Item]]

REPLAYS: Mapping[str, Replay] = MappingProxyType({
    "file_search_call": file_search.replay,
    "web_search_call": web_search.replay,
    "code_interpreter_call": code_interpreter.replay,
    "image_generation_call": image_generation.replay,
    # client-executed tools with their own items (computer, shell, apply_patch): calls and their outputs
    **CLIENT_TOOL_REPLAYS,
})


# The item types replay_items may rewrite: a context without any is passed through as it is.
REPLAYED_TYPES = frozenset(REPLAYS) | mcp_replay.TYPES


def replay_items(items: list[Item], keep: Callable[[Item], bool] | None = None) -> list[Item]:
    """`items` with every tool item replaced by the function call and output it was for the model (a new list).
    Items `keep` holds stay as they are: a tool the model's upstream hosts takes its own items back
    (providers/hosted_input.py hosted_items)."""
    items = mcp_replay.replay(items, keep)
    if not any(item["type"] in REPLAYS and "upstream" not in item and not (keep and keep(item)) for item in items):
        return items
    out: list[Item] = []
    for item in items:
        # An item a hosting upstream made (providers/base.py HostedItem) goes back to it as it is.
        kept = "upstream" in item or (keep is not None and keep(item))
        replay = REPLAYS.get(item["type"]) if not kept else None
        if replay is None:
            out.append(item)
        else:
            out.extend(replay(item))
    return out
