"""The built-in tools of one request: each declared tool (`tools[i]`, validated by schema/tools.py) becomes a
runnable tool object with the services it needs, checked against the caller's project first (an unknown or
foreign vector store is a 404 naming the parameter, before anything is sent upstream). `mcp` entries become one
tool per server tool, set up together against the request's context (services/mcp.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from parley.engine.tool_loop import Toolbox
from parley.errors import InvalidRequest
from parley.schema.builtin_tools import (
    FileSearchParams,
    ImageGenerationParams,
    McpParams,
    ToolSearchParams,
    WebSearchParams,
    WebSearchPreviewParams,
)
from parley.schema.containers import CodeInterpreterParams, ShellContainerParams
from parley.schema.tools import BuiltinSpec
from parley.services.code_interpreter import CodeInterpreterSetup
from parley.services.image_generation import ImageGenerationSetup
from parley.services.mcp import McpService, McpSetup
from parley.tools.base import BuiltinTool, ToolContext
from parley.tools.file_search import DEFAULT_MAX_RESULTS, FileSearchTool, SearchHit
from parley.tools.tool_search import ToolSearchTool
from parley.tools.web_search import WebSearchTool


class VectorStoreAccess(Protocol):
    """What file_search needs from the vector stores service."""

    async def require_stores(self, project_id: str, vector_store_ids: list[str], param: str) -> None:
        """NotFound (naming `param`) unless every store exists in the project."""
        ...

    def check_filters(self, filters: dict[str, Any] | None, param: str) -> None:
        """InvalidRequest (naming the offending part of `param`) for a malformed filter."""
        ...

    async def search(
        self, project_id: str, vector_store_ids: list[str], queries: list[str], *, max_num_results: int,
        filters: dict[str, Any] | None, ranking_options: dict[str, Any] | None,
    ) -> Sequence[SearchHit]: ...


class WebSearchAccess(Protocol):
    """What web_search needs from the web search service (services/web_search.py)."""

    def tool(self, project_id: str, spec: BuiltinSpec) -> WebSearchTool:
        """The request's tool; InvalidRequest (naming the tool) if it asks for what the server cannot do."""
        ...


@dataclass(frozen=True, slots=True)
class ToolLimits:
    max_concurrent: int = 4
    timeout_s: float = 60.0
    max_turns: int = 8


class BuiltinTools:
    def __init__(self, vector_stores: VectorStoreAccess | None, limits: ToolLimits,
                 web: WebSearchAccess | None = None, mcp: McpService | None = None,
                 code: CodeInterpreterSetup | None = None, images: ImageGenerationSetup | None = None) -> None:
        self._code = code
        self._images = images
        self._vector_stores = vector_stores
        self._limits = limits
        self._web = web
        self._mcp = mcp

    async def toolbox(self, project_id: str, specs: Sequence[BuiltinSpec],
                      context: ToolContext | None = None) -> Toolbox:
        """The request's tools, set up against its `context` (code_interpreter's `auto` reuses the container of an
        earlier call; MCP reuses tool lists and runs the calls the input approves)."""
        tools: dict[str, BuiltinTool] = {}
        mcp_specs = [spec for spec in specs if isinstance(spec.params, McpParams) and self._mcp is not None]
        for spec in specs:
            if spec in mcp_specs:
                continue
            if isinstance(spec.params, FileSearchParams):
                tools[spec.upstream_name] = await self._file_search(project_id, spec, spec.params)
            elif isinstance(spec.params, WebSearchParams | WebSearchPreviewParams) and self._web is not None:
                tools[spec.upstream_name] = self._web.tool(project_id, spec)
            elif isinstance(spec.params, CodeInterpreterParams) and self._code is not None:
                items = context.items if context is not None else ()
                tools[spec.upstream_name] = await self._code.tool(project_id, spec, items)
            elif isinstance(spec.params, ShellContainerParams) and self._code is not None:
                items = context.items if context is not None else ()
                tools[spec.upstream_name] = await self._code.shell_tool(project_id, spec, items)
            elif isinstance(spec.params, ToolSearchParams):
                tools[spec.upstream_name] = ToolSearchTool(spec.catalog)
            elif isinstance(spec.params, ImageGenerationParams) and self._images is not None:
                items = context.items if context is not None else ()
                tools[spec.upstream_name] = await self._images.tool(project_id, spec, items)
            else:  # a built-in tool this server was set up without
                raise InvalidRequest(f"Tool type '{spec.type}' is not supported by this server yet.",
                                     param=f"{spec.param}.type", code="unsupported_tool")
        setup = McpSetup()
        if self._mcp is not None and (mcp_specs or context is not None):  # also: approvals for a missing server
            base = context or ToolContext()
            taken = base.taken | frozenset(tools)
            setup = await self._mcp.setup(mcp_specs, replace(base, taken=taken))
        limits = self._limits
        return Toolbox({**tools, **setup.tools}, max_concurrent=limits.max_concurrent, timeout_s=limits.timeout_s,
                       max_turns=limits.max_turns, closers=setup.closers, leading=setup.leading,
                       first_calls=setup.first_calls)

    async def _file_search(self, project_id: str, spec: BuiltinSpec, params: FileSearchParams) -> FileSearchTool:
        stores = self._vector_stores
        if stores is None:
            raise InvalidRequest("file_search needs vector stores, which this server has not enabled.",
                                 param=f"{spec.param}.type", code="unsupported_tool")
        await stores.require_stores(project_id, params.vector_store_ids, f"{spec.param}.vector_store_ids")
        stores.check_filters(params.filters, f"{spec.param}.filters")
        ranking = params.ranking_options.model_dump(exclude_none=True) if params.ranking_options else None
        return FileSearchTool(project_id, list(params.vector_store_ids), stores,
                              params.max_num_results or DEFAULT_MAX_RESULTS, params.filters, ranking)
