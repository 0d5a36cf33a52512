"""One tool of an MCP server as a built-in tool: offered to the model as a function with the tool's own input
schema (unchanged: `$ref`/`$defs` and all), run on the server through the response's session.

A call needing approval (tools/mcp/policy.py) is not made: it becomes an `mcp_approval_request` item and the
response ends there (`ToolOutcome.ends_response`); the client answers with an `mcp_approval_response` and the
call runs at the start of the next response (services/mcp.py). A call that runs is an `mcp_call` item with the
events `output_item.added` → `mcp_call.in_progress` → `mcp_call_arguments.delta` → `.done` →
`mcp_call.completed` | `.failed` → `output_item.done`; its output (or its structured error) goes back to the model.
"""

from __future__ import annotations

from typing import Any

import orjson

from parley.tools.base import BuiltinCall, Citations, ItemEmitter, ToolOutcome
from parley.tools.mcp.client import McpConnection, McpFailure
from parley.tools.mcp.items import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    REQUEST_TIMEOUT,
    approval_request,
    call_item,
    call_text,
    content_text,
    execution_error,
    protocol_error,
)
from parley.tools.mcp.policy import ListedTool

Item = dict[str, Any]
FAILED = "response.mcp_call.failed"


class McpTool:
    def __init__(self, upstream_name: str, tool: ListedTool, connection: McpConnection, *, needs_approval: bool,
                 server_description: str | None = None) -> None:
        self._upstream_name = upstream_name
        self.tool = tool
        self.connection = connection
        self.needs_approval = needs_approval
        self._server_description = server_description

    @property
    def upstream_name(self) -> str:
        return self._upstream_name

    @property
    def server_label(self) -> str:
        return self.connection.endpoint.server_label

    def function(self) -> dict[str, Any]:
        about = f"Tool '{self.tool.name}' of the MCP server '{self.server_label}'"
        if self._server_description:
            about += f" ({self._server_description})"
        description = f"{self.tool.description}\n\n{about}." if self.tool.description else f"{about}."
        return {"name": self._upstream_name, "description": description, "parameters": self.tool.input_schema}

    async def run(self, call: BuiltinCall, emit: ItemEmitter, citations: Citations) -> ToolOutcome:
        if self.needs_approval and call.approval_request_id is None:
            request = approval_request(self.server_label, self.tool.name, call.arguments)
            emit.start(request)
            return ToolOutcome(request, "", ends_response=True)
        item = call_item(self.server_label, self.tool.name, call.arguments, call.approval_request_id)
        emit.start(item)
        emit.progress("response.mcp_call.in_progress")
        emit.progress("response.mcp_call_arguments.delta", {"delta": call.arguments})
        emit.progress("response.mcp_call_arguments.done", {"arguments": call.arguments})
        arguments = parse_arguments(call.arguments)
        if arguments is None:
            return self._failed(emit, item, protocol_error(
                INVALID_PARAMS, "the arguments the model wrote are not a JSON object"))
        item = {**item, "status": "calling"}
        emit.update(item)
        try:
            result = await self.connection.call_tool(self.tool.name, arguments)
        except McpFailure as failure:
            return self._failed(emit, item, failure.error)
        content = [block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in result.content]
        if result.is_error:
            return self._failed(emit, item, execution_error(content))
        output = content_text(content, result.structured_content, self.connection.endpoint.max_output_chars)
        item = {**item, "status": "completed", "output": output}
        emit.update(item)
        emit.progress("response.mcp_call.completed")
        return ToolOutcome(item, output)

    def failed(self, call: BuiltinCall, message: str, item: Item | None) -> ToolOutcome:
        """The engine ended the call (engine/tool_loop.py: its time limit, or an exception)."""
        if item is not None and item["type"] == "mcp_approval_request":
            return ToolOutcome(item, "", ends_response=True)
        base = item if item is not None else call_item(self.server_label, self.tool.name, call.arguments,
                                                       call.approval_request_id)
        code = REQUEST_TIMEOUT if "did not finish" in message else INTERNAL_ERROR  # Dispatch's words
        error = protocol_error(code, f"the call failed: {message}")
        failed = {**base, "status": "failed", "output": None, "error": error}
        return ToolOutcome(failed, call_text(failed), closing_events=(FAILED,))

    def _failed(self, emit: ItemEmitter, item: Item, error: dict[str, Any]) -> ToolOutcome:
        failed = {**item, "status": "failed", "output": None, "error": error}
        emit.update(failed)
        emit.progress(FAILED)
        return ToolOutcome(failed, call_text(failed))


def parse_arguments(arguments: str) -> dict[str, Any] | None:
    """The call's arguments as an object (`{}` for none); None when they are not a JSON object."""
    if not arguments.strip():
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None
