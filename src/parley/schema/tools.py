"""`tools` and `tool_choice`: validation, and the ToolSet the engine and providers work from.

Client-executed tools (function, custom, namespace groups of both) are offered to the upstream as
functions. Custom tools become a function with one string argument `input`; namespaced tools are named
`<namespace>__<name>` upstream. The ToolSet maps upstream names back to what the client declared.

Tools declared with `defer_loading: true` (next to a `tool_search` tool) are not offered until a tool search
loads them: the server's search (tools/tool_search.py) within a response, or a `tool_search_output` item in the
context (the server's, or a client's answer to a client-executed search, whose tools join the ToolSet).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from parley.errors import InvalidRequest, ParleyError
from parley.schema.builtin_tools import BUILTIN_PARAMS, McpParams, ToolSearchParams
from parley.schema.client_tools import TOOL_KINDS, function_for
from parley.schema.containers import ShellContainerParams
from parley.schema.items import validation_to_invalid_request
from parley.schema.requests import KNOWN_TOOL_TYPES, CreateResponseRequest, FunctionTool

ToolName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
CUSTOM_INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"input": {"type": "string", "description": "The raw input for the tool."}},
    "required": ["input"],
    "additionalProperties": False,
}


class CustomTool(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["custom"]
    name: ToolName
    description: str | None = None
    format: dict[str, Any] | None = None


class NamespaceTool(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["namespace"]
    name: ToolName
    description: str | None = None
    tools: list[dict[str, Any]] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class ClientTool:
    """A tool the client executes, as declared, plus the name the upstream sees."""

    kind: Literal["function", "custom", "computer", "local_shell", "shell", "apply_patch", "tool_search"]
    name: str
    upstream_name: str
    namespace: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    preview: bool = False  # computer_use_preview (one `action` per call) rather than computer (`actions`)
    deferred: bool = False  # defer_loading: offered only once a tool search loaded it
    declared: dict[str, Any] | None = field(default=None, compare=False, hash=False)  # as the client sent it
    namespace_description: str | None = None
    path: str | None = field(default=None, compare=False, hash=False)  # where it was declared: `tools[2]`

    def upstream_function(self) -> dict[str, Any]:
        if self.kind != "function" and self.kind != "custom":
            return {**function_for(self.kind, self.parameters or {}), "name": self.upstream_name}
        description = self.description
        if self.kind == "custom":
            parameters: dict[str, Any] | None = CUSTOM_INPUT_SCHEMA
        else:
            parameters = self.parameters
        return {"name": self.upstream_name, "description": description, "parameters": parameters,
                "strict": self.strict}


@dataclass(frozen=True, slots=True)
class McpChoice:
    """A `tool_choice` naming an MCP server's tools (`server_label`, and a tool `name` or any of its tools), known
    only once the server's tools are listed: ToolChoicePlan.with_mcp_tools resolves it."""

    server_label: str
    name: str | None
    param: str  # where the request gave it: "tool_choice" or "tool_choice.tools[i]"


