"""The `mcp` tools of one request: which server each entry means, its tools (listed now, or reused from an
`mcp_list_tools` item earlier in the context), the functions offered for them, and the calls the client approved.

- **Servers.** An entry with `server_url` is the client's server: allowed unless `[mcp] client_servers` is off,
  checked by the SSRF guard first (a refused URL is a 400 naming `tools[i].server_url`; every connection is
  checked again, tools/mcp/guard.py). An entry without one names an operator's `[[mcp_servers]]` entry by its
  label (its URL, headers or stdio command; trusted). `connector_id` and `tunnel_id` are 400 `unsupported_value`.
- **Listing.** A server is listed once per chain: the last `mcp_list_tools` item with its label (and no error)
  in the loaded context (`previous_response_id`, conversation or resent history) is reused; otherwise the
  server is listed now, before the first model turn, and its item leads the output with
  `response.mcp_list_tools.in_progress` → `.completed` | `.failed`. The item keeps every tool the server has;
  `allowed_tools` chooses which are offered. A failed listing offers none of its tools; the response goes on.
- **Approvals.** Each `mcp_approval_response` of this request's input that approves a request not answered yet
  becomes a call run before the first model turn (engine/run.py), its `mcp_call` carrying `approval_request_id`.
  Denied calls are not made (the model is told, tools/mcp/replay.py).
- **Sessions.** A client's server gets one session per response (closed with it); an operator's server without
  per-request headers shares one session per app (a stdio server stays one process), closed with the app.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx2

from parley.config import McpConfig, McpServerConfig
from parley.errors import InvalidRequest, UrlFetchFailed
from parley.retrieval.fetch import FetchPolicy, Resolver, SystemResolver
from parley.schema.builtin_tools import McpParams
from parley.schema.tools import BuiltinSpec
from parley.tools.base import BuiltinCall, BuiltinTool, LeadingItem, ToolContext
from parley.tools.mcp import items as mcp_items
from parley.tools.mcp.client import McpConnection, McpEndpoint, McpFailure, transport_for
from parley.tools.mcp.guard import GuardedNetwork, guard_ssl_context, refusal
from parley.tools.mcp.items import error_text
from parley.tools.mcp.names import unique_name
from parley.tools.mcp.policy import ListedTool, McpPolicy
from parley.tools.mcp.tool import McpTool

Item = dict[str, Any]


@dataclass(slots=True)
class McpSetup:
    tools: dict[str, BuiltinTool] = field(default_factory=dict)
    leading: list[LeadingItem] = field(default_factory=list)
    first_calls: list[BuiltinCall] = field(default_factory=list)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


@dataclass(slots=True)
class _Server:
    spec: BuiltinSpec
    params: McpParams
    endpoint: McpEndpoint
    connection: McpConnection
    listed: list[ListedTool] | None = None  # reused from the context
    new_item: Item | None = None  # listed now


class McpService:
    def __init__(self, config: McpConfig, servers: Sequence[McpServerConfig], policy: FetchPolicy,
                 resolver: Resolver | None = None) -> None:
        self._config = config
        self._declared = {server.label: server for server in servers}
        self._policy = policy
        self._resolver = resolver or SystemResolver()
        self._guard = GuardedNetwork(policy, self._resolver)
        self._shared: dict[str, McpConnection] = {}
        self._tls: dict[bool, ssl.SSLContext] = {}  # by guarded: built once, on first use (tools/mcp/client.py)

    async def aclose(self) -> None:
        """Close the app's shared sessions (operator servers)."""
        shared, self._shared = self._shared, {}
        await asyncio.gather(*(connection.aclose() for connection in shared.values()), return_exceptions=True)

    async def setup(self, specs: Sequence[BuiltinSpec], context: ToolContext) -> McpSetup:
        setup = McpSetup()
        servers: list[_Server] = []
        for spec in specs:
            assert isinstance(spec.params, McpParams)
            endpoint, shared = await self._endpoint(spec, spec.params)
            connection = self._connection(endpoint, shared, setup)
            listed = _last_listing(context.items, endpoint.server_label)
            servers.append(_Server(spec, spec.params, endpoint, connection, listed))
        await asyncio.gather(*(self._list(server) for server in servers if server.listed is None))
        taken = set(context.taken)
        by_tool: dict[tuple[str, str], str] = {}
        for server in servers:
            if server.new_item is not None:
                failed = "error" in server.new_item
                setup.leading.append(LeadingItem(server.new_item,
                                                 mcp_items.LIST_FAILED if failed else mcp_items.LIST_COMPLETED))
            policy = McpPolicy.of(server.params.allowed_tools, server.params.require_approval)
            for tool in server.listed or ():
                if not policy.allows(tool):
                    continue
                name = unique_name(server.endpoint.server_label, tool.name, taken)
                taken.add(name)
                by_tool[(server.endpoint.server_label, tool.name)] = name
                setup.tools[name] = McpTool(name, tool, server.connection, needs_approval=policy.needs_approval(tool),
                                            server_description=self._description(server.params))
        setup.first_calls = _approved_calls(context, by_tool)
        return setup

    async def _endpoint(self, spec: BuiltinSpec, params: McpParams) -> tuple[McpEndpoint, bool]:
        """The endpoint an entry means, and whether its session may be the app's shared one."""
        for name in ("connector_id", "tunnel_id"):
            if getattr(params, name) is not None:
                raise InvalidRequest(f"MCP '{name}' is not supported by this server; give a server_url (or the "
                                     "server_label of a server this Parley declares).",
                                     param=f"{spec.param}.{name}", code="unsupported_value")
        headers = dict(params.headers or {})
        if params.authorization is not None:
            headers["Authorization"] = f"Bearer {params.authorization}"
        config = self._config
        if params.server_url is not None:
            if not config.client_servers:
                raise InvalidRequest("This server does not connect to MCP servers named by URL; use the server_label "
                                     "of one it declares.", param=f"{spec.param}.server_url", code="unsupported_value")
            why = await refusal(params.server_url, self._policy, self._resolver)
            if why is not None:
                raise UrlFetchFailed(f"Refused to connect to the MCP server: {why} (loopback, private and link-local "
                                     "addresses are off unless the server allows them).", "url_refused",
                                     f"{spec.param}.server_url")
            return McpEndpoint(params.server_label, params.server_url, transport_for(params.server_url),
                               tuple(headers.items()), timeout_s=config.timeout_s, guard=self._guard,
                               max_output_chars=config.max_output_chars, ssl_context=await self._ssl(True)), False
        declared = self._declared.get(params.server_label)
        if declared is None:
            raise InvalidRequest(f"The mcp tool '{params.server_label}' needs a server_url: this server declares no "
                                 "MCP server with that label.", param=f"{spec.param}.server_url",
                                 code="missing_required_parameter")
        timeout = declared.timeout_s or config.timeout_s
        if declared.command is not None:
            return McpEndpoint(declared.label, command=tuple(declared.command), env=tuple(declared.env.items()),
                               cwd=str(declared.cwd) if declared.cwd else None, timeout_s=timeout,
                               max_output_chars=config.max_output_chars), True
        assert declared.url is not None
        transport = transport_for(declared.url) if declared.transport == "auto" else declared.transport
        merged = {**headers, **declared.resolved_headers()}  # the operator's headers win
        return McpEndpoint(declared.label, declared.url, transport, tuple(merged.items()), timeout_s=timeout,
                           max_output_chars=config.max_output_chars, ssl_context=await self._ssl(False)), not headers

    async def _ssl(self, guarded: bool) -> ssl.SSLContext:
        """TLS settings for URL servers, built once (in a thread: it reads and parses a CA bundle): certifi's for
        clients' servers, as the fetch guard; the system's trust store for the operator's (internal CAs)."""
        context = self._tls.get(guarded)
        if context is None:
            build = guard_ssl_context if guarded else functools.partial(httpx2.create_ssl_context, trust_env=False)
            context = self._tls[guarded] = await asyncio.to_thread(build)
        return context

    def _description(self, params: McpParams) -> str | None:
        declared = self._declared.get(params.server_label) if params.server_url is None else None
        return params.server_description or (declared.description if declared is not None else None)

    def _connection(self, endpoint: McpEndpoint, shared: bool, setup: McpSetup) -> McpConnection:
        if shared:
            connection = self._shared.get(endpoint.server_label)
            if connection is None:
                connection = self._shared[endpoint.server_label] = McpConnection(endpoint)
            return connection
        connection = McpConnection(endpoint)  # opened by the first call, closed with the response
        setup.closers.append(connection.aclose)
        return connection

    async def _list(self, server: _Server) -> None:
        """List the server now: on the shared session, or on one of its own (a request that lists may never
        run, e.g. POST /v1/responses/input_tokens, so it must not leave a session open)."""
        label = server.endpoint.server_label
        own = server.connection if server.connection is self._shared.get(label) else McpConnection(server.endpoint)
        try:
            tools = await own.list_tools()
        except McpFailure as failure:
            server.listed = []
            server.new_item = mcp_items.list_item(label, [], f"Listing the tools failed: {error_text(failure.error)}")
            return
        finally:
            if own is not server.connection:
                await own.aclose()
        server.listed = tools
        server.new_item = mcp_items.list_item(label, tools)


