"""Which of an MCP server's tools a request offers (`allowed_tools`) and which need the client's approval
before they run (`require_approval`), as the `mcp` tool entry says (api-surface.md §4).

A filter `{tool_names, read_only}` matches a tool when every criterion it gives holds: the tool's name is
listed, and its `readOnlyHint` annotation (absent: false) equals `read_only`. `require_approval`:
`always` (the default, as in OpenAI) or `never`; a filter object: a tool matching `never` runs without
approval, one matching `always` needs it, and any other tool needs it unless an `always` filter is given
(then `always` lists exactly the tools that need approval).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from parley.schema.builtin_tools import McpApprovalFilter, McpToolFilter


@dataclass(frozen=True, slots=True)
class ListedTool:
    """One tool of a server, as its `mcp_list_tools` item keeps it."""

    name: str
    input_schema: dict[str, Any]
    description: str | None = None
    annotations: dict[str, Any] | None = None

    @property
    def read_only(self) -> bool:
        return bool((self.annotations or {}).get("readOnlyHint") is True)

    def as_item_tool(self) -> dict[str, Any]:
        """The tool in an `mcp_list_tools` item (`McpListToolsTool`)."""
        entry: dict[str, Any] = {"name": self.name, "input_schema": self.input_schema}
        if self.description is not None:
            entry["description"] = self.description
        if self.annotations is not None:
            entry["annotations"] = self.annotations
        return entry

    @classmethod
    def from_item_tool(cls, entry: dict[str, Any]) -> ListedTool:
        schema = entry.get("input_schema")
        annotations = entry.get("annotations")
        return cls(str(entry["name"]), schema if isinstance(schema, dict) else {"type": "object"},
                   entry.get("description"), annotations if isinstance(annotations, dict) else None)


@dataclass(frozen=True, slots=True)
class ToolFilter:
    names: frozenset[str] | None = None
    read_only: bool | None = None

    @classmethod
    def of(cls, raw: McpToolFilter | None) -> ToolFilter | None:
        if raw is None:
            return None
        return cls(frozenset(raw.tool_names) if raw.tool_names is not None else None, raw.read_only)

    def matches(self, tool: ListedTool) -> bool:
        if self.names is not None and tool.name not in self.names:
            return False
        return self.read_only is None or tool.read_only == self.read_only


@dataclass(frozen=True, slots=True)
class McpPolicy:
    allowed: ToolFilter | None = None  # None: every tool of the server
    approval: Literal["always", "never"] | None = "always"  # None: by the filters below
    always: ToolFilter | None = None
    never: ToolFilter | None = None

    @classmethod
    def of(cls, allowed_tools: list[str] | McpToolFilter | None,
           require_approval: Literal["always", "never"] | McpApprovalFilter | None) -> McpPolicy:
        if isinstance(allowed_tools, list):
            allowed: ToolFilter | None = ToolFilter(frozenset(allowed_tools))
        else:
            allowed = ToolFilter.of(allowed_tools)
        if isinstance(require_approval, McpApprovalFilter):
            return cls(allowed, None, ToolFilter.of(require_approval.always), ToolFilter.of(require_approval.never))
        return cls(allowed, require_approval or "always")

    def allows(self, tool: ListedTool) -> bool:
        return self.allowed is None or self.allowed.matches(tool)

    def needs_approval(self, tool: ListedTool) -> bool:
        if self.approval is not None:
            return self.approval == "always"
        if self.never is not None and self.never.matches(tool):
            return False
        if self.always is not None:
            return self.always.matches(tool)
        return True
