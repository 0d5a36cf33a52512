"""Built-in tools the upstream runs itself: the model config's `hosted_tools` take them out of Parley's toolbox.

By default every built-in tool a request declares runs in Parley (tools/). A model whose config lists a tool type
in `hosted_tools` (only native Responses upstreams, e.g. OpenAI's `web_search`) gets that tool entry as the
client sent it; its items come back from the upstream and are passed through into the response
(providers/base.py HostedItem).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from parley.providers.base import HostedTool
from parley.schema.tools import ToolSet


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
        elif plan.mode != "none" and (plan.allowed is None or spec.upstream_name in plan.allowed):
            passed.append(HostedTool(spec.upstream_name, dict(raw_tools[spec.index])))
    return dataclasses.replace(toolset, builtins=tuple(keep)), passed
