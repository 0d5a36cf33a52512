"""The providers' own SDK types as oracles of wire shapes: what the fakes send, and what Parley sends upstream.

`anthropic` and `google-genai` are test dependencies only: Parley's hot path parses with orjson and a few type
checks per event (ARCHITECTURE.md, "Wire types"). Request params are TypedDicts (checked for required keys, types
and literals; nested lists are validated lazily by pydantic, so they are walked here); Gemini's types forbid
unknown fields, so they also catch a misspelled key.
"""

from __future__ import annotations

import typing
from typing import Any

from anthropic.types import ErrorResponse, Message, RawMessageStreamEvent
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming, MessageCreateParamsStreaming
from google.genai import types as genai
from openai.types.responses import Response, ResponseStreamEvent
from openai.types.responses.response_create_params import (
    ResponseCreateParamsNonStreaming,
    ResponseCreateParamsStreaming,
)
from pydantic import TypeAdapter

_ANTHROPIC_EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
_RESPONSES_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
_ANTHROPIC_REQUEST = {True: TypeAdapter(MessageCreateParamsStreaming),
                      False: TypeAdapter(MessageCreateParamsNonStreaming)}
_RESPONSES_REQUEST = {True: TypeAdapter(ResponseCreateParamsStreaming),
                      False: TypeAdapter(ResponseCreateParamsNonStreaming)}


def _walk(value: Any) -> Any:
    """Consume pydantic's lazy iterators (Iterable fields), so every nested element is validated."""
    if isinstance(value, dict):
        return {k: _walk(v) for k, v in value.items()}
    if isinstance(value, (str, bytes)):
        return value
    if isinstance(value, list | tuple) or type(value).__name__ == "ValidatorIterator":
        return [_walk(v) for v in value]
    return value


def _known_keys(body: dict[str, Any], typed: Any) -> None:
    unknown = set(body) - set(typing.get_type_hints(typed))
    assert not unknown, f"keys the SDK's request type does not have: {sorted(unknown)}"


def anthropic_request(body: dict[str, Any]) -> None:
    stream = bool(body.get("stream"))
    _known_keys(body, MessageCreateParamsStreaming if stream else MessageCreateParamsNonStreaming)
    _walk(_ANTHROPIC_REQUEST[stream].validate_python(body))


def anthropic_event(event: dict[str, Any]) -> None:
    """One stream event; `ping` (no fields) and `error` are outside the SDK's event union."""
    if event["type"] == "ping":
        assert event == {"type": "ping"}
    elif event["type"] == "error":
        ErrorResponse.model_validate({**event, "request_id": None})
    else:
        _ANTHROPIC_EVENT.validate_python(event)


def anthropic_message(body: dict[str, Any]) -> None:
    Message.model_validate(body)


def responses_request(body: dict[str, Any]) -> None:
    stream = bool(body.get("stream"))
    _known_keys(body, ResponseCreateParamsStreaming if stream else ResponseCreateParamsNonStreaming)
    _walk(_RESPONSES_REQUEST[stream].validate_python(body))


def responses_event(event: dict[str, Any]) -> None:
    _RESPONSES_EVENT.validate_python(event)


def responses_body(body: dict[str, Any]) -> None:
    Response.model_validate(body)


def gemini_request(body: dict[str, Any]) -> None:
    """The REST body of generateContent, part by part (the SDK has no one type for it; its parts forbid extras)."""
    assert set(body) <= {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig",
                         "safetySettings", "cachedContent"}, sorted(body)
    for content in body["contents"]:
        genai.Content.model_validate(content)
    if "systemInstruction" in body:
        genai.Content.model_validate(body["systemInstruction"])
    for tool in body.get("tools") or ():
        genai.Tool.model_validate(tool)
    if "toolConfig" in body:
        genai.ToolConfig.model_validate(body["toolConfig"])
    if "generationConfig" in body:
        genai.GenerationConfig.model_validate(body["generationConfig"])


def gemini_chunk(chunk: dict[str, Any]) -> None:
    genai.GenerateContentResponse.model_validate(chunk)
