"""Strict checks of the Anthropic Messages wire, for tests of a server speaking it (Parley's /v1/messages).

Every object is validated against the `anthropic` SDK's own types in pydantic's strict mode, and no object may
carry a key its SDK type does not declare (the SDK's models accept extras, so plain validation would not notice);
the keys Anthropic's API always sends (`stop_sequence: null`, the cache counts of `usage`, ...) must be present.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
from anthropic import AsyncAnthropic
from anthropic.types import Message, MessageTokensCount, ModelInfo, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from pydantic import BaseModel, TypeAdapter

MESSAGE_KEYS = frozenset({"id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"})
USAGE_KEYS = frozenset({"input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"})
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
               504: "timeout_error", 529: "overloaded_error"}
_EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)


def _no_extras(model: Any, path: str = "$") -> None:
    if isinstance(model, BaseModel):
        extra = model.model_extra or {}
        assert not extra, f"{path} has keys its SDK type lacks: {sorted(extra)}"
        for name in type(model).model_fields:
            _no_extras(getattr(model, name), f"{path}.{name}")
    elif isinstance(model, list):
        for index, value in enumerate(model):
            _no_extras(value, f"{path}[{index}]")


def check_message(raw: dict[str, Any]) -> Message:
    """A `Message` as a non-streamed create answers it (or a stream's message_start carries it)."""
    assert MESSAGE_KEYS <= raw.keys(), f"Message lacks {sorted(MESSAGE_KEYS - raw.keys())}"
    assert USAGE_KEYS <= raw["usage"].keys(), raw["usage"]
    assert raw["id"].startswith("msg_"), raw["id"]
    message = Message.model_validate(raw, strict=True)
    _no_extras(message)
    return message


def check_event(raw: dict[str, Any]) -> Any:
    """One stream event other than `ping` and `error`: the SDK's RawMessageStreamEvent union."""
    parsed = _EVENT.validate_python(raw, strict=True)
    assert parsed.type == raw["type"]
    _no_extras(parsed)
    if raw["type"] == "message_start":
        check_message(raw["message"])
    return parsed


def check_error(raw: dict[str, Any], status: int) -> dict[str, Any]:
    """`{"type": "error", "error": {"type", "message"}, "request_id"}` with the type Anthropic gives `status`."""
    assert set(raw) == {"type", "error", "request_id"}, raw
    assert set(raw["error"]) == {"type", "message"}, raw
    assert raw["error"]["type"] == ERROR_TYPES[status], (status, raw)
    assert raw["error"]["message"] and "Traceback" not in raw["error"]["message"]
    if raw["error"]["type"] != "request_too_large":  # documented, but not (yet) in the SDK's union
        _no_extras(ErrorResponse.model_validate(raw, strict=True))
    error: dict[str, Any] = raw["error"]
    return error


def check_count(raw: dict[str, Any]) -> int:
    assert set(raw) == {"input_tokens"}, raw
    return MessageTokensCount.model_validate(raw, strict=True).input_tokens


def check_model(raw: dict[str, Any]) -> ModelInfo:
    # created_at is an RFC 3339 string on the wire; strict mode would want a datetime object.
    model = ModelInfo.model_validate(raw)
    _no_extras(model)
    return model


def sse_events(body: bytes) -> list[dict[str, Any]]:
    """Anthropic's framing: `event: <type>` then `data: <json>` whose `type` is the same, no `[DONE]`."""
    text = body.decode()
    assert "\r" not in text and text.endswith("\n\n"), text[-200:]
    events: list[dict[str, Any]] = []
    for block in text[:-2].split("\n\n"):
        lines = block.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        data: dict[str, Any] = json.loads(lines[1][len("data: "):])
        assert lines[0][len("event: "):] == data["type"], block
        events.append(data)
    return events


def check_stream(events: list[dict[str, Any]]) -> None:
    """The event order of a successful stream: message_start, ping, blocks (each start, deltas, stop, numbered
    from 0 and never interleaved; pings anywhere), message_delta, message_stop; every event strictly valid."""
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["message_start", "ping"], kinds
    assert kinds[-2:] == ["message_delta", "message_stop"], kinds
    assert "error" not in kinds, kinds
    open_index: int | None = None
    next_index = 0
    for event in events[2:-2]:
        if event["type"] == "ping":  # Anthropic's keep-alive: anywhere
            continue
        check_event(event)
        if event["type"] == "content_block_start":
            assert open_index is None and event["index"] == next_index, kinds
            open_index, next_index = event["index"], next_index + 1
        elif event["type"] == "content_block_delta":
            assert event["index"] == open_index, kinds
        elif event["type"] == "content_block_stop":
            assert event["index"] == open_index, kinds
            open_index = None
        else:
            raise AssertionError(f"unexpected {event['type']} between message_start and message_delta")
    assert open_index is None
    check_event(events[0])
    check_event(events[-2])
    assert USAGE_KEYS <= events[-2]["usage"].keys()
    check_event(events[-1])


def anthropic_client(app: Any, api_key: str = "local") -> AsyncAnthropic:
    """The official async SDK against an in-process app (httpx2's ASGI transport: the SDK's own HTTP client)."""
    transport = httpx2.ASGITransport(app=app)
    return AsyncAnthropic(base_url="http://parley", api_key=api_key, max_retries=0,
                          http_client=httpx2.AsyncClient(transport=transport, base_url="http://parley"))
