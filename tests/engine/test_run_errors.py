"""A run that meets an unexpected exception (a bug, not a ParleyError) still ends: a streamed response with
`response.failed` and a generic message, a non-streamed one with an InternalError; the traceback is logged."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from parley.engine.run import ResponseRun
from parley.engine.stream import StreamBuilder
from parley.errors import InternalError
from parley.providers.base import ModelEvent, TextDelta
from parley.schema.requests import CreateResponseRequest
from parley.schema.response import new_response

EVENTS = TypeAdapter(ResponseStreamEvent)


class _BuggyStream:
    """One text delta, then an exception no provider should raise."""

    def __init__(self) -> None:
        self.closed = False

    def __aiter__(self) -> AsyncIterator[list[ModelEvent]]:
        return self._events()

    async def _events(self) -> AsyncIterator[list[ModelEvent]]:
        yield [TextDelta("par")]
        raise KeyError("secret-internal-detail")

    async def aclose(self) -> None:
        self.closed = True


def _builder(emit: bool) -> StreamBuilder:
    req = CreateResponseRequest(model="m", input="hi", stream=emit)
    response = new_response(req, response_id="resp_bug", model="m", status="in_progress", store=True)
    return StreamBuilder(response, emit=emit, obfuscate=False)


async def test_unexpected_error_mid_stream_fails_the_response(caplog: pytest.LogCaptureFixture) -> None:
    builder = _builder(emit=True)
    run = ResponseRun(builder, _BuggyStream())
    with caplog.at_level(logging.ERROR):
        events: list[dict[str, Any]] = [event async for event in run.events()]
    for event in events:
        EVENTS.validate_python(event)
    assert events[-1]["type"] == "response.failed" and run.finished
    error = builder.response["error"]
    assert error == {"code": "server_error", "message": InternalError().message}
    assert builder.response["output"][0]["status"] == "incomplete"
    Response.model_validate(builder.response)
    logged = [r for r in caplog.records if r.name == "parley.engine"]
    assert len(logged) == 1 and logged[0].exc_info is not None and "resp_bug" in logged[0].getMessage()


async def test_unexpected_error_without_emit_is_an_internal_error() -> None:
    run = ResponseRun(_builder(emit=False), _BuggyStream())
    with pytest.raises(InternalError) as info:
        async for _ in run.events():
            pass
    assert info.value.status == 500 and "secret-internal-detail" not in info.value.message
