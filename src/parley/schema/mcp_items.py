"""Input items of the `mcp` tool (`mcp_list_tools`, `mcp_approval_request`, `mcp_approval_response`,
`mcp_call`), validated as the SDK types them (api-surface.md §3.4, §5.5): a client resending history or
answering an approval gets a 400 naming the field, never a malformed item stored and failing later turns."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from parley.schema.id_fields import BodyId


class _Keep(BaseModel):
    model_config = ConfigDict(extra="allow")


class McpListedTool(_Keep):
    name: str
    input_schema: dict[str, Any]
    description: str | None = None
    annotations: dict[str, Any] | None = None


class McpListTools(_Keep):
    type: Literal["mcp_list_tools"]
    id: BodyId | None = None
    server_label: str
    tools: list[McpListedTool]
    error: str | None = None


class McpApprovalRequest(_Keep):
    type: Literal["mcp_approval_request"]
    id: BodyId | None = None
    server_label: str
    name: str
    arguments: str


class McpApprovalResponse(_Keep):
    type: Literal["mcp_approval_response"]
    id: BodyId | None = None
    approval_request_id: Annotated[BodyId, Field(min_length=1)]
    approve: StrictBool
    reason: str | None = None


class McpProtocolError(_Keep):
    type: Literal["mcp_protocol_error"]
    code: int
    message: str


class McpToolExecutionError(_Keep):
    type: Literal["mcp_tool_execution_error"]
    content: Any


class McpHttpError(_Keep):
    type: Literal["http_error"]
    code: int
    message: str


McpCallError = Annotated[McpProtocolError | McpToolExecutionError | McpHttpError, Field(discriminator="type")]


class McpCall(_Keep):
    type: Literal["mcp_call"]
    id: BodyId | None = None
    server_label: str
    name: str
    arguments: str
    output: str | None = None
    # Structured since 2026; older SDKs (and histories they stored) have a string.
    error: McpCallError | str | None = None
    status: Literal["in_progress", "completed", "incomplete", "calling", "failed"] | None = None
    approval_request_id: BodyId | None = None


MODELS: Mapping[str, type[BaseModel]] = MappingProxyType({
    "mcp_list_tools": McpListTools, "mcp_approval_request": McpApprovalRequest,
    "mcp_approval_response": McpApprovalResponse, "mcp_call": McpCall,
})
ID_PREFIX: Mapping[str, str] = MappingProxyType({
    "mcp_list_tools": "mcpl", "mcp_approval_request": "mcpr", "mcp_approval_response": "mcpa", "mcp_call": "mcp",
})
