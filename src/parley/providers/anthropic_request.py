"""Canonical model call -> an Anthropic Messages API request (https://docs.anthropic.com/en/api/messages).

- `instructions` and leading system/developer messages -> `system`; later ones become user text (Messages has
  no system turns). Consecutive items of one role are one message; a call's output is a `tool_result` block.
- Images (https or data URLs) -> `image` blocks; resolved PDFs -> `document` blocks (base64), other text files
  -> `document` blocks with their extracted text; `files = false` sends the text instead.
- Function and custom tools -> `tools`; tool_choice auto/required/none/named -> auto/any/none/tool, with
  `disable_parallel_tool_use` for `parallel_tool_calls: false`.
- `reasoning.effort` -> extended thinking with a budget (THINKING_BUDGETS); thinking blocks (and redacted
  ones) go back with their signature (kept as the reasoning item's upstream state, so also when sealed in
  `encrypted_content` with `store: false`). Anthropic allows only auto/none tool_choice with thinking, and no
  temperature or top_p below 0.95: those are left out and the engine checks what could not be forced. The
  `anthropic` profile sends no temperature or top_p at all (the current API has none).
- `max_tokens` is required: max_output_tokens, else the profile's default plus the thinking budget.
- `prompt_cache_key`, or a long prompt, puts `cache_control` breakpoints on the last tool, the last system block
  and the last message block, so the next turn reads the whole prefix from the cache.
- `text.format` json_schema / json_object: the model answers by calling a tool whose input schema is the
  format's schema (forced when the model has no other tool to call, or must call one of them); its input is
  streamed as the message text, which engine/checks.py validates as for every upstream. Chosen over a prompt
  instruction: the schema then constrains the model's output directly. A schema whose root is not an object
  (tool inputs are objects) and turns with thinking (no forced tools) get a system instruction instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from parley.providers.base import Item, ModelCall
from parley.providers.native_items import (
    arguments_object,
    data_url,
    file_text,
    image_url,
    output_text,
    reasoning_text,
    unsupported_item,
    unsupported_part,
    upstream_call_name,
    upstream_state,
)
from parley.providers.native_profiles import NativeProfile
from parley.providers.prefix_memo import PrefixMemo

KIND = "anthropic"
Block = dict[str, Any]
# reasoning.effort -> thinking budget_tokens (at least 1024, below max_tokens:
# https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking). "none" turns thinking off.
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 32768}
MIN_THINKING_BUDGET = 1024
# A prompt at least this long gets cache breakpoints without a prompt_cache_key (~1024 tokens, the smallest
# prefix Claude models cache: https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching).
CACHE_MIN_CHARS = 4096
JSON_TOOL = "json_response"
_CACHEABLE = frozenset({"text", "image", "document", "tool_use", "tool_result"})


def json_tool_name(call: ModelCall) -> str | None:
    """The name of the tool that carries a structured answer, or None when the call asks for none."""
    fmt = call.text_format or {}
    if fmt.get("type") not in ("json_schema", "json_object"):
        return None
    schema = fmt.get("schema") if fmt.get("type") == "json_schema" else {"type": "object"}
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return None
    names = {tool["name"] for tool in call.tools}
    name = JSON_TOOL
    while name in names:
        name = "_" + name
    return name


def _image(part: Item, path: str, profile: NativeProfile) -> Block:
    url = image_url(part, path, profile.vision)
    inline = data_url(url, f"{path}.image_url")
    if inline is not None:
        return {"type": "image", "source": {"type": "base64", "media_type": inline[0], "data": inline[1]}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _file(part: Item, path: str, profile: NativeProfile) -> Block:
    if profile.files:
        inline = data_url(str(part["file_data"]), f"{path}.file_data")
        if inline is not None and inline[0] == "application/pdf":
            return {"type": "document", "title": part["filename"],
                    "source": {"type": "base64", "media_type": "application/pdf", "data": inline[1]}}
        return {"type": "document", "title": part["filename"],
                "source": {"type": "text", "media_type": "text/plain", "data": part["text"]}}
    return {"type": "text", "text": file_text(part)}


def _block(part: Item, path: str, profile: NativeProfile) -> Block | None:
    kind = part["type"]
    if kind in ("input_text", "output_text"):
        return {"type": "text", "text": part["text"]} if part["text"] else None  # empty text blocks are refused
    if kind == "refusal":
        return {"type": "text", "text": part["refusal"]} if part["refusal"] else None
    if kind == "input_image":
        return _image(part, path, profile)
    if kind == "input_file" and "text" in part:  # resolved by services/file_inputs.py
        return _file(part, path, profile)
    raise unsupported_part(kind, path)


def _blocks(parts: list[Item], path: str, profile: NativeProfile) -> list[Block]:
    blocks = (_block(p, f"{path}[{i}]", profile) for i, p in enumerate(parts))
    return [b for b in blocks if b is not None]


@dataclass(frozen=True, slots=True)
class AnthropicMessages:
    """A call's translated messages and system blocks, as a PrefixMemo keeps them (providers/prefix_memo.py), with
    the instructions and upstream model they were made for (thinking blocks go back only to the model that made
    them)."""

    instructions: str | None
    upstream_model: str
    messages: tuple[dict[str, Any], ...]
    system: tuple[Block, ...]


class _Messages:
    """The message list: blocks of one role in a row share a message. Messages before `shared` belong to a memo:
    the one new blocks join is copied first."""

    def __init__(self, start: AnthropicMessages | None = None) -> None:
        self.messages: list[dict[str, Any]] = list(start.messages) if start is not None else []
        self.system: list[Block] = list(start.system) if start is not None else []
        self.shared = len(self.messages)

    def add(self, role: str, blocks: list[Block]) -> None:
        if not blocks:
            return
        if self.messages and self.messages[-1]["role"] == role:
            if len(self.messages) <= self.shared:
                last = self.messages[-1]
                self.messages[-1] = {**last, "content": list(last["content"])}
                self.shared -= 1
            self.messages[-1]["content"].extend(blocks)
        else:
            self.messages.append({"role": role, "content": list(blocks)})


def _item(out: _Messages, item: Item, path: str, call: ModelCall, profile: NativeProfile) -> None:
    kind = item["type"]
    if kind == "message":
        blocks = _blocks(item["content"], f"{path}.content", profile)
        role = item["role"]
        if role in ("system", "developer"):
            if out.messages:
                out.add("user", blocks)  # Messages has no system turns mid-conversation
            else:
                out.system.extend(blocks)
        else:
            out.add("assistant" if role == "assistant" else "user", blocks)
    elif kind in ("function_call", "custom_tool_call"):
        out.add("assistant", [{"type": "tool_use", "id": item["call_id"], "name": upstream_call_name(item),
                               "input": arguments_object(item, path)}])
    elif kind in ("function_call_output", "custom_tool_call_output"):
        result: Any = item["output"]
        if not isinstance(result, str):
            result = _blocks(result, f"{path}.output", profile) or output_text(result)
        out.add("user", [{"type": "tool_result", "tool_use_id": item["call_id"], "content": result}])
    elif kind == "reasoning":
        state = upstream_state(item, KIND, call.upstream_model)
        if state is not None and "redacted" in state:
            out.add("assistant", [{"type": "redacted_thinking", "data": state["redacted"]}])
        elif state is not None:
            out.add("assistant", [{"type": "thinking", "thinking": reasoning_text(item),
                                   "signature": state["signature"]}])
        # other reasoning (another upstream's, or none): the visible turn is what this model gets
    elif "upstream" not in item:
        raise unsupported_item(kind, path)


def _thinking(call: ModelCall, messages: list[dict[str, Any]], profile: NativeProfile) -> tuple[int, int | None]:
    """(max_tokens, thinking budget or None)."""
    budget = THINKING_BUDGETS.get(call.reasoning_effort or "")
    if budget is not None and messages:
        # In a tool loop the assistant turn being answered must start with its thinking block; one resent
        # without its signature (a client that kept no encrypted_content) cannot be, so this turn thinks not.
        last = next((m for m in reversed(messages) if m["role"] == "assistant"), None)
        if last is not None and any(b["type"] == "tool_use" for b in last["content"]) and \
                last["content"][0]["type"] not in ("thinking", "redacted_thinking"):
            budget = None
    if call.max_output_tokens is None:
        return profile.default_max_tokens + (budget or 0), budget
    if budget is None or call.max_output_tokens <= MIN_THINKING_BUDGET:
        return call.max_output_tokens, None
    return call.max_output_tokens, min(budget, call.max_output_tokens - 1)


def _tool_choice(call: ModelCall, json_tool: str | None, thinking: bool) -> dict[str, Any] | None:
    choice = call.tool_choice
    if thinking:  # only auto and none may be combined with thinking
        picked: dict[str, Any] = {"type": "none" if choice == "none" else "auto"}
    elif isinstance(choice, dict):
        picked = {"type": "tool", "name": choice["name"]}
    elif json_tool is not None and not call.tools:
        picked = {"type": "tool", "name": json_tool}
    elif choice == "required" or json_tool is not None:
        picked = {"type": "any"}  # with a structured answer, answering is calling its tool
    elif choice in ("auto", "none"):
        picked = {"type": choice}
    else:
        return None
    if call.parallel_tool_calls is False and picked["type"] != "none":
        picked["disable_parallel_tool_use"] = True
    return picked


def _tools(call: ModelCall, json_tool: str | None) -> list[Block]:
    tools = [{"name": t["name"], **({"description": t["description"]} if t.get("description") else {}),
              "input_schema": t.get("parameters") or {"type": "object", "properties": {}}} for t in call.tools]
    if json_tool is not None:
        fmt = call.text_format or {}
        schema = fmt.get("schema") if fmt.get("type") == "json_schema" else {"type": "object"}
        tools.append({"name": json_tool, "input_schema": schema,
                      "description": "Give your final answer by calling this tool: its input is the answer."})
    return tools


def _json_instruction(call: ModelCall, json_tool: str | None, thinking: bool) -> str | None:
    fmt = call.text_format or {}
    if fmt.get("type") not in ("json_schema", "json_object"):
        return None
    if json_tool is not None:
        return f"Give your final answer by calling the {json_tool} tool." if thinking else None
    schema = orjson.dumps(fmt.get("schema") or {"type": "object"}).decode()
    return f"Answer with only a JSON value (no other text) that matches this JSON schema: {schema}"


def _mark_cache(body: dict[str, Any], call: ModelCall, size: int) -> None:
    """Cache breakpoints on the last tool, system block and message block. Marked blocks are copies: the message
    and system blocks may be a memo's, which later turns send again unmarked."""
    if call.prompt_cache_key is None and size < CACHE_MIN_CHARS:
        return
    mark = {"cache_control": {"type": "ephemeral"}}
    if body.get("tools"):
        body["tools"][-1] = {**body["tools"][-1], **mark}
    if body.get("system"):
        body["system"][-1] = {**body["system"][-1], **mark}
    if body["messages"]:
        last = body["messages"][-1]
        content = list(last["content"])
        cacheable = [i for i, b in enumerate(content) if b["type"] in _CACHEABLE]
        if cacheable:
            content[cacheable[-1]] = {**content[cacheable[-1]], **mark}
            body["messages"][-1] = {**last, "content": content}


