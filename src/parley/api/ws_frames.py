"""WebSocket mode's server frames: one JSON object per text frame (the SDK's `ResponsesServerEvent`).

Response events are the streaming events as the one stream builder made them, with the request's `stream_id`
added when it had one. Errors are `error` events carrying the HTTP status and the one error body
(`ParleyError.body()`, as api/http.py renders it for HTTP). Steering events are the connection's own
acknowledgements, numbered by the connection (they are not part of a response's event stream, whose numbers
the builder owns).
"""

from __future__ import annotations

from typing import Any

import orjson

from parley.errors import ParleyError
from parley.providers.base import Item


def event_frame(event: dict[str, Any], stream_id: str | None) -> str:
    data = orjson.dumps(event)
    if stream_id is not None:
        # The builder's event is not copied to add one key: the JSON object is extended in place.
        data = data[:-1] + b',"stream_id":' + orjson.dumps(stream_id) + b"}"
    return data.decode()


def error_frame(err: ParleyError, stream_id: str | None = None) -> str:
    """`{type: "error", status, error: {type, code, message, param[, headers]}}`; the socket stays open."""
    error: dict[str, Any] = dict(err.body()["error"])
    if err.headers:
        error["headers"] = err.headers
    event: dict[str, Any] = {"type": "error", "status": err.status, "error": error}
    if stream_id is not None:
        event["stream_id"] = stream_id
    return orjson.dumps(event).decode()


def steer_accepted_frame(sequence: int, steer_id: str, response_id: str, stream_id: str | None) -> str:
    event = {"type": "response.steer.accepted", "sequence_number": sequence,
             "steer": {"id": steer_id, "previous_response_id": response_id}}
    return event_frame(event, stream_id)


def steer_failed_frame(sequence: int, code: str, message: str, steer: dict[str, Any], stream_id: str | None) -> str:
    """`steer`: `{input, previous_response_id[, id]}` as the client sent it (the input is returned uncommitted)."""
    event = {"type": "response.steer.failed", "sequence_number": sequence, "steer": steer,
             "error": {"type": "invalid_request_error", "code": code, "message": message}}
    return event_frame(event, stream_id)


def steer_echo(raw_input: str | list[Item], response_id: str, steer_id: str | None) -> dict[str, Any]:
    steer: dict[str, Any] = {"input": raw_input, "previous_response_id": response_id}
    if steer_id is not None:
        steer["id"] = steer_id
    return steer
