"""The Response object (api-surface.md §5): every key always present, request values echoed with defaults."""

from __future__ import annotations

import time
from typing import Any

from parley.schema.requests import CreateResponseRequest

Response = dict[str, Any]


def _tool_echo(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") == "function":
        # OR requires these keys on function tools (nullable); OpenAI echoes them too.
        return {"description": None, "parameters": None, "strict": None, **tool}
    return tool


def _text_echo(req: CreateResponseRequest) -> dict[str, Any]:
    fmt: dict[str, Any] = {"type": "text"}
    verbosity = "medium"
    if req.text is not None:
        if req.text.format is not None:
            fmt = req.text.format.model_dump(by_alias=True, exclude_none=True)
            if fmt["type"] == "json_schema":
                fmt.setdefault("description", None)
                fmt.setdefault("strict", None)
        verbosity = req.text.verbosity or verbosity
    return {"format": fmt, "verbosity": verbosity}


def _tool_choice_echo(req: CreateResponseRequest) -> str | dict[str, Any]:
    choice = req.tool_choice
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        return choice
    return choice.model_dump(exclude_none=True)


def _reasoning_echo(req: CreateResponseRequest) -> dict[str, Any]:
    if req.reasoning is None:
        return {"effort": None, "summary": None}
    data = req.reasoning.model_dump(exclude_none=True)
    data.setdefault("effort", None)
    data.setdefault("summary", data.get("generate_summary"))
    return data


def new_response(
    req: CreateResponseRequest, *, response_id: str, model: str, status: str, store: bool
) -> Response:
    """The response snapshot at `response.created`: output empty, usage null."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "background": bool(req.background),
        "completed_at": None,
        "conversation": {"id": req.conversation_id} if req.conversation_id else None,
        "error": None,
        "incomplete_details": None,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "max_tool_calls": req.max_tool_calls,
        "metadata": req.metadata or {},
        "model": model,
        "output": [],
        "parallel_tool_calls": True if req.parallel_tool_calls is None else req.parallel_tool_calls,
        "presence_penalty": req.presence_penalty if req.presence_penalty is not None else 0.0,
        "frequency_penalty": req.frequency_penalty if req.frequency_penalty is not None else 0.0,
        "previous_response_id": req.previous_response_id,
        "prompt": req.prompt.model_dump(exclude_none=True) if req.prompt else None,
        "prompt_cache_key": req.prompt_cache_key,
        "prompt_cache_options": (req.prompt_cache_options.model_dump(exclude={"prewarm"}) if req.prompt_cache_options
                                 else None),
        "prompt_cache_retention": req.prompt_cache_retention,
        "reasoning": _reasoning_echo(req),
        "safety_identifier": req.safety_identifier,
        "service_tier": "default" if req.service_tier in (None, "auto") else req.service_tier,
        "store": store,
        "temperature": req.temperature if req.temperature is not None else 1.0,
        "text": _text_echo(req),
        "tool_choice": _tool_choice_echo(req),
        "tools": [_tool_echo(t) for t in req.tools or ()],
        "top_logprobs": req.top_logprobs if req.top_logprobs is not None else 0,
        "top_p": req.top_p if req.top_p is not None else 1.0,
        "truncation": req.truncation or "disabled",
        "usage": None,
        "user": req.user,
    }
