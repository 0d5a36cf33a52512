"""Built-in tools the upstream runs itself: the model config's `hosted_tools` take them out of Parley's toolbox.

By default every built-in tool a request declares runs in Parley (tools/). A model whose config lists a tool type
in `hosted_tools` (only native Responses upstreams, e.g. OpenAI's `web_search`) gets that tool entry as the
client sent it; its items come back from the upstream and are passed through into the response
(providers/base.py HostedItem). A hosted `tool_search` also gets every deferred tool, marked `defer_loading`
(ToolSet.hosted_search), since the upstream does the loading; a hosted `shell` is one with a container
environment, whose container is the upstream's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from parley.providers.base import HostedTool
from parley.schema.builtin_tools import McpParams
from parley.schema.tools import BuiltinSpec, ToolChoicePlan, ToolSet


def split_hosted(
    toolset: ToolSet, raw_tools: Sequence[dict[str, Any]], hosted: frozenset[str]
) -> tuple[ToolSet, list[HostedTool]]:
    """`toolset` without the built-in tools the upstream hosts, and those tools' entries as sent. A tool
    `tool_choice` excludes (`none`, outside `allowed_tools`) is not passed at all."""
    if not hosted or not toolset.builtins:
        return toolset, []
    plan = toolset.plan
    keep = []
    passed: list[HostedTool] = []
    for spec in toolset.builtins:
        if spec.type not in hosted and spec.kind not in hosted:
            keep.append(spec)
        elif plan.mode != "none" and (plan.allowed is None or spec.upstream_name in plan.allowed
                                      or _chosen_server(spec, plan)):
            passed.append(HostedTool(spec.upstream_name, dict(raw_tools[spec.index])))
    # A hosted tool search searches the deferred tools itself: they go upstream marked `defer_loading`.
    searching = any(spec.kind == "tool_search" for spec in toolset.builtins if spec not in keep)
    return dataclasses.replace(toolset, builtins=tuple(keep), hosted_search=searching), passed


def _chosen_server(spec: BuiltinSpec, plan: ToolChoicePlan) -> bool:
    """An `mcp` entry whose server `tool_choice.allowed_tools` names."""
    return isinstance(spec.params, McpParams) and any(ref.server_label == spec.params.server_label
                                                      for ref in plan.mcp)


def hosted_mcp_choice(toolset: ToolSet, passed: Sequence[HostedTool], choice: dict[str, Any]
                      ) -> tuple[ToolSet, dict[str, Any]] | None:
    """A `tool_choice` of type `mcp` naming a server the upstream hosts: the choice goes to the upstream as the
    client sent it (the upstream enforces it), and Parley's plan has nothing left to check."""
    labels = {hosted.entry.get("server_label") for hosted in passed if hosted.entry.get("type") == "mcp"}
    if choice.get("type") != "mcp" or choice.get("server_label") not in labels:
        return None
    return dataclasses.replace(toolset, plan=ToolChoicePlan()), choice
