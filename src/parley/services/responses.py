"""The responses use case: validate a create request, build the model context, run it, store the result."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from parley.engine.checks import TurnCheck, json_format_check, tool_choice_check
from parley.engine.run import TERMINAL_EVENTS, ResponseRun
from parley.engine.sealing import ReasoningSealer
from parley.engine.stream import Event, StreamBuilder
from parley.errors import InvalidRequest, NotFound
from parley.ids import new_id
from parley.providers.base import ModelCall
from parley.providers.registry import ModelRegistry
from parley.schema.items import Item, normalize_input
from parley.schema.requests import CreateResponseRequest
from parley.schema.response import new_response
from parley.schema.tools import build_toolset
from parley.store.base import Page, PageQuery, ResponseStore


@dataclass(slots=True)
class PreparedResponse:
    """A validated request whose upstream call is open: ready to be streamed or folded."""

    project_id: str
    store: bool
    input_items: list[Item]
    run: ResponseRun

    @property
    def response(self) -> dict[str, Any]:
        return self.run.builder.response


class ResponsesService:
    def __init__(
        self, store: ResponseStore, models: ModelRegistry, sealer: ReasoningSealer, *, obfuscation_default: bool
    ) -> None:
        self._store = store
        self._models = models
        self._sealer = sealer
        self._obfuscation_default = obfuscation_default

    # -- create ----------------------------------------------------------------------------------

    async def prepare(self, project_id: str, req: CreateResponseRequest) -> PreparedResponse:
        """Validate everything and open the upstream call; every failure here is an HTTP error."""
        entry = self._models.get(req.model)
        if req.background:
            raise InvalidRequest("Background responses are not supported by this server yet.", param="background",
                                 code="unsupported_value")
        if req.conversation_id is not None:
            raise NotFound(f"Conversation with id '{req.conversation_id}' not found.", param="conversation")
        for name in ("context_management", "moderation"):
            if getattr(req, name) is not None:
                raise InvalidRequest(f"'{name}' is not supported by this server yet.", param=name,
                                     code="unsupported_value")
        if req.prompt is not None:
            raise NotFound(f"Prompt with id '{req.prompt.id}' not found.", param="prompt.id")
        new_items = self._open_sealed(project_id, normalize_input(req.input))
        toolset = build_toolset(req)
        _check_include(req)
        context: list[Item] = []
        if req.previous_response_id is not None:
            loaded = await self._store.load_context(project_id, req.previous_response_id)
            if loaded is None:
                raise NotFound(
                    f"Previous response with id '{req.previous_response_id}' not found.",
                    param="previous_response_id",
                )
            context = loaded
        model_items = await self._resolve_references(project_id, context + new_items)
        _check_call_outputs(model_items, len(context))
        if not model_items:
            raise InvalidRequest("Missing required parameter: 'input'.", param="input",
                                 code="missing_required_parameter")
        store = req.store is not False
        response = new_response(req, response_id=new_id("resp"), model=entry.id, status="in_progress", store=store)
        call = ModelCall(
            upstream_model=entry.upstream_model,
            items=model_items,
            instructions=req.instructions,
            tools=toolset.offered(),
            tool_choice=toolset.upstream_choice(),
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
            text_format=response["text"]["format"],
            stream=bool(req.stream),
        )
        checks: list[TurnCheck] = [tool_choice_check(toolset.plan)]
        json_check = json_format_check(call.text_format or {})
        if json_check is not None:
            checks.append(json_check)
        stream = await entry.provider.open(call)
        obfuscate = self._obfuscation_default
        if req.stream_options is not None and req.stream_options.include_obfuscation is not None:
            obfuscate = req.stream_options.include_obfuscation
        builder = StreamBuilder(
            response, emit=bool(req.stream), obfuscate=obfuscate, tools=toolset.by_upstream_name(),
            parallel_tool_calls=req.parallel_tool_calls is not False,
            seal=self._sealer_for(project_id) if "reasoning.encrypted_content" in (req.include or ()) else None,
        )
        return PreparedResponse(project_id, store, new_items, ResponseRun(builder, stream, checks))

    async def complete(self, prepared: PreparedResponse) -> dict[str, Any]:
        """Fold the run (non-streaming create) and store it."""
        try:
            async for _ in prepared.run.events():
                pass
        finally:
            await prepared.run.aclose()
        await self._persist(prepared)
        return prepared.response

    async def stream(self, prepared: PreparedResponse) -> AsyncIterator[Event]:
        """Stream the run. The response is stored before its terminal event is sent; if the client goes
        away first, the upstream call is closed and what exists so far is stored as `cancelled`."""
        run = prepared.run
        try:
            async for event in run.events():
                if event["type"] in TERMINAL_EVENTS:
                    await self._persist(prepared)
                yield event
        finally:
            with anyio.CancelScope(shield=True):
                await run.aclose()
                if not run.finished:
                    run.builder.cancel()
                    await self._persist(prepared)

    async def _persist(self, prepared: PreparedResponse) -> None:
        if prepared.store:
            await self._store.save_response(prepared.project_id, prepared.response, prepared.input_items)

    def _sealer_for(self, project_id: str) -> Callable[[Item], str]:
        return lambda item: self._sealer.seal(item, project_id)

    def _open_sealed(self, project_id: str, items: list[Item]) -> list[Item]:
        """Reasoning items sent back with encrypted_content get their sealed text restored (400 if forged)."""
        for index, item in enumerate(items):
            token = item.get("encrypted_content") if item["type"] == "reasoning" else None
            if token:
                sealed = self._sealer.open(token, project_id, f"input[{index}].encrypted_content")
                item["content"] = sealed["content"]
                item["summary"] = item.get("summary") or sealed["summary"]
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

    async def retrieve(self, project_id: str, response_id: str) -> dict[str, Any]:
        response = await self._store.get_response(project_id, response_id)
        if response is None:
            raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
        return response

    async def delete(self, project_id: str, response_id: str) -> dict[str, Any]:
        if not await self._store.delete_response(project_id, response_id):
            raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    async def input_items(self, project_id: str, response_id: str, page: PageQuery) -> Page:
        result = await self._store.list_input_items(project_id, response_id, page)
        if result is None:
            raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
        data = await self._resolve_references(project_id, result.data)
        return Page(data, result.has_more)

    async def cancel(self, project_id: str, response_id: str) -> dict[str, Any]:
        response = await self.retrieve(project_id, response_id)
        if not response.get("background"):
            raise InvalidRequest("Only responses created with background=true can be cancelled.",
                                 param="response_id")
        return response


# include[] values that only make sense with a built-in tool Parley does not run yet.
_TOOL_INCLUDES = {
    "file_search_call.results": "file_search",
    "web_search_call.results": "web_search",
    "web_search_call.action.sources": "web_search",
    "code_interpreter_call.outputs": "code_interpreter",
    "computer_call_output.output.image_url": "computer",
}


def _check_include(req: CreateResponseRequest) -> None:
    for index, value in enumerate(req.include or ()):
        tool = _TOOL_INCLUDES.get(value)
        if tool is not None:
            raise InvalidRequest(
                f"include value '{value}' needs the '{tool}' tool, which this request does not have.",
                param=f"include[{index}]",
            )


def _check_call_outputs(items: list[Item], first_new: int) -> None:
    """A function_call_output must answer a function_call earlier in the context (OpenAI rejects it too)."""
    calls: set[str] = set()
    for index, item in enumerate(items):
        kind = item["type"]
        if kind in ("function_call", "custom_tool_call"):
            calls.add(item["call_id"])
        elif kind in ("function_call_output", "custom_tool_call_output") and item["call_id"] not in calls:
            raise InvalidRequest(
                f"No tool call found for function call output with call_id {item['call_id']}.",
                param=f"input[{max(index - first_new, 0)}].call_id",
            )