def _translate(call: ModelCall, profile: NativeProfile, memo: PrefixMemo[AnthropicMessages] | None) -> _Messages:
    """The call's messages and system blocks; with a `memo`, from its first new item on."""
    hit = memo.find(call.items, lambda made: (made.instructions, made.upstream_model) == (
        call.instructions, call.upstream_model)) if memo is not None else None
    out = _Messages(hit.state if hit is not None else None)
    if hit is None and call.instructions:
        out.system.append({"type": "text", "text": call.instructions})
    for index in range(hit.start if hit is not None else 0, len(call.items)):
        _item(out, call.items[index], f"input[{index}]", call, profile)
    if memo is not None:
        memo.put(call.items, AnthropicMessages(call.instructions, call.upstream_model, tuple(out.messages),
                                               tuple(out.system)), hit, call.continuable)
    return out


def anthropic_body(call: ModelCall, profile: NativeProfile,
                   memo: PrefixMemo[AnthropicMessages] | None = None) -> dict[str, Any]:
    """The Messages API body of `call`. With a `memo` (one per configured model), a call that extends one translated
    before is translated only from its first new item on."""
    out = _translate(call, profile, memo)
    max_tokens, budget = _thinking(call, out.messages, profile)
    json_tool = json_tool_name(call)
    instruction = _json_instruction(call, json_tool, budget is not None)
    if instruction:
        out.system.append({"type": "text", "text": instruction})
    body: dict[str, Any] = {"model": call.upstream_model, "max_tokens": max_tokens, "messages": out.messages}
    if out.system:
        body["system"] = out.system
    if call.stream:
        body["stream"] = True
    tools = _tools(call, json_tool)
    if tools:
        body["tools"] = tools
        choice = _tool_choice(call, json_tool, budget is not None)
        if choice is not None:
            body["tool_choice"] = choice
    if budget is not None:
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
        if call.reasoning_summary:
            body["thinking"]["display"] = "summarized"
        if profile.sampling and call.top_p is not None and call.top_p >= 0.95:
            body["top_p"] = call.top_p
    elif profile.sampling:
        body.update({k: v for k, v in (("temperature", call.temperature), ("top_p", call.top_p)) if v is not None})
    user = call.safety_identifier or call.user
    if user:
        body["metadata"] = {"user_id": user}
    _mark_cache(body, call, len(orjson.dumps([body.get("system"), body.get("tools"), body["messages"]])))
    return body
