"""Canonical model call -> Chat Completions request body (messages, tools, sampling fields)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from parley.errors import InvalidRequest
from parley.providers.base import ModelCall
from parley.providers.prefix_memo import PrefixMemo
from parley.providers.profiles import Profile

Item = dict[str, Any]
Message = dict[str, Any]

# Items that only carry the model's own earlier state; Chat Completions has no input form for them,
# so they are not sent (the visible text of the turn is in the message items around them).
_STATE_ONLY_ITEMS = frozenset({"reasoning"})


def _part(part: dict[str, Any], path: str, profile: Profile) -> dict[str, Any]:
    kind = part["type"]
    if kind in ("input_text", "output_text"):
        return {"type": "text", "text": part["text"]}
    if kind == "refusal":
        return {"type": "text", "text": part["refusal"]}
    if kind == "input_image":
        if not profile.vision:
            raise InvalidRequest("This model does not accept images (its profile says vision = false).",
                                 param=path, code="unsupported_value")
        url = part.get("image_url")
        if not url:
            raise InvalidRequest(
                "input_image with file_id is not supported by this server yet; send image_url (https or data URL).",
                param=f"{path}.file_id", code="unsupported_value",
            )
        return {"type": "image_url", "image_url": {"url": url, "detail": part.get("detail", "auto")}}
    if kind == "input_file" and "text" in part:  # resolved by services/file_inputs.py
        if profile.files:
            return {"type": "file", "file": {"filename": part["filename"], "file_data": part["file_data"]}}
        return {"type": "text", "text": f"[Contents of the file {part['filename']}]\n{part['text']}"}
    raise InvalidRequest(f"Content part type '{kind}' is not supported by this server yet.", param=f"{path}.type",
                         code="unsupported_value")


def _content(parts: list[dict[str, Any]], path: str, profile: Profile) -> str | list[dict[str, Any]]:
    converted = [_part(p, f"{path}[{i}]", profile) for i, p in enumerate(parts)]
    if profile.text_parts_as_string and all(p["type"] == "text" for p in converted):
        return "\n".join(p["text"] for p in converted)
    return converted


def _output_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    return "\n".join(p.get("text", "") for p in output if p.get("type") in ("input_text", "output_text"))


def _reasoning_text(item: Item) -> str:
    return "".join(p.get("text", "") for p in item.get("content") or () if p.get("type") == "reasoning_text")


@dataclass(frozen=True, slots=True)
class ChatMessages:
    """The translation of a call's instructions and items, as a PrefixMemo keeps it (providers/prefix_memo.py): the
    messages, and the reasoning text still waiting for the assistant message it belongs to."""

    instructions: str | None
    messages: tuple[Message, ...]
    pending_reasoning: str


def chat_messages(call: ModelCall, profile: Profile, memo: PrefixMemo[ChatMessages] | None = None) -> list[Message]:
    """The Chat Completions messages of `call`. With a `memo` (one per profile: the translation depends on it),
    a call that extends one translated before is translated only from its first new item on; the messages of
    the prefix are shared, never changed (one the new items change is copied first)."""
    hit = memo.find(call.items, lambda made: made.instructions == call.instructions) if memo is not None else None
    if hit is not None:
        messages, pending_reasoning, start = list(hit.state.messages), hit.state.pending_reasoning, hit.start
    else:
        messages, pending_reasoning, start = [], "", 0
        if call.instructions:
            messages.append({"role": profile.developer_role, "content": call.instructions})
    shared = len(messages)  # messages[:shared] are the memo's
    for index in range(start, len(call.items)):
        item = call.items[index]
        kind = item["type"]
        path = f"input[{index}]"
        if kind == "message":
            role = item["role"]
            if role == "developer":
                role = profile.developer_role
            messages.append({"role": role, "content": _content(item["content"], f"{path}.content", profile)})
            if role == "assistant" and pending_reasoning:
                messages[-1][str(profile.reasoning_field)] = pending_reasoning
            pending_reasoning = ""
        elif kind in ("function_call", "custom_tool_call"):
            fresh = not messages or messages[-1]["role"] != "assistant"
            if not fresh and len(messages) <= shared:  # the call joins the memo's last message: a copy of it
                last = messages[-1]
                messages[-1] = {**last, "tool_calls": list(last.get("tool_calls") or ())}
                shared -= 1
            _append_tool_call(messages, item, profile)
            if fresh and pending_reasoning:
                messages[-1][str(profile.reasoning_field)] = pending_reasoning
            pending_reasoning = ""
        elif kind in ("function_call_output", "custom_tool_call_output"):
            messages.append(
                {"role": "tool", "tool_call_id": item["call_id"], "content": _output_text(item["output"])}
            )
        elif kind in _STATE_ONLY_ITEMS:
            if profile.reasoning_passback and profile.reasoning_field:
                pending_reasoning += _reasoning_text(item)
            continue
        elif "upstream" in item:
            continue  # an item a hosting upstream made (providers/base.py HostedItem): its own state, not sendable
        else:
            raise InvalidRequest(
                f"Input item type '{kind}' cannot be sent to this model.", param=f"{path}.type",
                code="unsupported_value",
            )
    if memo is not None:
        memo.put(call.items, ChatMessages(call.instructions, tuple(messages), pending_reasoning), hit,
                 call.continuable)
    return messages


def upstream_tool_name(name: str, namespace: str | None) -> str:
    """The function name the upstream sees for a (possibly namespaced) client tool. A namespace equal to the name
    marks a deferred top-level function (OpenAI's wire shape, the Agents SDK's lookup): no prefix."""
    return f"{namespace}__{name}" if namespace and namespace != name else name


def _append_tool_call(messages: list[Message], item: Item, profile: Profile) -> None:
    if item["type"] == "custom_tool_call":
        arguments = orjson.dumps({"input": item["input"]}).decode()
    else:
        arguments = item["arguments"]
    tool_call = {
        "id": item["call_id"],
        "type": "function",
        "function": {"name": upstream_tool_name(item["name"], item.get("namespace")), "arguments": arguments},
    }
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(tool_call)
    else:
        content = None if profile.tool_call_content_null else ""
        messages.append({"role": "assistant", "content": content, "tool_calls": [tool_call]})


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool["name"]}
    if tool.get("description") is not None:
        function["description"] = tool["description"]
    function["parameters"] = tool.get("parameters") or {"type": "object", "properties": {}}
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _tool_choice(choice: str | dict[str, Any], call: ModelCall, profile: Profile) -> str | dict[str, Any]:
    if choice == "required" and len(call.tools) == 1 and not profile.tool_choice_required:
        # "required" with one tool means that tool, which the server may be able to force (llama.cpp grammar).
        choice = {"type": "function", "name": call.tools[0]["name"]}
    if isinstance(choice, dict):
        if not profile.tool_choice_named:
            return "auto"  # not forcible here: the engine checks the turn against tool_choice instead
        return {"type": "function", "function": {"name": choice["name"]}}
    if choice == "required" and not profile.tool_choice_required:
        return "auto"
    return choice


def _response_format(fmt: dict[str, Any], profile: Profile) -> dict[str, Any] | None:
    kind = fmt.get("type")
    if kind == "json_schema" and profile.json_schema_format == "json_object_schema":
        return {"type": "json_object", "schema": fmt["schema"]}
    if kind == "json_schema":
        schema = {"name": fmt["name"], "schema": fmt["schema"]}
        if fmt.get("strict") is not None:
            schema["strict"] = fmt["strict"]
        if fmt.get("description"):
            schema["description"] = fmt["description"]
        return {"type": "json_schema", "json_schema": schema}
    if kind == "json_object":
        return {"type": "json_object"}
    return None


def chat_body(call: ModelCall, profile: Profile, memo: PrefixMemo[ChatMessages] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": call.upstream_model,
        "messages": chat_messages(call, profile, memo),
        "stream": call.stream,
    }
    if call.stream and profile.stream_usage:
        body["stream_options"] = {"include_usage": True}
    optional = {
        "temperature": call.temperature,
        "top_p": call.top_p,
        "presence_penalty": call.presence_penalty,
        "frequency_penalty": call.frequency_penalty,
        profile.max_tokens_field: call.max_output_tokens,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if call.tools:
        body["tools"] = [_tool(t) for t in call.tools]
        if call.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = call.parallel_tool_calls
    if call.tool_choice is not None and call.tools:
        body["tool_choice"] = _tool_choice(call.tool_choice, call, profile)
    user = call.safety_identifier or call.user
    if user and profile.user_field:
        body["user"] = user
    if call.prompt_cache_key and profile.prompt_cache_key:
        body["prompt_cache_key"] = call.prompt_cache_key
    if call.service_tier and profile.service_tier:
        body["service_tier"] = call.service_tier
    if call.reasoning_effort and profile.reasoning_effort:
        body["reasoning_effort"] = call.reasoning_effort
    if call.logprobs and profile.logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = call.top_logprobs or 0
    if call.text_format:
        fmt = _response_format(call.text_format, profile)
        if fmt is not None:
            body["response_format"] = fmt
    return body
