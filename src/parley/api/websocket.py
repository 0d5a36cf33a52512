"""WebSocket mode on /v1/responses (api-surface.md §6.7; the SDK's `responses.connect()`, Codex's
`responses_websockets`): the Responses API over one long-lived connection.

A door like HTTP's (DESIGN.md "Front doors"): the upgrade is authenticated like a request (a bad key gets its
401 before any upgrade); each `response.create` is validated by the code that validates `POST /v1/responses`
and run by the same service (`prepare` -> `stream`, or `prepare_state` for `generate: false`); its events go
out one JSON object per text frame, numbered from 0 per response by the one stream builder. Errors are
`error` events and the socket stays open. What only this door has is connection-scoped: lanes
(api/ws_lanes.py), the memory of recent responses (api/ws_memory.py), steering (api/ws_steer.py) and the
connection's lifetime (`[websocket] max_connection_s`; then `websocket_connection_limit_reached` and a 1001
close, after which the SDK reconnects and a stored chain goes on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, cast

import orjson
from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send

from parley.api.http import parse_model, parse_object, request_id
from parley.api.runtime import Runtime
from parley.api.ws_frames import error_frame, event_frame
from parley.api.ws_lanes import Lanes
from parley.api.ws_memory import ConnectionMemory, MemorySource
from parley.api.ws_steer import Active, SteerDesk, parse_steer
from parley.engine.run import TERMINAL_EVENTS
from parley.engine.steering import Steering
from parley.engine.stream import Event
from parley.errors import InternalError, InvalidRequest, NotFound, ParleyError
from parley.log_context import set_request_id
from parley.schema.json_limits import check_json_numbers
from parley.schema.websocket import STREAM_ID, ResponseCreateEvent
from parley.services.keys import Caller
from parley.services.responses import PreparedResponse
from parley.services.usage import UsageOrigin

log = logging.getLogger("parley.api")

# What the SDK and Codex send: `type` first. Such a frame is parsed once, straight into the request model.
_CREATE = re.compile(rb'\s*\{\s*"type"\s*:\s*"response\.create"')


@dataclass(frozen=True, slots=True)
class Create:
    """A `response.create` on its lane: the request, or why it is invalid (answered in the lane's order)."""

    request: ResponseCreateEvent | None
    error: ParleyError | None
    stream_id: str | None


class LimitReached(ParleyError):
    def __init__(self, limit_s: float) -> None:
        super().__init__(f"This WebSocket connection reached its {limit_s:g} s limit; open a new connection to "
                         "continue.", None, "websocket_connection_limit_reached", 400, "invalid_request_error")


class ResponsesWebSocket:
    """The ASGI app of `websocket` scopes on /v1/responses."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = request_id()
        set_request_id(rid)  # the connection's log lines carry it
        http = HTTPConnection(scope)
        rt: Runtime = http.app.state.runtime
        if (await receive())["type"] != "websocket.connect":
            return
        try:
            caller = await rt.auth.caller_of(http)
            caller.check_project()
        except ParleyError as err:
            await deny(scope, send, err, rid)
            return
        await send({"type": "websocket.accept", "headers": [(b"x-request-id", rid.encode())]})
        await Connection(rt, http, receive, send).serve()


async def deny(scope: Scope, send: Send, err: ParleyError, rid: str) -> None:
    """Refuse the upgrade with an HTTP answer in the OpenAI error shape (ASGI's WebSocket denial response)."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    headers = [(b"content-type", b"application/json"), (b"x-request-id", rid.encode()),
               *((k.encode("latin-1"), v.encode("latin-1")) for k, v in err.headers.items())]
    await send({"type": "websocket.http.response.start", "status": err.status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": orjson.dumps(err.body())})


class Connection:
    """One accepted connection: reads client events, runs responses on their lanes, writes their frames."""

    def __init__(self, rt: Runtime, http: HTTPConnection, receive: Receive, send: Send) -> None:
        self._rt = rt
        self._http = http
        self._receive = receive
        self._asgi_send = send
        self._limits = rt.settings.websocket
        self.memory = ConnectionMemory(rt.store, self._limits.memory_responses)
        self._lanes: Lanes[Create] = Lanes(self._limits, self._respond)
        self._active: dict[str, Active] = {}
        self._steers = SteerDesk(rt.responses, self._active, self.memory, self._send)
        self._tasks: set[asyncio.Task[None]] = set()
        self.closing = False

    async def serve(self) -> None:
        expiry = asyncio.get_running_loop().call_later(self._limits.max_connection_s, self._expire)
        try:
            while True:
                message = await self._receive()
                if message["type"] != "websocket.receive":
                    return  # websocket.disconnect
                data = message.get("text")
                await self._dispatch(data.encode() if data is not None else message.get("bytes") or b"")
        finally:
            expiry.cancel()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._lanes.aclose()  # running responses are cancelled (and stored as such)

    async def _send(self, text: str) -> None:
        await self._asgi_send({"type": "websocket.send", "text": text})

    # -- client events -------------------------------------------------------------------------

    async def _dispatch(self, raw: bytes) -> None:
        try:
            if _CREATE.match(raw):
                await self._route(raw, None)
                return
            data = parse_object(raw)
            kind = data.get("type")
            if kind == "response.create":
                await self._route(raw, data)
            elif kind == "response.steer":
                check_json_numbers(raw)  # as parse_model does: orjson read 2**64 as a float, 2**64 - 1 as is
                self._spawn(self._steer(parse_steer(data)))
            else:
                raise InvalidRequest(f"Unsupported event type {str(kind)[:64]!r}: expected 'response.create' or "
                                     "'response.steer'.", param="type", code="invalid_value")
        except ParleyError as err:
            await self._send(error_frame(err))

    async def _route(self, raw: bytes, data: dict[str, Any] | None) -> None:
        """Onto its lane: the request, or its validation error (in the lane's order: a client reads a lane's
        answers in the order it sent its requests). A request that names no valid lane is answered at once."""
        try:
            work = Create(parse_model(ResponseCreateEvent, raw, self._rt.fields), None, None)
            stream_id = _stream_id({"stream_id": work.request.stream_id if work.request else None})
        except ParleyError as err:
            stream_id = _stream_id(data if data is not None else parse_object(raw))
            work = Create(None, err, None)
        try:
            self._lanes.submit(stream_id, Create(work.request, work.error, stream_id))
        except ParleyError as err:
            await self._send(error_frame(err, stream_id))

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _steer(self, event: Any) -> None:
        try:
            caller = await self._rt.auth.caller_of(self._http)
            await self._steers.handle(caller.project, event)
        except ParleyError as err:
            await self._send(error_frame(err))
        except OSError:
            pass  # the connection is gone

    # -- responses -----------------------------------------------------------------------------

    async def _respond(self, work: Create) -> None:
        """One response on its lane: an `error` event if it cannot start, else its events to the end."""
        request, stream_id = work.request, work.stream_id
        try:
            try:
                prepared, source = await self._prepare(work)
            except ParleyError as err:
                if request is not None and request.previous_response_id is not None:
                    self.memory.forget(request.previous_response_id)  # a failed continuation is not retried from it
                await self._send(error_frame(err, stream_id))
                return
            except Exception:
                log.exception("unhandled error preparing a WebSocket response")
                await self._send(error_frame(InternalError(), stream_id))
                return
            assert request is not None
            await self._stream(prepared, source, request, stream_id)
        except OSError:
            pass  # the connection broke while writing: the reader ends the connection
        except Exception:
            log.exception("unhandled error in a WebSocket response")  # the lane goes on with its next request

    async def _prepare(self, work: Create) -> tuple[PreparedResponse, MemorySource]:
        if work.error is not None:
            raise work.error
        if self.closing:
            raise LimitReached(self._limits.max_connection_s)
        request = work.request
        assert request is not None
        caller: Caller = await self._rt.auth.caller_of(self._http)  # a key revoked or expired meanwhile stops here
        project = caller.project
        if request.background:
            raise InvalidRequest("Background responses are not supported in WebSocket mode; use POST /v1/responses.",
                                 param="background", code="unsupported_value")
        scopes = self._rt.meter.scopes(caller)
        self._rt.limiter.admit(scopes)
        source = self.memory.source()
        if request.generates:
            prepared = await self._rt.responses.prepare(project, request, caller, UsageOrigin(caller, scopes), source)
        else:
            prepared = await self._rt.responses.prepare_state(project, request, caller, source)
        return prepared, source

    async def _stream(self, prepared: PreparedResponse, source: MemorySource, request: ResponseCreateEvent,
                      stream_id: str | None) -> None:
        response = prepared.response
        steering = None
        if prepared.run.steerable and request.conversation is None and not request.context_management:
            steering = prepared.run.steering = Steering(prepared.input_items.extend)
        active = Active(prepared, stream_id, steering)
        self._active[response["id"]] = active
        try:
            # A generator: closed here if a write fails, so the run is closed and stored as cancelled.
            stream = cast(AsyncGenerator[list[Event], None], self._rt.responses.stream(prepared))
            async with contextlib.aclosing(stream) as batches:
                async for batch in batches:
                    if batch[-1]["type"] in TERMINAL_EVENTS:
                        # Before the terminal event is sent: a continuation may follow it at once, on any lane.
                        self._settle(prepared, source, request)
                    for event in batch:
                        await self._send(event_frame(event, stream_id))
        finally:
            del self._active[response["id"]]
        await self._steers.left_over(active)

    def _settle(self, prepared: PreparedResponse, source: MemorySource, request: ResponseCreateEvent) -> None:
        response = prepared.response
        if response["status"] in ("completed", "incomplete"):
            source.remember(response["id"], prepared.project_id, prepared.input_items + response["output"],
                            stored=prepared.store)
        elif request.previous_response_id is not None:
            self.memory.forget(request.previous_response_id)

    # -- lifetime ------------------------------------------------------------------------------

    def _expire(self) -> None:
        self.closing = True
        self._spawn(self._close_when_idle())

    async def _close_when_idle(self) -> None:
        """The lifetime is over: say so, answer what waits with the same error, let running responses end, then
        close with 1001 (going away), on which the SDK reconnects."""
        with contextlib.suppress(OSError):
            await self._send(error_frame(LimitReached(self._limits.max_connection_s)))
            await self._lanes.wait_idle()
            await self._asgi_send({"type": "websocket.close", "code": 1001,
                                   "reason": "websocket_connection_limit_reached"})


def _stream_id(data: dict[str, Any]) -> str | None:
    """The lane a request names (None: the default lane); 400 invalid_stream_id if it is not a lane name."""
    value = data.get("stream_id")
    if value is None:
        return None
    if not isinstance(value, str) or STREAM_ID.fullmatch(value) is None:
        raise InvalidRequest("'stream_id' must be 1 to 64 letters, digits or '_', '-', '.', ':'.", param="stream_id",
                             code="invalid_stream_id")
    return value


async def unknown_url(scope: Scope, receive: Receive, send: Send) -> None:
    """A WebSocket upgrade on a path that has no WebSocket mode: 404 in the OpenAI shape, before any upgrade."""
    if (await receive())["type"] == "websocket.connect":
        rid = request_id()
        set_request_id(rid)
        await deny(scope, send, NotFound(f"Unknown request URL: WebSocket {scope['path']}.", code="unknown_url"),
                   rid)