@dataclass(frozen=True, slots=True)
class ToolChoicePlan:
    """What the model may and must do: `mode`, an optional forced tool, an optional allowed subset, an optional
    set one of which must be called (`among`: an MCP server's tools); `mcp`: references not resolved yet."""

    mode: Literal["none", "auto", "required"] = "auto"
    forced: str | None = None
    allowed: frozenset[str] | None = None
    among: frozenset[str] | None = None
    mcp: tuple[McpChoice, ...] = ()

    def violation(self, called: list[str]) -> str | None:
        """Why a finished turn breaks the plan (None when it complies)."""
        if self.forced is not None and called and any(name != self.forced for name in called):
            return f"the model called a tool other than '{self.forced}' required by tool_choice"
        if self.among is not None and called and any(name not in self.among for name in called):
            return "the model called a tool other than the MCP server's tools required by tool_choice"
        if (self.mode == "required" or self.forced is not None) and not called:
            return "the model did not call a tool although tool_choice required one"
        if self.allowed is not None and any(name not in self.allowed for name in called):
            return "the model called a tool outside tool_choice.allowed_tools"
        return None

    def with_mcp_tools(self, offered: dict[tuple[str, str], str], failed: dict[str, str] | None = None,
                       hosted: dict[str, str] | None = None) -> ToolChoicePlan:
        """The plan with its MCP references resolved, `offered` being the functions offered for the servers' tools
        by (server label, tool name), `failed` the servers whose listing failed (label -> why), `hosted` the
        servers the upstream hosts (label -> the tool's upstream name, what a turn's hosted calls are counted
        as: the upstream lists and enforces them). A named tool the server does not offer is a 400.
        A choice no tool can meet (forced, or `required` allowed_tools with nothing else allowed) is refused before
        any model turn: a 424 when the server's listing failed (OpenAI's status for it), else a 400 (the server
        lists no tool within its allowed_tools)."""
        if not self.mcp:
            return self
        resolved: set[str] = set()
        for ref in self.mcp:
            found = {function for (label, tool), function in offered.items()
                     if label == ref.server_label and ref.name in (None, tool)}
            if ref.name is not None and not found and any(label == ref.server_label for label, _ in offered):
                raise InvalidRequest(f"Tool '{ref.name}' not found among the tools MCP server '{ref.server_label}' "
                                     "offers (its listed tools, within its allowed_tools).", param=f"{ref.param}.name")
            resolved |= found
            if hosted and ref.server_label in hosted:
                resolved.add(hosted[ref.server_label])
        if not resolved and (self.allowed is None or (self.mode == "required" and not self.allowed)):
            raise _unmet(self.mcp[0], (failed or {}).get(self.mcp[0].server_label))
        if self.allowed is not None:  # allowed_tools entries
            return replace(self, mcp=(), allowed=self.allowed | resolved)
        if len(resolved) == 1:
            return replace(self, mcp=(), forced=next(iter(resolved)))
        return replace(self, mcp=(), among=frozenset(resolved))


def _unmet(ref: McpChoice, failure: str | None) -> ParleyError:
    """The error for a tool_choice of an MCP server that offers no tool to call."""
    param = f"{ref.param}.server_label"
    if failure is not None:
        return ParleyError(f"Error retrieving tool list from MCP server '{ref.server_label}' ({failure}): the "
                           "tool_choice naming it cannot be met.", param, "mcp_list_tools_failed", 424,
                           "invalid_request_error")
    return InvalidRequest(f"MCP server '{ref.server_label}' offers no tool within its allowed_tools: the "
                          "tool_choice naming it cannot be met.", param=param)


@dataclass(frozen=True, slots=True)
class BuiltinSpec:
    """A built-in (server-run) tool as declared in `tools[index]`, its parameters validated."""

    type: str  # the tool type as sent (file_search, ...)
    kind: str  # the tool it is (aliases such as web_search_preview share one)
    index: int
    params: BaseModel
    upstream_name: str  # the function name the model calls it by
    catalog: tuple[ClientTool, ...] = ()  # tool_search (server): the deferred tools it searches

    @property
    def param(self) -> str:
        return f"tools[{self.index}]"


