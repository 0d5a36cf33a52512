"""The Anthropic Messages door, inbound: a Messages request becomes the canonical `CreateResponseRequest`.

Messages become input items (schema/items.py shapes): text, images and documents become message parts (documents
`input_file`, so the file input path reads PDFs), `tool_use` a `function_call`, `tool_result` a
`function_call_output`, `thinking`/`redacted_thinking` a `reasoning` item whose `encrypted_content` is the signature
(the service opens it, refusing a forged one), `system` the instructions and system turns system messages.
Consecutive messages of one role are merged first, as Anthropic does. The request is stateless: `store: false`.
Each item and part remembers the Anthropic path it came from, so the service's errors can name it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from parley.errors import InvalidRequest, ParleyError
from parley.schema.items import validation_to_invalid_request
from parley.schema.messages import (
    AnthropicTool,
    Base64Image,
    ContentSource,
    CreateMessageRequest,
    CustomTool,
    DocumentBlock,
    FileSource,
    ImageBlock,
    MessagesBase,
    PlainTextSource,
    RedactedThinkingBlock,
    SearchResultBlock,
    TextBlock,
    ThinkingBlock,
    ToolReferenceBlock,
    ToolResultBlock,
    ToolUseBlock,
    UrlSource,
)
from parley.schema.requests import CreateResponseRequest

Part = dict[str, Any]
Item = dict[str, Any]
Block = Any  # one of schema/messages.py's content block models


@dataclass(frozen=True, slots=True)
class Translated:
    """The canonical request and what rendering its answer needs to know of the Messages request."""

    request: CreateResponseRequest
    item_paths: list[str]  # the Anthropic path of each canonical input item
    part_paths: list[list[str]]  # ... and of each part of a message item
    thinking: bool  # thinking blocks are shown (thinking enabled or adaptive)
    thinking_text: bool  # their text too (not with `display: "omitted"`: the signature alone)
    stop_sequences: tuple[str, ...] = ()

    def locate(self, err: ParleyError) -> ParleyError:
        """An error the service raised about `input[i]...` or `tools[i]...`, told in the Messages request's terms."""
        param = err.param or ""
        where = _anthropic_path(param, self.item_paths, self.part_paths)
        if where is not None:
            err.message = f"{where}: {err.message}"
            err.param = where
        return err


@dataclass(slots=True)
class _Merged:
    role: str
    blocks: list[tuple[Block, str]] = field(default_factory=list)  # (block, its path)


def translate(body: MessagesBase) -> Translated:
    """The canonical request for a Messages create or count_tokens body."""
    if body.mcp_servers:
        raise InvalidRequest("mcp_servers (the MCP connector) is not supported by this server.",
                             param="mcp_servers", code="unsupported_value")
    merged = _merge(body)
    _check_tool_results(merged)
    loaded: set[str] = set()
    items: list[Item] = []
    item_paths: list[str] = []
    part_paths: list[list[str]] = []
    out = _Items(items, item_paths, part_paths, loaded)
    for message in merged:
        out.add_message(message)
    thinking = body.thinking is not None and body.thinking.on
    data: dict[str, Any] = {
        "model": body.model, "input": items, "store": False, "instructions": _system(body),
        "tools": _tools(body, loaded), **_tool_choice(body), **_output(body, thinking),
    }
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    if isinstance(body, CreateMessageRequest):
        # metadata.user_id is accepted, not sent upstream: Claude Code puts device and session ids in it.
        data.update(stream=bool(body.stream), temperature=body.temperature, top_p=body.top_p)
        max_tokens = body.max_tokens
        stop = tuple(body.stop_sequences or ())
    try:
        request = CreateResponseRequest.model_validate({k: v for k, v in data.items() if v is not None})
    except ValidationError as err:
        raise validation_to_invalid_request(err, "", data) from None
    # Anthropic takes any max_tokens from 1 (the OpenAI door's minimum of 16 is OpenAI's rule): set after checks.
    request.max_output_tokens = max_tokens
    display = body.thinking.display if body.thinking is not None else None
    return Translated(request, item_paths, part_paths, thinking, thinking and display != "omitted", stop)