def _last_listing(items: Sequence[Item], server_label: str) -> list[ListedTool] | None:
    for item in reversed(items):
        if item["type"] == "mcp_list_tools" and item.get("server_label") == server_label and not item.get("error"):
            return [ListedTool.from_item_tool(entry) for entry in item.get("tools") or ()]
    return None


def _approved_calls(context: ToolContext, by_tool: dict[tuple[str, str], str]) -> list[BuiltinCall]:
    """The calls this request's input approves, each once, in the order of the approvals."""
    items = context.items
    requests = {item["id"]: item for item in items if item["type"] == "mcp_approval_request"}
    called = {item.get("approval_request_id") for item in items if item["type"] == "mcp_call"}
    calls: list[BuiltinCall] = []
    answered: set[str] = set()
    for index in range(context.first_new):  # answers earlier in the context
        if items[index]["type"] == "mcp_approval_response":
            answered.add(items[index]["approval_request_id"])
    for index in range(context.first_new, len(items)):
        item = items[index]
        if item["type"] != "mcp_approval_response":
            continue
        request_id = item["approval_request_id"]
        param = f"input[{max(index - context.first_new - context.first_input, 0)}].approval_request_id"
        request = requests.get(request_id)
        if request is None:
            raise InvalidRequest(f"No MCP approval request with id '{request_id}' found.", param=param)
        if request.get("server_label") in context.hosted_servers:
            continue  # the upstream hosts the server: the approval goes to it (providers/hosted_input.py)
        if request_id in answered or request_id in called:
            continue  # answered before (resent history): nothing to do again
        answered.add(request_id)
        if not item["approve"]:
            continue
        name = by_tool.get((request["server_label"], request["name"]))
        if name is None:
            raise InvalidRequest(f"The approved call of '{request['name']}' on MCP server "
                                 f"'{request['server_label']}' cannot run: this request's tools do not offer it.",
                                 param=param)
        calls.append(BuiltinCall(request_id, name, request["arguments"], approval_request_id=request_id))
    return calls