@dataclass(frozen=True, slots=True)
class ToolSet:
    tools: tuple[ClientTool, ...] = ()
    plan: ToolChoicePlan = field(default_factory=ToolChoicePlan)
    builtins: tuple[BuiltinSpec, ...] = ()
    loaded: frozenset[str] = frozenset()  # deferred tools a tool search in the context loaded (upstream names)
    hosted_search: bool = False  # the upstream hosts tool_search: deferred tools go to it, `defer_loading` (below)

    def by_upstream_name(self) -> dict[str, ClientTool]:
        return {t.upstream_name: t for t in self.tools}

    def offered(self, builtin_functions: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """The functions sent upstream (client tools, then the built-in tools' functions): none for
        tool_choice 'none', the allowed subset if restricted."""
        if self.plan.mode == "none":
            return []
        allowed = self.plan.allowed
        if self.hosted_search:  # namespace members keep their namespace: the upstream's search loads namespaces
            functions = [{**t.upstream_function(), **({"defer_loading": True} if t.deferred else {}),
                          **({"namespace": {"name": t.namespace, "description": t.namespace_description or "",
                                            "member": t.name}} if t.namespace and t.namespace != t.name else {})}
                         for t in self.tools]
        else:
            functions = [t.upstream_function() for t in self.tools if not t.deferred or t.upstream_name in self.loaded]
        functions += builtin_functions or ()
        return [f for f in functions if allowed is None or f["name"] in allowed]

    def deferred(self) -> tuple[ClientTool, ...]:
        return tuple(t for t in self.tools if t.deferred)

    def with_searched(self, items: Sequence[dict[str, Any]]) -> ToolSet:
        """The ToolSet with what the context's tool searches loaded: declared deferred tools become offered, and
        tools a client's search returned that the request does not declare join it."""
        outputs = [item for item in items if item.get("type") == "tool_search_output"]
        if not outputs:
            return self
        known = self.by_upstream_name()
        added: list[ClientTool] = []
        loaded = set(self.loaded)
        for item in outputs:
            for raw in item.get("tools") or ():
                for tool in _searched_tools(raw):
                    loaded.add(tool.upstream_name)
                    if tool.upstream_name not in known:
                        known[tool.upstream_name] = tool
                        added.append(tool)
        return replace(self, tools=self.tools + tuple(added), loaded=frozenset(loaded))

    def upstream_choice(self) -> str | dict[str, Any] | None:
        if (not self.tools and not self.builtins) or self.plan.mode == "none":
            return None
        if self.plan.forced is not None:
            return {"type": "function", "name": self.plan.forced}
        return self.plan.mode


def _check_callers(raw: dict[str, Any], path: str) -> None:
    """`allowed_callers` without "direct" asks for programmatic calling only, which Parley does not have."""
    callers = raw.get("allowed_callers")
    if isinstance(callers, list) and "direct" not in callers:
        raise InvalidRequest("allowed_callers without 'direct' (programmatic tool calling only) is not supported by "
                             "this server yet.", param=f"{path}.allowed_callers", code="unsupported_value")


def _searched_tools(raw: Any) -> list[ClientTool]:
    """The tools of one `tool_search_output.tools` entry (a function, custom tool or namespace)."""
    if not isinstance(raw, dict):
        raise InvalidRequest("A tool_search_output tool must be an object.", param="input")
    if raw.get("type") == "namespace":
        try:
            group = NamespaceTool.model_validate(raw)
        except ValidationError as err:
            raise validation_to_invalid_request(err, "input", raw) from None
        return [_client_tool(member, "input", group.name, group.description) for member in group.tools]
    return [_client_tool(raw, "input", None)]


def _client_tool(raw: dict[str, Any], path: str, namespace: str | None,
                 namespace_description: str | None = None) -> ClientTool:
    kind = raw.get("type")
    if namespace is not None:
        _check_callers(raw, path)
    try:
        if kind == "function":
            fn = FunctionTool.model_validate(raw)
            upstream = _upstream_name(fn.name, namespace)
            tool = ClientTool("function", fn.name, upstream, namespace, fn.description, fn.parameters, fn.strict,
                              deferred=raw.get("defer_loading") is True, declared=raw,
                              namespace_description=namespace_description, path=path)
        elif kind == "custom":
            custom = CustomTool.model_validate(raw)
            upstream = _upstream_name(custom.name, namespace)
            tool = ClientTool("custom", custom.name, upstream, namespace, _custom_description(custom),
                              deferred=raw.get("defer_loading") is True, declared=raw,
                              namespace_description=namespace_description)
        else:
            raise InvalidRequest(f"Tool type '{kind}' is not allowed here.", param=f"{path}.type")
    except ValidationError as err:
        raise validation_to_invalid_request(err, path, raw) from None
    if len(tool.upstream_name) > 64:
        raise InvalidRequest("Namespace and tool name together must be at most 62 characters.",
                             param=f"{path}.name")
    return tool


def _upstream_name(name: str, namespace: str | None) -> str:
    """`<namespace>__<name>`; a member named as its namespace is sent bare, as a call naming `namespace == name`
    (a deferred top-level function's shape) maps back (providers/chat_request.py upstream_tool_name)."""
    return f"{namespace}__{name}" if namespace and namespace != name else name


def _custom_description(tool: CustomTool) -> str:
    parts = [tool.description or f"The {tool.name} tool."]
    fmt = tool.format or {}
    if fmt.get("type") == "grammar":
        parts.append(f"The input must match this {fmt.get('syntax', 'lark')} grammar:\n{fmt.get('definition', '')}")
    parts.append("Put the tool's raw input in the `input` string.")
    return "\n\n".join(parts)


_NO_TOOLS = ToolSet()


def build_toolset(req: CreateResponseRequest) -> ToolSet:
    if not req.tools and req.tool_choice is None:
        return _NO_TOOLS  # the common case, kept off the hot path
    tools: list[ClientTool] = []
    builtins: list[BuiltinSpec] = []
    for index, raw in enumerate(req.tools or ()):
        kind = raw.get("type")
        path = f"tools[{index}]"
        if not isinstance(kind, str) or kind not in KNOWN_TOOL_TYPES:
            raise InvalidRequest(f"Invalid tool type '{kind}'.", param=f"{path}.type")
        _check_callers(raw, path)
        if kind == "tool_search":
            search = _tool_search(raw, index)
            if isinstance(search, ClientTool):
                tools.append(search)
            else:
                builtins.append(search)
        elif kind in BUILTIN_PARAMS:
            if kind == "mcp" and raw.get("defer_loading") is True:  # tool search over MCP servers: not yet
                raise InvalidRequest("defer_loading on an mcp tool is not supported by this server yet; defer "
                                     "function or namespace tools instead.", param=f"{path}.defer_loading",
                                     code="unsupported_value")
            builtins.append(_builtin(raw, kind, index))
        elif kind in ("function", "custom"):
            tools.append(_client_tool(raw, path, None))
        elif kind == "shell" and _container_environment(raw):
            builtins.append(_shell_in_container(raw, index))
        elif kind in TOOL_KINDS:
            tools.append(_own_item_tool(raw, kind, path))
        elif kind == "namespace":
            try:
                group = NamespaceTool.model_validate(raw)
            except ValidationError as err:
                raise validation_to_invalid_request(err, path, raw) from None
            for inner, member in enumerate(group.tools):
                tools.append(_client_tool(member, f"{path}.tools[{inner}]", group.name, group.description))
        else:
            raise InvalidRequest(
                f"Tool type '{kind}' is not supported by this server yet.", param=f"{path}.type",
                code="unsupported_tool",
            )
    builtins = _with_catalog(builtins, tools, req.tools or ())
    seen: set[str] = set()
    for name in [t.upstream_name for t in tools] + [b.upstream_name for b in builtins]:
        if name in seen:
            raise InvalidRequest(f"Duplicate tool name '{name}'.", param="tools")
        seen.add(name)
    return ToolSet(tuple(tools), _plan(req, tools, builtins), tuple(builtins))


def _container_environment(raw: dict[str, Any]) -> bool:
    environment = raw.get("environment")
    return isinstance(environment, dict) and environment.get("type") in ("container_auto", "container_reference")


def _shell_in_container(raw: dict[str, Any], index: int) -> BuiltinSpec:
    """`shell` whose commands run on the server, in a container (tools/shell_container.py)."""
    try:
        params = ShellContainerParams.model_validate(raw)
    except ValidationError as err:
        raise validation_to_invalid_request(err, f"tools[{index}]", raw) from None
    return BuiltinSpec("shell", "shell", index, params, "shell")


def _tool_search(raw: dict[str, Any], index: int) -> ClientTool | BuiltinSpec:
    """`tool_search`: run by the server (a built-in tool, tools/tool_search.py) or by the client (a tool with its
    own call item, like a function)."""
    try:
        params = ToolSearchParams.model_validate(raw)
    except ValidationError as err:
        raise validation_to_invalid_request(err, f"tools[{index}]", raw) from None
    if params.execution == "client":
        settings = {"description": params.description, "parameters": params.parameters}
        return ClientTool("tool_search", "tool_search", "tool_search", parameters=settings)
    return BuiltinSpec("tool_search", "tool_search", index, params, "tool_search")


def _with_catalog(builtins: list[BuiltinSpec], tools: list[ClientTool],
                  raw_tools: Sequence[dict[str, Any]]) -> list[BuiltinSpec]:
    """The server's tool search gets the deferred tools it searches; deferring without any tool search is a 400."""
    deferred = tuple(tool for tool in tools if tool.deferred)
    searches = any(spec.kind == "tool_search" for spec in builtins) or any(t.kind == "tool_search" for t in tools)
    if deferred and not searches:
        for index, raw in enumerate(raw_tools):
            members = raw.get("tools") if raw.get("type") == "namespace" else None
            inner = next((i for i, m in enumerate(members or ()) if isinstance(m, dict) and m.get("defer_loading")),
                         None)
            if raw.get("defer_loading") is True or inner is not None:
                param = f"tools[{index}].defer_loading" if inner is None else f"tools[{index}].tools[{inner}]" \
                        ".defer_loading"
                raise InvalidRequest("defer_loading needs a tool_search tool in 'tools' to load the tool.",
                                     param=param)
    return [replace(spec, catalog=deferred) if spec.kind == "tool_search" else spec for spec in builtins]


class _ComputerPreview(BaseModel):
    model_config = ConfigDict(extra="allow")
    display_width: int = Field(ge=1, le=100_000)
    display_height: int = Field(ge=1, le=100_000)
    environment: Literal["windows", "mac", "linux", "ubuntu", "browser"]


def _own_item_tool(raw: dict[str, Any], tool_type: str, path: str) -> ClientTool:
    """computer, computer_use_preview, local_shell, shell (local) and apply_patch: executed by the client, with
    their own item types (schema/client_tools.py)."""
    kind = TOOL_KINDS[tool_type]
    params: dict[str, Any] = {}
    if tool_type == "computer_use_preview":
        try:
            params = _ComputerPreview.model_validate(raw).model_dump()
        except ValidationError as err:
            raise validation_to_invalid_request(err, path, raw) from None
    if kind == "shell":
        environment = raw.get("environment")
        env_type = environment.get("type") if isinstance(environment, dict) else None
        if environment is not None and env_type != "local":
            raise InvalidRequest(f"Invalid shell environment type '{env_type}': expected local, container_auto or "
                                 "container_reference.", param=f"{path}.environment.type")
    return ClientTool(kind, kind, kind, parameters=params, preview=tool_type == "computer_use_preview")


def _builtin(raw: dict[str, Any], kind: str, index: int) -> BuiltinSpec:
    tool_kind, name, model = BUILTIN_PARAMS[kind]
    try:
        params = model.model_validate(raw)
    except ValidationError as err:
        raise validation_to_invalid_request(err, f"tools[{index}]", raw) from None
    if isinstance(params, McpParams):  # one entry per server (a label used twice is a duplicate name)
        name = f"mcp:{params.server_label}"
    return BuiltinSpec(kind, tool_kind, index, params, name)


def _resolve(tools: list[ClientTool], kind: str, name: str, namespace: str | None, param: str) -> str:
    for tool in tools:
        if tool.kind == kind and tool.name == name and (namespace is None or tool.namespace == namespace):
            return tool.upstream_name
    raise InvalidRequest(f"Tool choice '{name}' not found in 'tools' parameter.", param=param)


def _builtin_named(builtins: list[BuiltinSpec], kind: str, param: str) -> str:
    tool = BUILTIN_PARAMS[kind][0] if kind in BUILTIN_PARAMS else kind  # any alias names the tool it is
    for spec in builtins:
        if spec.type == kind or spec.kind == tool:
            return spec.upstream_name
    raise InvalidRequest(f"Tool choice '{kind}' not found in 'tools' parameter.", param=param)


def _own_item_named(tools: list[ClientTool], tool_type: str, param: str,
                    builtins: Sequence[BuiltinSpec] = ()) -> str:
    for tool in tools:
        if tool.kind == TOOL_KINDS[tool_type]:
            return tool.upstream_name
    for spec in builtins:  # shell in a container runs on the server
        if spec.kind == TOOL_KINDS[tool_type]:
            return spec.upstream_name
    raise InvalidRequest(f"Tool choice '{tool_type}' not found in 'tools' parameter.", param=param)


def _mcp_choice(builtins: list[BuiltinSpec], data: dict[str, Any], param: str) -> McpChoice:
    """`{"type": "mcp", "server_label", "name"?}`, naming an `mcp` entry of `tools`."""
    label, name = data.get("server_label"), data.get("name")
    if not isinstance(label, str):
        raise InvalidRequest("An mcp tool choice needs a 'server_label' (a string).", param=f"{param}.server_label",
                             code="missing_required_parameter" if label is None else "invalid_type")
    if name is not None and not isinstance(name, str):
        raise InvalidRequest("'name' must be a string.", param=f"{param}.name", code="invalid_type")
    if not any(isinstance(spec.params, McpParams) and spec.params.server_label == label for spec in builtins):
        raise InvalidRequest(f"Tool choice MCP server '{label}' not found in 'tools' parameter.",
                             param=f"{param}.server_label")
    return McpChoice(label, name, param)


def _plan(req: CreateResponseRequest, tools: list[ClientTool], builtins: list[BuiltinSpec]) -> ToolChoicePlan:
    choice = req.tool_choice
    if choice is None:
        return ToolChoicePlan()
    if isinstance(choice, str):
        if choice == "required" and not tools and not builtins:
            raise InvalidRequest("tool_choice 'required' needs at least one tool.", param="tool_choice")
        return ToolChoicePlan(mode=choice)
    data = choice.model_dump(exclude_none=True)
    kind = data["type"]
    if kind in ("function", "custom"):
        name = data.get("name")
        if not name:
            raise InvalidRequest("tool_choice needs a 'name'.", param="tool_choice.name")
        return ToolChoicePlan(mode="required",
                              forced=_resolve(tools, kind, name, data.get("namespace"), "tool_choice.name"))
    if kind == "allowed_tools":
        allowed: set[str] = set()
        mcp: list[McpChoice] = []
        for index, ref in enumerate(data["tools"]):
            ref_kind = ref.get("type")
            if ref_kind == "mcp":
                mcp.append(_mcp_choice(builtins, ref, f"tool_choice.tools[{index}]"))
                continue
            if isinstance(ref_kind, str) and ref_kind in BUILTIN_PARAMS:
                allowed.add(_builtin_named(builtins, ref_kind, f"tool_choice.tools[{index}].type"))
                continue
            if isinstance(ref_kind, str) and ref_kind in TOOL_KINDS:
                allowed.add(_own_item_named(tools, ref_kind, f"tool_choice.tools[{index}].type", builtins))
                continue
            if ref_kind not in ("function", "custom"):
                raise InvalidRequest(f"allowed_tools entry of type '{ref_kind}' is not supported by this server yet.",
                                     param=f"tool_choice.tools[{index}].type", code="unsupported_value")
            allowed.add(_resolve(tools, ref_kind, str(ref.get("name")), ref.get("namespace"),
                                 f"tool_choice.tools[{index}].name"))
        return ToolChoicePlan(mode=data["mode"], allowed=frozenset(allowed), mcp=tuple(mcp))
    if kind == "mcp":  # its functions are known only once the server's tools are listed
        return ToolChoicePlan(mode="required", mcp=(_mcp_choice(builtins, data, "tool_choice"),))
    if kind in BUILTIN_PARAMS:  # a hosted tool's choice, e.g. {"type": "file_search"}: forces the first turn
        return ToolChoicePlan(mode="required", forced=_builtin_named(builtins, kind, "tool_choice.type"))
    if kind in TOOL_KINDS:  # {"type": "computer"}, {"type": "shell"}, {"type": "apply_patch"}, ...
        return ToolChoicePlan(mode="required", forced=_own_item_named(tools, kind, "tool_choice.type", builtins))
    raise InvalidRequest(f"tool_choice of type '{kind}' is not supported by this server yet.",
                         param="tool_choice.type", code="unsupported_value")