# -- messages ------------------------------------------------------------------------------------------------


def _merge(body: MessagesBase) -> list[_Merged]:
    """Consecutive messages of one role become one, their blocks in order (Anthropic merges them too)."""
    merged: list[_Merged] = []
    for index, message in enumerate(body.messages):
        path = f"messages[{index}]"
        if isinstance(message.content, str):
            blocks: list[tuple[Block, str]] = [(TextBlock(type="text", text=message.content), f"{path}.content")]
        else:
            blocks = [(block, f"{path}.content[{at}]") for at, block in enumerate(message.content)]
        if not blocks and not (index == len(body.messages) - 1 and message.role == "assistant"):
            raise InvalidRequest(f"{path}.content: all messages must have non-empty content except for the "
                                 "optional final assistant message.", param=f"{path}.content")
        if merged and merged[-1].role == message.role:
            merged[-1].blocks += blocks
        else:
            merged.append(_Merged(message.role, blocks))
    return merged


def _check_tool_results(merged: list[_Merged]) -> None:
    """Anthropic's pairing rules: a user turn answers every tool_use of the assistant turn just before it, with its
    tool_result blocks first; a tool_result answers a tool_use of that assistant turn. (A system turn may only hold
    text: api/messages_request.py _Items.)"""
    previous_uses: list[str] = []
    for message in merged:
        if message.role == "system":
            continue  # a system turn (Claude Code's) neither answers nor interrupts a tool_use
        if message.role == "assistant":
            previous_uses = [block.id for block, _ in message.blocks if isinstance(block, ToolUseBlock)]
            continue
        answered: set[str] = set()
        seen_other = False
        for block, path in message.blocks:
            if not isinstance(block, ToolResultBlock):
                seen_other = True
                continue
            if seen_other:
                raise InvalidRequest(f"{path}: tool_result blocks must come first in a user message's content, "
                                     "before any other block.", param=path)
            if block.tool_use_id not in previous_uses:
                raise InvalidRequest(
                    f"{path}: unexpected tool_use_id '{block.tool_use_id}' in a tool_result block: each tool_result "
                    "must answer a tool_use block of the assistant message just before it.", param=path)
            answered.add(block.tool_use_id)
        missing = [use for use in previous_uses if use not in answered]
        if missing:
            raise InvalidRequest(
                f"{message.blocks[0][1]}: tool_use ids were found without tool_result blocks immediately after: "
                f"{', '.join(missing)}. Each tool_use block must have a tool_result block in the next message.",
                param=message.blocks[0][1])
        previous_uses = []


@dataclass(slots=True)
class _Items:
    """Canonical input items as they are built, with the Anthropic path of each item and part."""

    items: list[Item]
    item_paths: list[str]
    part_paths: list[list[str]]
    loaded: set[str]  # deferred tools a tool_reference loaded
    _parts: list[Part] = field(default_factory=list)
    _paths: list[str] = field(default_factory=list)

    def add_message(self, message: _Merged) -> None:
        role = message.role
        for block, path in message.blocks:
            if role == "system" and not isinstance(block, TextBlock):
                raise InvalidRequest(f"{path}: system messages may only contain text blocks.", param=path)
            if isinstance(block, ToolUseBlock | ThinkingBlock | RedactedThinkingBlock | ToolResultBlock):
                self._flush(role)
                self._add_item(_own_item(block, role, path, self.loaded), path)
            else:
                for part in _parts(block, role, path):
                    self._parts.append(part)
                    self._paths.append(path)
        self._flush(role)

    def _flush(self, role: str) -> None:
        if not self._parts:
            return
        self.items.append({"type": "message", "role": role, "content": self._parts})
        self.item_paths.append(self._paths[0])
        self.part_paths.append(self._paths)
        self._parts, self._paths = [], []

    def _add_item(self, item: Item, path: str) -> None:
        self.items.append(item)
        self.item_paths.append(path)
        self.part_paths.append([])


