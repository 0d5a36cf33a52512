"""Canonical model call -> a native Responses API request (OpenAI, Azure OpenAI, any `/v1/responses` server).

Parley keeps the state: the upstream gets the whole context every turn with `store: false` (no
`previous_response_id`, no conversation, never `background`), and `include: ["reasoning.encrypted_content"]`
so its reasoning items come back whole and can be returned to it unchanged on the next turn
(https://platform.openai.com/docs/guides/reasoning#encrypted-reasoning-items). Parley's own item ids are not
sent (the upstream stored none of them); the upstream's reasoning and hosted-tool items go back verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parley.providers.base import Item, ModelCall
from parley.providers.hosted_input import INPUT_FIELDS, hosted_items, resent_item
from parley.providers.native_items import (
    call_arguments,
    file_text,
    image_url,
    unsupported_item,
    unsupported_part,
    upstream_call_name,
    upstream_state,
)
from parley.providers.native_profiles import NativeProfile
from parley.providers.prefix_memo import PrefixMemo

KIND = "openai_responses"
_MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})


def _part(part: dict[str, Any], path: str, profile: NativeProfile) -> dict[str, Any]:
    kind = part["type"]
    if kind in ("input_text", "output_text"):
        # Annotations may name Parley's own files, which the upstream does not have: text only.
        return {"type": kind, "text": part["text"], **({"annotations": []} if kind == "output_text" else {})}
    if kind == "refusal":
        return {"type": "refusal", "refusal": part["refusal"]}
    if kind == "input_image":
        return {"type": "input_image", "image_url": image_url(part, path, profile.vision),
                "detail": part.get("detail", "auto")}
    if kind == "input_file" and "text" in part:  # resolved by services/file_inputs.py
        if profile.files:
            return {"type": "input_file", "filename": part["filename"], "file_data": part["file_data"]}
        return {"type": "input_text", "text": file_text(part)}
    raise unsupported_part(kind, path)


def _output(output: Any, path: str, profile: NativeProfile) -> Any:
    if isinstance(output, str):
        return output
    return [_part(p, f"{path}[{i}]", profile) for i, p in enumerate(output)]


def _item(item: Item, path: str, call: ModelCall, profile: NativeProfile) -> dict[str, Any] | None:
    kind = item["type"]
    if kind == "message":
        role = item["role"]
        if role not in _MESSAGE_ROLES:
            raise unsupported_item(kind, path)
        content = [_part(p, f"{path}.content[{i}]", profile) for i, p in enumerate(item["content"])]
        if role == "assistant":
            # An output message without the id the upstream never stored is an "easy" input message, whose content
            # is text (output_text parts need an id and a status: openai's ResponseOutputMessageParam).
            text = "".join(p.get("text") or p.get("refusal") or "" for p in content)
            return {"type": "message", "role": role, "content": text}
        return {"type": "message", "role": role, "content": content}
    if kind in ("function_call", "custom_tool_call"):
        namespace = item.get("namespace")
        if namespace and namespace != item["name"] and _namespaced(call):  # sent in its namespace (_tools)
            return {"type": "function_call", "call_id": item["call_id"], "name": item["name"],
                    "namespace": namespace, "arguments": call_arguments(item)}
        return {"type": "function_call", "call_id": item["call_id"], "name": upstream_call_name(item),
                "arguments": call_arguments(item)}
    if kind in ("function_call_output", "custom_tool_call_output"):
        return {"type": "function_call_output", "call_id": item["call_id"],
                "output": _output(item["output"], f"{path}.output", profile)}
    state = upstream_state(item, KIND, call.upstream_model)
    if state is not None:  # the upstream's own reasoning or hosted-tool item, as it gave it
        upstream_item: dict[str, Any] = state["item"]
        return upstream_item
    if kind == "reasoning" or "upstream" in item:
        return None  # another upstream's state (or none): the visible turn is what this one gets
    if kind in INPUT_FIELDS and hosted_items(call.hosted_tools)(item):
        resent = resent_item(item)  # a client's copy of this upstream's hosted item (store:false; tools/replay.py)
        if "approval_request_id" in resent:  # an MCP approval's answer or call: the upstream names it by its own id
            resent["approval_request_id"] = _upstream_request_id(call, resent["approval_request_id"])
        return resent
    raise unsupported_item(kind, path)


def _upstream_request_id(call: ModelCall, request_id: Any) -> Any:
    """The upstream's id of the approval request the client knows as `request_id` (Parley's id of a hosted
    mcp_approval_request the context holds with its upstream state); else `request_id` as it is (a client's copy
    of the request goes with that id)."""
    for item in call.items:
        if item["type"] == "mcp_approval_request" and item["id"] == request_id:
            upstream = upstream_state(item, KIND, call.upstream_model)
            return upstream["item"].get("id", request_id) if upstream is not None else request_id
    return request_id


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "function", "name": tool["name"],
                           "parameters": tool.get("parameters") or {"type": "object", "properties": {}}}
    if tool.get("description") is not None:
        out["description"] = tool["description"]
    # A client tool says `strict` (null: the client left it out, so the upstream's default applies, as it would
    # for the client); Parley's own tool functions carry no key and are not strict (Responses defaults to strict).
    out["strict"] = tool["strict"] if "strict" in tool else False
    if tool.get("defer_loading") is True:  # for the upstream's own tool_search (hosted_tools)
        out["defer_loading"] = True
    return out


def _namespaced(call: ModelCall) -> bool:
    """Whether namespace members go as `namespace` tools (and their calls name their namespace): to an upstream
    hosting tool_search, which searches and loads namespaces (schema/tools.py ToolSet.offered marks them)."""
    return any(hosted.entry.get("type") == "tool_search" for hosted in call.hosted_tools)


def _tools(call: ModelCall) -> list[dict[str, Any]]:
    """The functions, namespace members grouped into their `namespace` tool (in the order of its first member)."""
    out: list[dict[str, Any]] = []
    groups: dict[str, dict[str, Any]] = {}
    for tool in call.tools:
        space = tool.get("namespace")
        if space is None:
            out.append(_tool(tool))
            continue
        group = groups.get(space["name"])
        if group is None:
            group = groups[space["name"]] = {"type": "namespace", "name": space["name"],
                                             "description": space["description"], "tools": []}
            out.append(group)
        group["tools"].append({**_tool(tool), "name": space["member"]})
    return out


def _tool_choice(call: ModelCall) -> str | dict[str, Any] | None:
    choice = call.tool_choice
    if not isinstance(choice, dict) or choice.get("type") == "mcp":  # mcp: a server the upstream hosts, as sent
        return choice
    for hosted in call.hosted_tools:  # a forced hosted tool: the only tool allowed, and a call required
        if hosted.name == choice.get("name"):
            return {"type": "allowed_tools", "mode": "required", "tools": [{"type": hosted.entry["type"]}]}
    return {"type": "function", "name": choice["name"]}


def _include(call: ModelCall) -> list[str]:
    include = ["reasoning.encrypted_content"]
    if call.logprobs:
        include.append("message.output_text.logprobs")
    if any(h.entry.get("type", "").startswith("web_search") for h in call.hosted_tools):
        include.append("web_search_call.action.sources")  # stored with the item; shown as the client's include says
    return include


@dataclass(frozen=True, slots=True)
class ResponsesInput:
    """A call's translated `input`, as a PrefixMemo keeps it (providers/prefix_memo.py), with the upstream model it
    was made for (an upstream's own reasoning and hosted-tool items go back only to the model that made them)."""

    upstream_model: str
    items: tuple[dict[str, Any], ...]


def responses_input(call: ModelCall, profile: NativeProfile,
                    memo: PrefixMemo[ResponsesInput] | None = None) -> list[dict[str, Any]]:
    """The `input` of `call`. With a `memo` (one per configured model: the translation depends on its profile), a
    call that extends one translated before is translated only from its first new item on (each item is translated
    alone, so the prefix's items are reused as they are)."""
    hit = memo.find(call.items, lambda made: made.upstream_model == call.upstream_model) if memo is not None else None
    translated, start = (list(hit.state.items), hit.start) if hit is not None else ([], 0)
    for index in range(start, len(call.items)):
        item = _item(call.items[index], f"input[{index}]", call, profile)
        if item is not None:
            translated.append(item)
    if memo is not None:
        memo.put(call.items, ResponsesInput(call.upstream_model, tuple(translated)), hit, call.continuable)
    return translated


def responses_body(call: ModelCall, profile: NativeProfile,
                   memo: PrefixMemo[ResponsesInput] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": call.upstream_model,
        "input": responses_input(call, profile, memo),
        "stream": call.stream,
        "store": False,
        "include": _include(call),
    }
    optional = {
        "instructions": call.instructions,
        "temperature": call.temperature,
        "top_p": call.top_p,
        "max_output_tokens": call.max_output_tokens,
        "top_logprobs": call.top_logprobs if call.logprobs else None,
        "parallel_tool_calls": call.parallel_tool_calls,
        "safety_identifier": call.safety_identifier,
        "user": call.user,
        "prompt_cache_key": call.prompt_cache_key,
        "service_tier": call.service_tier,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    tools = _tools(call) + [dict(h.entry) for h in call.hosted_tools]
    if tools:
        body["tools"] = tools
        choice = _tool_choice(call)
        if choice is not None:
            body["tool_choice"] = choice
    reasoning = {k: v for k, v in (("effort", call.reasoning_effort), ("summary", call.reasoning_summary)) if v}
    if reasoning:
        body["reasoning"] = reasoning
    if call.text_format and call.text_format.get("type") != "text":
        body["text"] = {"format": call.text_format}
    return body
