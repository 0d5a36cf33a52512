"""`response.steer` on a WebSocket connection: input for a response running on it.

Parley commits steering where the engine asks the model again within the response: a response in a tool loop
(it declared built-in tools), before its next model turn (engine/steering.py). There the input is accepted
(`response.steer.accepted`) and joins the next turn, after the tool results; it is stored with the response's
input items. Everything else is `response.steer.failed` with the SDK's codes: `response_not_found` (not
running on this connection), `response_already_completed` (it ended, or ended before a next turn took the
input), `response_not_active` (its last model turn is running), `steering_not_supported` (no built-in tools,
or bound to a conversation or to automatic compaction), `invalid_input`, `too_many_pending_steers`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from parley.api.ws_frames import steer_accepted_frame, steer_echo, steer_failed_frame
from parley.api.ws_memory import ConnectionMemory
from parley.engine.steering import Steering, SteerInput
from parley.errors import InvalidRequest
from parley.ids import new_id
from parley.schema.websocket import SteerEvent
from parley.services.responses import PreparedResponse, ResponsesService

Send = Callable[[str], Awaitable[None]]


@dataclass(slots=True)
class Active:
    """A response running on the connection, as steering sees it."""

    prepared: PreparedResponse
    stream_id: str | None
    steering: Steering | None  # None: it cannot be steered (steering_not_supported)


class SteerDesk:
    """Answers the connection's `response.steer` events; its events are numbered by the connection."""

    def __init__(self, responses: ResponsesService, active: dict[str, Active], memory: ConnectionMemory,
                 send: Send) -> None:
        self._responses = responses
        self._active = active
        self._memory = memory
        self._send = send
        self._sequence = 0

    def _next(self) -> int:
        self._sequence += 1
        return self._sequence - 1

    async def handle(self, project_id: str, event: SteerEvent) -> None:
        target = event.previous_response_id
        active = self._active.get(target)
        problem = self._why_not(target, active)
        if problem is not None:
            await self._fail(problem[0], problem[1], steer_echo(event.input, target, None), active)
            return
        try:
            stored, model = await self._responses.steering_input(project_id, event.input)
        except InvalidRequest as err:
            await self._fail("invalid_input", err.message, steer_echo(event.input, target, None), active)
            return
        active = self._active.get(target)  # the response may have moved on while the files were read
        problem = self._why_not(target, active)
        steer = SteerInput(new_id("steer"), stored, model, event.input)
        if problem is None and active is not None and active.steering is not None:
            if not active.steering.offer(steer):
                problem = ("too_many_pending_steers", "Too much steering input is pending for this response.")
        if problem is not None:
            await self._fail(problem[0], problem[1], steer_echo(event.input, target, None), active)
            return
        assert active is not None
        await self._send(steer_accepted_frame(self._next(), steer.steer_id, target, active.stream_id))

    def _why_not(self, target: str, active: Active | None) -> tuple[str, str] | None:
        if active is None:
            if target in self._memory:
                return "response_already_completed", f"Response '{target}' has completed."
            return "response_not_found", f"Response '{target}' is not running on this connection."
        if active.steering is None:
            return ("steering_not_supported", "Only a response with built-in tools, not bound to a conversation "
                    "or to automatic compaction, can be steered: input joins its next model turn.")
        if not active.steering.open or not active.prepared.run.steerable:
            return "response_not_active", f"Response '{target}' has no model turn left to take more input."
        return None

    async def _fail(self, code: str, message: str, steer: dict[str, Any], active: Active | None) -> None:
        stream_id = active.stream_id if active is not None else None
        await self._send(steer_failed_frame(self._next(), code, message, steer, stream_id))

    async def left_over(self, active: Active) -> None:
        """The response ended: steering input it never took is returned."""
        if active.steering is None:
            return
        response_id = active.prepared.response["id"]
        for steer in active.steering.close():
            echo = steer_echo(steer.sent, response_id, steer.steer_id)
            await self._fail("response_already_completed", f"Response '{response_id}' ended before a next model "
                             "turn could take this input.", echo, active)


def parse_steer(data: dict[str, Any]) -> SteerEvent:
    """The event, or a 400 naming what is wrong with it (sent as an `error` event: without `previous_response_id`
    and `input` there is nothing a `response.steer.failed` could return)."""
    try:
        return SteerEvent.model_validate(data)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidRequest(f"Invalid response.steer event: {first['msg']}.", param=param) from None