def _own_item(block: Block, role: str, path: str, loaded: set[str]) -> Item:
    """A block that is an item of its own: a tool call, its result, or the model's reasoning."""
    if isinstance(block, ToolResultBlock):
        if role != "user":
            raise InvalidRequest(f"{path}: tool_result blocks belong in user messages.", param=path)
        output = _tool_output(block, path, loaded)
        return {"type": "function_call_output", "call_id": block.tool_use_id, "output": output}
    if role != "assistant":
        raise InvalidRequest(f"{path}: {block.type} blocks belong in assistant messages.", param=path)
    if isinstance(block, ToolUseBlock):
        return {"type": "function_call", "call_id": block.id, "name": block.name,
                "arguments": orjson.dumps(block.input).decode()}
    # The signature is the sealed reasoning item (api/messages_stream.py): the service opens it, or refuses it.
    token = block.signature if isinstance(block, ThinkingBlock) else block.data
    return {"type": "reasoning", "summary": [], "encrypted_content": token}


def _tool_output(block: ToolResultBlock, path: str, loaded: set[str]) -> str | list[Part]:
    """A tool_result's content as a function_call_output's output. `is_error` has no Responses field: the text says
    it (the model of any upstream reads it)."""
    if isinstance(block.content, str):
        return f"Error: {block.content}" if block.is_error else block.content
    parts: list[Part] = [{"type": "input_text", "text": "Error:"}] if block.is_error else []
    for at, inner in enumerate(block.content):
        if isinstance(inner, ToolReferenceBlock):
            loaded.add(inner.tool_name)
            parts.append({"type": "input_text", "text": f"Tool '{inner.tool_name}' is now available."})
        else:
            parts += _parts(inner, "user", f"{path}.content[{at}]")
    return parts


def _parts(block: Block, role: str, path: str) -> list[Part]:
    """Message parts of a text, image, document or search result block."""
    if isinstance(block, TextBlock):
        return [{"type": "output_text" if role == "assistant" else "input_text", "text": block.text}]
    if role == "assistant":
        raise InvalidRequest(f"{path}: {block.type} blocks are not allowed in assistant messages.", param=path)
    if isinstance(block, ImageBlock):
        return [_image(block)]
    if isinstance(block, SearchResultBlock):
        text = "\n".join(inner.text for inner in block.content)
        return [{"type": "input_text", "text": f"Search result: {block.title} ({block.source})\n{text}"}]
    if isinstance(block, DocumentBlock):
        return _document(block)
    raise InvalidRequest(f"{path}: unsupported content block type '{block.type}'.", param=path)


def _image(block: ImageBlock) -> Part:
    source = block.source
    if isinstance(source, Base64Image):
        return {"type": "input_image", "image_url": f"data:{source.media_type};base64,{source.data}", "detail": "auto"}
    if isinstance(source, FileSource):
        return {"type": "input_image", "file_id": source.file_id, "detail": "auto"}
    return {"type": "input_image", "image_url": source.url, "detail": "auto"}


def _document(block: DocumentBlock) -> list[Part]:
    """A document is a file input (PDFs and text go through Parley's file input path); content documents are
    their own parts. `context` is text the model reads after it."""
    source = block.source
    title = block.title
    parts: list[Part]
    if isinstance(source, ContentSource):
        inner = source.content
        blocks = [TextBlock(type="text", text=inner)] if isinstance(inner, str) else inner
        parts = [part for inner_block in blocks for part in _parts(inner_block, "user", "document")]
    elif isinstance(source, PlainTextSource):
        data = base64.b64encode(source.data.encode()).decode()
        parts = [{"type": "input_file", "filename": title or "document.txt",
                  "file_data": f"data:text/plain;base64,{data}"}]
    elif isinstance(source, UrlSource):
        parts = [{"type": "input_file", "file_url": source.url, **({"filename": title} if title else {})}]
    elif isinstance(source, FileSource):
        parts = [{"type": "input_file", "file_id": source.file_id}]
    else:
        parts = [{"type": "input_file", "filename": title or "document.pdf",
                  "file_data": f"data:application/pdf;base64,{source.data}"}]
    if block.context:
        parts.append({"type": "input_text", "text": block.context})
    return parts


