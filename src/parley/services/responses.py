"""The responses use case: validate a create request, build the model context, run it, store the result."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import anyio
from pydantic import BaseModel

from parley.engine.budget import ToolCallBudget
from parley.engine.checks import TurnCheck, json_format_check, tool_choice_check
from parley.engine.empty_turn import EmptyTurn
from parley.engine.run import TERMINAL_EVENTS, ResponseRun
from parley.engine.sealing import ReasoningSealer
from parley.engine.stream import Event, StreamBuilder
from parley.engine.timing import Timing
from parley.engine.tool_loop import Toolbox
from parley.engine.truncation import fit_context
from parley.engine.turns import Turns
from parley.errors import Conflict, InvalidRequest, NotFound, UnsupportedSchema
from parley.ids import new_id
from parley.providers.base import HostedTool, ModelCall
from parley.providers.hosted_input import hosted_items, hosted_servers
from parley.providers.registry import ModelEntry, ModelRegistry
from parley.schema.compaction import CompactRequest
from parley.schema.items import Item, normalize_input
from parley.schema.present import present_response, presenter
from parley.schema.requests import CreateResponseRequest
from parley.schema.response import new_response
from parley.schema.tools import ToolSet, build_toolset
from parley.services.builtin_tools import BuiltinTools, ToolLimits
from parley.services.compaction import Compactor, check_compaction_trigger, compact_threshold
from parley.services.conversations import ConversationsService
from parley.services.file_inputs import FileInputLimits, FileInputs
from parley.services.hosted_tools import hosted_mcp_choice, split_hosted
from parley.services.keys import Caller
from parley.services.live_responses import LiveResponses
from parley.services.prompts import PromptsService
from parley.services.usage import Meter, UsageOrigin
from parley.store.base import ConversationTurn, Page, PageQuery, ResponseStore
from parley.telemetry.observe import Telemetry
from parley.tools.base import LeadingItem, ToolContext
from parley.tools.mcp.tool import McpTool
from parley.tools.replay import REPLAYED_TYPES, replay_items

log = logging.getLogger("parley.responses")


@dataclass(slots=True)
class PreparedResponse:
    """A validated request whose upstream call is open: ready to be streamed or folded."""

    project_id: str
    store: bool
    input_items: list[Item]
    run: ResponseRun
    conversation_id: str | None = None
    conversation_input: list[Item] = field(default_factory=list)  # input_items, references resolved
    origin: UsageOrigin | None = None  # for its usage record; None: none is recorded
    timing: Timing | None = None

    @property
    def response(self) -> dict[str, Any]:
        return self.run.builder.response


@dataclass(slots=True)
class BuiltCall:
    """A validated request turned into its model call, with nothing opened yet (create and input_tokens)."""

    req: CreateResponseRequest  # as applied (a prompt template may have filled fields in)
    entry: ModelEntry
    toolset: ToolSet
    new_items: list[Item]
    store: bool
    response: dict[str, Any]
    call: ModelCall
    checks: list[TurnCheck]  # on the final turn (text.format)
    conversation_input: list[Item] = field(default_factory=list)
    first_turn_checks: list[TurnCheck] = field(default_factory=list)  # tool_choice
    toolbox: Toolbox = field(default_factory=Toolbox)  # the built-in tools, ready to run


class ContextSource(Protocol):
    """Where a `previous_response_id` chain is loaded from: the store, or first a WebSocket connection's memory
    of its recent responses (api/ws_memory.py). None: no such response."""

    async def load_context(self, project_id: str, response_id: str) -> list[Item] | None: ...


class ResponsesService:
    def __init__(
        self, store: ResponseStore, models: ModelRegistry, sealer: ReasoningSealer, *, prompts: PromptsService,
        conversations: ConversationsService, compactor: Compactor, obfuscation_default: bool,
        tools: BuiltinTools | None = None, file_inputs: FileInputs | None = None, meter: Meter | None = None,
        telemetry: Telemetry | None = None, live: LiveResponses | None = None,
    ) -> None:
        # Stored foreground responses running here, which a GET finds before their one write (live_responses.py).
        self.live = live or LiveResponses()
        self._meter = meter
        self._telemetry = telemetry or Telemetry()  # default: no metrics, no tracing
        self._tools = tools or BuiltinTools(None, ToolLimits())
        self._file_inputs = file_inputs or FileInputs(None, None, FileInputLimits())
        self._conversations = conversations
        self._compactor = compactor
        self._store = store
        self._models = models
        self._sealer = sealer
        self._prompts = prompts
        self._obfuscation_default = obfuscation_default

    # -- create ----------------------------------------------------------------------------------

    async def prepare(self, project_id: str, req: CreateResponseRequest, caller: Caller | None = None,
                      origin: UsageOrigin | None = None, source: ContextSource | None = None) -> PreparedResponse:
        """Validate everything, apply `truncation` and open the upstream call; every failure here is an HTTP error.
        `caller` (default: the project without a key) limits the models; `origin` is what its usage record says
        (default: the caller, charged to no limit)."""
        timing = Timing()
        caller = caller or Caller(project_id)
        built = await self.build_call(project_id, req, caller, source)
        run = await self.open_run(project_id, built, emit=bool(req.stream), timing=timing)
        return PreparedResponse(project_id, built.store, built.new_items, run, built.req.conversation_id,
                                built.conversation_input, origin or UsageOrigin(caller, ()), timing)

    async def prepare_state(self, project_id: str, req: CreateResponseRequest, caller: Caller | None = None,
                            source: ContextSource | None = None) -> PreparedResponse:
        """`generate: false` (WebSocket mode; Codex's warm-up): validate the request and build its context as create
        does, but call no model. The response completes at once with no output, through the same stream builder
        and storage, so later turns chain from its id; it records no usage."""
        built = await self.build_call(project_id, req, caller or Caller(project_id), source)
        builder = StreamBuilder(built.response, emit=True, obfuscate=False)
        run = ResponseRun(builder, EmptyTurn(), toolbox=built.toolbox)
        return PreparedResponse(project_id, built.store, built.new_items, run, built.req.conversation_id,
                                built.conversation_input)

    async def steering_input(self, project_id: str, raw: str | list[dict[str, Any]]) -> tuple[list[Item], list[Item]]:
        """Input steered into a running response (WebSocket `response.steer`): user messages only, normalised as
        `input` is; returned as stored and as the model gets them (files resolved)."""
        items = normalize_input(raw)
        for index, item in enumerate(items):
            if item["type"] != "message" or item.get("role") != "user":
                raise InvalidRequest("Steering input may only contain user messages.", param=f"input[{index}]")
        return items, await self._file_inputs.resolve(project_id, items)

    async def open_run(self, project_id: str, built: BuiltCall, *, emit: bool,
                       timing: Timing | None = None) -> ResponseRun:
        """Compact and truncate the context as asked, open the upstream call and set up the run (`timing`
        notes when its turns and built-in calls happen, engine/timing.py)."""
        req, entry, toolset, response = built.req, built.entry, built.toolset, built.response
        call, toolbox = built.call, built.toolbox
        leading: list[Item | LeadingItem] = [*toolbox.leading]  # MCP tool lists
        threshold = compact_threshold(req.context_management, entry)
        if threshold is not None:  # context_management: compact first, before truncation looks at it
            call, compacted = await self._compactor.auto_compact(project_id, entry, call, threshold)
            leading += compacted
        truncation = req.truncation or "disabled"
        measures = self._file_inputs.measures  # the file scan just measured the same items
        fitted = await fit_context(call, entry.provider.count_tokens, truncation, entry.context_window, measures)
        toolbox.observer = self._telemetry.tools  # built-in calls counted, timed and traced
        with self._telemetry.response_opening(response, fitted.call):  # the response's trace span starts here
            # Calls the client approved (MCP) run first; the first model turn is opened after them (engine/run.py).
            try:
                stream = None if toolbox.first_calls else await entry.provider.open(fitted.call)
            except UnsupportedSchema as err:
                _name_function(err, toolset)
                raise
        if timing is not None and stream is not None:
            timing.mark("upstream_opened", {"turn": 1})
        obfuscate = self._obfuscation_default
        if req.stream_options is not None and req.stream_options.include_obfuscation is not None:
            obfuscate = req.stream_options.include_obfuscation
        builtin_names = frozenset(toolbox.tools)
        builder = StreamBuilder(
            response, emit=emit, obfuscate=obfuscate, tools=toolset.by_upstream_name(),
            parallel_tool_calls=req.parallel_tool_calls is not False,
            seal=self._sealer_for(project_id) if "reasoning.encrypted_content" in (req.include or ()) else None,
            builtin_names=builtin_names,
            present=presenter(req.include) if toolbox or call.hosted_tools else None,
        )
        turns = None
        if toolbox:
            async def fit(next_call: ModelCall) -> ModelCall:
                return (await fit_context(next_call, entry.provider.count_tokens, truncation,
                                          entry.context_window, measures)).call

            turns = Turns(entry.provider, fitted.call, builtin_names, fit)
        return ResponseRun(builder, stream, built.checks, leading, ToolCallBudget(req.max_tool_calls),
                           first_turn_checks=built.first_turn_checks, toolbox=toolbox, turns=turns,
                           first_calls=toolbox.first_calls, timing=timing, call=fitted.call)

    async def check_call(self, built: BuiltCall) -> None:
        """Ask the model what only it can refuse of the call, without generating (`ModelEntry.check`: the embedded
        model's grammar): a background create gets the 400 its foreground create gets from opening the call,
        before anything is queued. Nothing to ask for other models."""
        if built.entry.check is None:
            return
        try:
            await built.entry.check(built.call)
        except UnsupportedSchema as err:
            _name_function(err, built.toolset)
            raise

    def conversation_turn(self, conversation_id: str | None, response: dict[str, Any],
                          items: list[Item]) -> ConversationTurn | None:
        """What a finished turn appends to its conversation (completed/incomplete only; see ARCHITECTURE.md)."""
        return None if conversation_id is None else self._conversations.turn(conversation_id, response, items)

    async def input_tokens(self, project_id: str, req: CreateResponseRequest,
                           caller: Caller | None = None) -> dict[str, Any]:
        """POST /v1/responses/input_tokens: the input tokens of the context create would send, without
        generating. With truncation=auto it is the context after truncation (a 400 if nothing fits); with
        `disabled` an oversized input is counted, not refused (the count is what the caller asks for)."""
        built = await self.build_call(project_id, req, caller)
        entry, call, count = built.entry, built.call, None
        if built.req.truncation == "auto":
            fitted = await fit_context(call, entry.provider.count_tokens, "auto", entry.context_window)
            call, count = fitted.call, fitted.count
        if count is None:
            count = await entry.provider.count_tokens(call)
        return {"object": "response.input_tokens", "input_tokens": count.tokens}

    async def compact(self, project_id: str, body: CompactRequest, caller: Caller | None = None) -> dict[str, Any]:
        """POST /v1/responses/compact: the context create would build from `input` and
        `previous_response_id`, compacted into its user messages and one compaction item."""
        req = CreateResponseRequest(model=body.model, input=body.input, instructions=body.instructions,
                                    previous_response_id=body.previous_response_id)
        built = await self.build_call(project_id, req, caller)
        return await self._compactor.compacted_response(project_id, built.entry, built.call.items)

    async def build_call(self, project_id: str, req: CreateResponseRequest, caller: Caller | None = None,
                         source: ContextSource | None = None) -> BuiltCall:
        """Validate the request and build the model call from its input and the stored context it names
        (a `previous_response_id` chain from `source`, by default the store)."""
        prompt_items: list[Item] = []
        if req.prompt is not None:  # first: the template may supply the model and instructions
            req, prompt_items = await self._prompts.apply(project_id, req)
        if caller is not None and req.model:
            caller.check_model(req.model)
        entry = self._models.get(req.model)
        for name in ("moderation",):
            if getattr(req, name) is not None:
                raise InvalidRequest(f"'{name}' is not supported by this server yet.", param=name,
                                     code="unsupported_value")
        check_compaction_trigger(req.input, "input")
        input_items = self._open_sealed(project_id, normalize_input(req.input))
        self._compactor.check_input(project_id, input_items, "input")
        new_items = prompt_items + input_items
        toolset = build_toolset(req)
        _check_include(req, toolset)
        upstream_choice = toolset.upstream_choice()
        # Built-in tools the model's upstream runs itself (its config's `hosted_tools`) leave the toolbox.
        toolset, hosted = split_hosted(toolset, req.tools or [], entry.hosted_tools)
        context: list[Item] = []
        if req.conversation_id is not None:
            context = await self._conversations.history(project_id, req.conversation_id)
        if req.previous_response_id is not None:
            loaded = await (source or self._store).load_context(project_id, req.previous_response_id)
            if loaded is None:
                raise NotFound(
                    f"Previous response with id '{req.previous_response_id}' not found.",
                    param="previous_response_id",
                )
            context = loaded
        model_items = context + new_items
        # Whether a later model call may start with these item objects (ModelCall.continuable): a chain's next turn
        # (the chain cache), a conversation's (the conversation cache), the next request on a WebSocket (its
        # memory), the next turn of a built-in tool loop.
        continuable = (req.previous_response_id is not None or source is not None or bool(toolset.builtins)
                       or (req.conversation_id is not None and self._conversations.kept))
        # The item types the context holds, measured on its new items only along a chain (engine/context_measure.py):
        # a step below with nothing to do is skipped instead of walking the whole context.
        kinds = self._file_inputs.measures.of(model_items, continuable).kinds
        if "item_reference" in kinds:
            model_items = await self._resolve_references(project_id, model_items)
            kinds = self._file_inputs.measures.of(model_items, continuable).kinds
        if kinds & _OUTPUTS:
            _check_call_outputs(model_items, len(context))
        conversation_input = model_items[len(context):]
        if "tool_search_output" in kinds:
            toolset = toolset.with_searched(model_items)  # tools earlier tool searches loaded are offered again
        toolbox = Toolbox()
        if toolset.builtins or any(item["type"] == "mcp_approval_response" for item in input_items):
            # After the context is loaded: code_interpreter's `auto` reuses an earlier container, MCP its tool
            # lists; and the calls the input approves (MCP) are found.
            tool_context = ToolContext(model_items, len(context), len(prompt_items),
                                       frozenset(tool.upstream_name for tool in toolset.tools),
                                       hosted_servers(hosted))
            toolbox = await self._tools.toolbox(project_id, toolset.builtins, tool_context)
        if toolset.plan.mcp:  # a tool_choice naming an MCP server: its functions are known now
            toolset, upstream_choice = _mcp_choice(toolset, toolbox, hosted, req)
        # Built-in tool items of earlier turns go upstream as the function calls they were (tools/replay.py).
        if kinds & _REWRITTEN:
            model_items = replay_items(self._compactor.expand(project_id, model_items), keep=hosted_items(hosted))
        # Files in messages: their bytes and extracted text, for whichever form the upstream takes.
        model_items = await self._file_inputs.resolve(project_id, model_items, len(context), continuable)
        if not model_items:
            raise InvalidRequest("Missing required parameter: 'input'.", param="input",
                                 code="missing_required_parameter")
        store = req.store is not False
        response = new_response(req, response_id=new_id("resp"), model=entry.id, status="in_progress", store=store)
        call = ModelCall(
            upstream_model=entry.upstream_model,
            items=model_items,
            instructions=req.instructions,
            tools=toolset.offered(toolbox.functions()),
            tool_choice=upstream_choice,
            parallel_tool_calls=req.parallel_tool_calls,
            temperature=req.temperature,
            top_p=req.top_p,
            presence_penalty=req.presence_penalty,
            frequency_penalty=req.frequency_penalty,
            max_output_tokens=req.max_output_tokens,
            top_logprobs=req.top_logprobs,
            logprobs="message.output_text.logprobs" in (req.include or ()),
            user=req.user,
            safety_identifier=req.safety_identifier,
            prompt_cache_key=req.prompt_cache_key,
            service_tier=req.service_tier,
            reasoning_effort=req.reasoning.effort if req.reasoning else None,
            reasoning_summary=(req.reasoning.summary or req.reasoning.generate_summary) if req.reasoning else None,
            text_format=response["text"]["format"],
            stream=bool(req.stream),
            hosted_tools=hosted,
            continuable=continuable,
        )
        checks: list[TurnCheck] = []
        json_check = json_format_check(call.text_format or {})
        if json_check is not None:
            checks.append(json_check)
        return BuiltCall(req, entry, toolset, new_items, store, response, call, checks, conversation_input,
                         first_turn_checks=[tool_choice_check(toolset.plan)], toolbox=toolbox)

    async def complete(self, prepared: PreparedResponse) -> dict[str, Any]:
        """Fold the run (non-streaming create) and store it; a GET finds it from its first model turn to its write."""
        self.live.add(prepared)
        queued = False  # its final write is with the writer, which discards the entry when it commits or fails
        try:
            try:
                async for _ in prepared.run.batches():  # (not per event: one async generator step per upstream read)
                    pass
            finally:
                await prepared.run.aclose()
            queued = True
            await self._persist(prepared)
            self.live.discard(prepared)  # stored: the store answers now (the writer's callback did it already)
        except Exception:
            queued = False  # it failed, perhaps before it was queued: nothing will be stored
            raise
        finally:
            if not queued:  # (cancelled while queued: the writer still commits it, then discards the entry)
                self.live.discard(prepared)
        return prepared.run.builder.client_response()

    async def stream(self, prepared: PreparedResponse) -> AsyncIterator[list[Event]]:
        """Stream the run in batches (one per upstream read). The response is stored before its terminal
        event is sent; if the client goes away first, the upstream call is closed and what exists so far
        is stored as `cancelled`. A GET finds it from before `response.created` until its write has committed."""
        run = prepared.run
        self.live.add(prepared)
        queued = False  # its final write is with the writer, which discards the entry when it commits or fails
        try:
            async for batch in run.batches():
                if batch[-1]["type"] in TERMINAL_EVENTS:
                    queued = True
                    batch = await self._persist_or_fail(prepared, batch)
                    self.live.discard(prepared)  # stored (or it failed, and nothing is): before the client hears
                yield batch
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await run.aclose()
                    if not run.finished:
                        run.builder.cancel()
                        await self._persist(prepared)
                finally:
                    # A client gone while the final write was in flight cancelled only its wait: the writer still
                    # commits the row and discards the entry then (`_persist`), not a few ms before the row exists.
                    if not queued:
                        self.live.discard(prepared)

    async def _persist_or_fail(self, prepared: PreparedResponse, batch: list[Event]) -> list[Event]:
        """Store the finished response; if that fails, the client must not be told it completed (it could not
        be retrieved or continued): the terminal event becomes `response.failed`, and the stream still ends
        cleanly."""
        try:
            await self._persist(prepared)
        except Exception:
            log.exception("storing response %s failed", prepared.response.get("id"))
            failed = prepared.run.builder.refail_terminal("server_error", "The response could not be stored.")
            return batch[:-1] + failed
        return batch

    async def _persist(self, prepared: PreparedResponse) -> None:
        # The usage record goes with the response's own write; with store=false, to the writer unawaited.
        usage = None
        if self._meter is not None and prepared.origin is not None:
            usage = self._meter.record(prepared.origin, prepared.response, prepared.timing)
        turn = self.conversation_turn(prepared.conversation_id, prepared.response, prepared.conversation_input)
        if prepared.store:  # the conversation's append in the same transaction
            # The registry entry goes when the row has committed (or failed), even if this caller is cancelled
            # meanwhile: the writer calls `done` then (store/writer.py); no moment a GET finds neither.
            await self._store.save_response(prepared.project_id, prepared.response, prepared.input_items, usage,
                                            turn, functools.partial(self.live.discard, prepared))
            return
        if usage is not None:
            self._store.record_usage(usage)
        if turn is not None:  # also with store=false: the conversation keeps the turn
            await self._conversations.append_turn(prepared.project_id, turn)

    def _sealer_for(self, project_id: str) -> Callable[[Item], str]:
        return lambda item: self._sealer.seal(item, project_id)

    def _open_sealed(self, project_id: str, items: list[Item]) -> list[Item]:
        """Reasoning items sent back with encrypted_content get their sealed text restored (400 if forged), and the
        upstream's state for them; an `upstream` only ever comes from there, never from the client."""
        for index, item in enumerate(items):
            item.pop("upstream", None)
            token = item.get("encrypted_content") if item["type"] == "reasoning" else None
            if token:
                sealed = self._sealer.open(token, project_id, f"input[{index}].encrypted_content")
                item["content"] = sealed["content"]
                item["summary"] = item.get("summary") or sealed["summary"]
                if sealed.get("upstream") is not None:
                    item["upstream"] = sealed["upstream"]
        return items

    async def _resolve_references(self, project_id: str, items: list[Item]) -> list[Item]:
        refs = [item["id"] for item in items if item["type"] == "item_reference"]
        if not refs:
            return items
        found = await self._store.find_items(project_id, refs)
        resolved: list[Item] = []
        for index, item in enumerate(items):
            if item["type"] != "item_reference":
                resolved.append(item)
                continue
            target = found.get(item["id"])
            if target is None:
                raise NotFound(f"Item with id '{item['id']}' not found.", param=f"input[{index}].id")
            resolved.append(target)
        return resolved

    # -- read / delete ---------------------------------------------------------------------------

    async def retrieve(self, project_id: str, response_id: str, include: list[str] | None = None) -> dict[str, Any]:
        """The stored response, or the one running here that will be (its snapshot, `in_progress`)."""
        live = self.live.find(project_id, response_id)
        if live is not None:
            return self.live.snapshot(live, include)
        response = await self._store.get_response(project_id, response_id)
        if response is None:
            raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
        return present_response(response, include)

    async def delete(self, project_id: str, response_id: str) -> dict[str, Any]:
        if self.live.find(project_id, response_id) is not None:
            # Its one write is still to come (and would bring it back): it can be deleted once it has ended.
            raise Conflict(f"Response with id '{response_id}' is still in progress; it can be deleted once it has "
                           "finished.", param="response_id", code="response_in_progress")
        if not await self._store.delete_response(project_id, response_id):
            raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    async def input_items(self, project_id: str, response_id: str, page: PageQuery,
                          include: list[str] | None = None) -> Page:
        live = self.live.find(project_id, response_id)
        if live is not None:  # its input items as they will be stored
            result: Page | None = self.live.input_items(live, page)
        else:
            result = await self._store.list_input_items(project_id, response_id, page)
        if result is None:
            raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
        present = presenter(include)
        data = await self._resolve_references(project_id, result.data)
        return Page([present(item) for item in data], result.has_more)


# include[] values that only make sense with a built-in tool the request declares.
_TOOL_INCLUDES = {
    "file_search_call.results": "file_search",
    "web_search_call.results": "web_search",
    "web_search_call.action.sources": "web_search",
    "code_interpreter_call.outputs": "code_interpreter",
    "computer_call_output.output.image_url": "computer",
}


def _name_function(err: UnsupportedSchema, toolset: ToolSet) -> None:
    """A function's refused parameters named by the function's place in the request (`tools[1].parameters`)."""
    tool = toolset.by_upstream_name().get(err.function or "")
    if tool is not None and tool.path is not None:
        err.param = f"{tool.path}.parameters"


def _check_include(req: CreateResponseRequest, toolset: ToolSet) -> None:
    declared = {spec.kind for spec in toolset.builtins} | {tool.kind for tool in toolset.tools}
    for index, value in enumerate(req.include or ()):
        tool = _TOOL_INCLUDES.get(value)
        if tool is not None and tool not in declared:
            raise InvalidRequest(
                f"include value '{value}' needs the '{tool}' tool, which this request does not have.",
                param=f"include[{index}]",
            )


_CALLS = frozenset({"function_call", "custom_tool_call", "computer_call", "local_shell_call", "shell_call",
                    "apply_patch_call", "tool_search_call"})
_OUTPUTS = frozenset({"function_call_output", "custom_tool_call_output", "computer_call_output",
                      "local_shell_call_output", "shell_call_output", "apply_patch_call_output", "tool_search_output"})
# Items the model sees in another form: built-in tool items replayed as function calls, compaction as its summary.
_REWRITTEN = REPLAYED_TYPES | {"compaction"}


def _mcp_choice(toolset: ToolSet, toolbox: Toolbox, hosted: Sequence[HostedTool], req: CreateResponseRequest
                ) -> tuple[ToolSet, str | dict[str, Any] | None]:
    """The toolset's plan with its MCP references resolved to the functions the toolbox offers for the servers'
    tools, and the upstream's tool_choice for it (as sent, when the upstream hosts that server)."""
    choice = req.tool_choice.model_dump(exclude_none=True) if isinstance(req.tool_choice, BaseModel) else {}
    passed = hosted_mcp_choice(toolset, hosted, choice)
    if passed is not None:
        return passed
    offered = {(tool.connection.endpoint.server_label, tool.tool.name): name
               for name, tool in toolbox.tools.items() if isinstance(tool, McpTool)}
    failed = {str(lead.item.get("server_label")): str(lead.item["error"]) for lead in toolbox.leading
              if lead.item.get("type") == "mcp_list_tools" and lead.item.get("error")}  # its listing failed
    on_upstream = {str(h.entry.get("server_label")): h.name for h in hosted if h.entry.get("type") == "mcp"}
    resolved = replace(toolset, plan=toolset.plan.with_mcp_tools(offered, failed, on_upstream))
    return resolved, resolved.upstream_choice()


def _check_call_outputs(items: list[Item], first_new: int) -> None:
    """A tool call's output must answer a call earlier in the context (OpenAI rejects it too)."""
    calls: set[str] = set()
    for index, item in enumerate(items):
        kind = item["type"]
        if kind in _CALLS:
            calls.add(item.get("call_id") or item["id"])  # tool_search_call's call_id is optional
        elif kind in _OUTPUTS:
            if kind == "tool_search_output" and not item.get("call_id"):
                continue  # a server-run search's output (a hosting upstream's has no call_id): it follows its call
            # local_shell_call_output names its call by `id` in the SDK's type (the Agents SDK: `call_id`).
            call_id = item.get("call_id") or item["id"]
            if call_id not in calls:
                raise InvalidRequest(
                    f"No tool call found for {kind.removesuffix('_output')} output with call_id {call_id}.",
                    param=f"input[{max(index - first_new, 0)}].call_id",
                )
