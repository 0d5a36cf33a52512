"""`max_tool_calls`: how many built-in (server-run) tool calls one response may still make.

As in the OpenAI API the cap counts only tools the server runs (file_search, web_search,
code_interpreter, MCP); function and custom tool calls returned to the client never use it. The run
holds one budget for the whole response (across its model turns); a built-in tool dispatcher asks
`take()` before each call and, when it says no, tells the model the tool is not available any more.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ToolCallBudget:
    limit: int | None = None
    used: int = 0

    def take(self) -> bool:
        """Use one call if any is left."""
        if self.limit is not None and self.used >= self.limit:
            return False
        self.used += 1
        return True

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(self.limit - self.used, 0)