# -- the rest of the request -------------------------------------------------------------------------------


def _system(body: MessagesBase) -> str | None:
    if body.system is None or isinstance(body.system, str):
        return body.system or None
    return "\n".join(block.text for block in body.system) or None


def _tools(body: MessagesBase, loaded: set[str]) -> list[dict[str, Any]] | None:
    """Custom tools become function tools; a deferred one (tool search) only once a tool_reference loaded it.
    Tools Anthropic defines (bash_20250124, web_search_20250305, ...) have no schema Parley could offer."""
    if body.tools is None:
        return None
    tools: list[dict[str, Any]] = []
    for index, tool in enumerate(body.tools):
        if isinstance(tool, AnthropicTool):
            raise InvalidRequest(
                f"tools[{index}].type: the tool type '{tool.type}' is not supported by this server; declare the "
                "tool with a name, description and input_schema.", param=f"tools[{index}].type",
                code="unsupported_tool")
        assert isinstance(tool, CustomTool)
        if tool.defer_loading and tool.name not in loaded:
            continue
        entry: dict[str, Any] = {"type": "function", "name": tool.name, "parameters": tool.input_schema}
        if tool.description is not None:
            entry["description"] = tool.description
        if tool.strict is not None:
            entry["strict"] = tool.strict
        tools.append(entry)
    return tools


def _tool_choice(body: MessagesBase) -> dict[str, Any]:
    choice = body.tool_choice
    if choice is None:
        return {}
    out: dict[str, Any] = {}
    if choice.type == "tool":
        out["tool_choice"] = {"type": "function", "name": choice.name}
    else:
        out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
    if choice.disable_parallel_tool_use:
        out["parallel_tool_calls"] = False
    return out


def _effort(budget: int) -> str:
    """A thinking budget as a reasoning effort, for upstreams that take an effort rather than a budget."""
    if budget < 4096:
        return "low"
    return "medium" if budget < 16384 else "high"


def _output(body: MessagesBase, thinking: bool) -> dict[str, Any]:
    """Thinking, effort and structured output: `include` makes the engine seal each reasoning item (the thinking
    block's signature); the effort is output_config's, else the thinking budget's."""
    out: dict[str, Any] = {}
    if thinking:
        out["include"] = ["reasoning.encrypted_content"]
    effort: str | None = body.output_config.effort if body.output_config else None
    if effort is None and body.thinking is not None and body.thinking.budget_tokens is not None and thinking:
        effort = _effort(body.thinking.budget_tokens)
    if effort is not None:
        out["reasoning"] = {"effort": effort}
    fmt = (body.output_config.format if body.output_config else None) or body.output_format
    if fmt is not None:
        out["text"] = {"format": {"type": "json_schema", "name": "output", "schema": fmt.schema_, "strict": True}}
    return out


def _anthropic_path(param: str, item_paths: list[str], part_paths: list[list[str]]) -> str | None:
    """`input[3].content[1].file_data` -> the path of the block that part came from (`messages[2].content[4]`)."""
    if not param.startswith("input["):
        return None
    head, _, rest = param[len("input["):].partition("]")
    if not head.isdigit() or int(head) >= len(item_paths):
        return None
    index = int(head)
    if rest.startswith(".content["):
        part, _, _ = rest[len(".content["):].partition("]")
        if part.isdigit() and int(part) < len(part_paths[index]):
            return part_paths[index][int(part)]
    return item_paths[index]
