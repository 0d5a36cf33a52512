"""The Anthropic Messages API door: `POST /v1/messages` (also `?beta=true`) and `/v1/messages/count_tokens`.

A translation at the edge (DESIGN.md, "Front doors"): the body is validated as Anthropic's (schema/messages.py),
becomes the canonical request (api/messages_request.py), runs through the same responses service as
`POST /v1/responses` — keys (`x-api-key` or Bearer), rate limits, usage records, models and providers alike — and
the answer is rendered in Anthropic's framing (api/messages_stream.py, errors by api/messages_errors.py). Nothing
is stored: a Messages request is `store: false`; only its usage record is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import Response

from parley.api.http import Endpoint, SseResponse, json_response
from parley.api.messages_errors import anthropic_error, headers
from parley.api.messages_request import Translated, translate
from parley.api.messages_stream import MessageEvents, Rendering, error_event, message_from_response, message_id
from parley.api.responses import cancel_on_disconnect, served_headers
from parley.api.runtime import parse_body, runtime_of
from parley.engine.stream import sse_frame
from parley.errors import ParleyError
from parley.providers.routing import clear_served
from parley.schema.messages import CountTokensRequest, CreateMessageRequest
from parley.services.keys import Caller
from parley.services.responses import PreparedResponse, ResponsesService
from parley.services.usage import UsageOrigin

log = logging.getLogger("parley.messages")
Event = dict[str, Any]
# Anthropic's streams carry `ping`s; Claude Code aborts a stream silent for 3 minutes (its byte watchdog), which a
# local model reading Claude Code's ~50 KB prompt on a CPU can take before its first token.
PING_INTERVAL_S = 10.0
_PING = sse_frame({"type": "ping"})


async def _create_message(request: Request, rid: str) -> Response:
    clear_served()
    rt = runtime_of(request)
    caller = await rt.auth.caller_of(request)
    project = caller.project
    scopes = rt.meter.scopes(caller)
    limit_headers = headers(rid, rt.limiter.admit(scopes).headers)
    body = await parse_body(request, CreateMessageRequest)
    translated = translate(body)
    origin = UsageOrigin(caller, scopes)
    service = rt.responses
    if body.stream:
        prepared = await _prepare(service, project, translated, caller, origin)
        rendering = _rendering(prepared, translated)
        stream_headers = {k: v for k, v in limit_headers.items() if k != "x-request-id"}  # SseResponse sets it
        return SseResponse(_frames(service, prepared, rendering), rid, served_headers(stream_headers), end=b"")

    async def prepare_and_complete() -> dict[str, Any]:
        prepared = await _prepare(service, project, translated, caller, origin)
        return message_from_response(await service.complete(prepared), _rendering(prepared, translated))

    message = await cancel_on_disconnect(request, prepare_and_complete)
    return json_response(message, rid, headers=served_headers(limit_headers))


async def _count_tokens(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    caller = await rt.auth.caller_of(request)
    translated = translate(await parse_body(request, CountTokensRequest))
    try:
        counted = await rt.responses.input_tokens(caller.project, translated.request, caller)
    except ParleyError as err:
        raise translated.locate(err) from None
    return json_response({"input_tokens": counted["input_tokens"]}, rid, headers=headers(rid))


async def _prepare(service: ResponsesService, project: str, translated: Translated, caller: Caller,
                   origin: UsageOrigin) -> PreparedResponse:
    try:
        return await service.prepare(project, translated.request, caller, origin)
    except ParleyError as err:
        raise translated.locate(err) from None


def _rendering(prepared: PreparedResponse, translated: Translated) -> Rendering:
    return Rendering(message_id(prepared.response["id"]), translated.thinking, translated.thinking_text,
                     translated.stop_sequences)


async def _frames(service: ResponsesService, prepared: PreparedResponse,
                  rendering: Rendering) -> AsyncGenerator[bytes, None]:
    """The canonical stream rendered as Anthropic's events, one write per upstream read, with a `ping` whenever
    PING_INTERVAL_S pass without one. Reading stops when the message ended (a stop sequence ends it early: closing
    the stream closes the upstream call); a failure of the rendering itself ends the stream with an `error` event,
    never a cut."""
    events = MessageEvents(rendering)
    # An async generator (services/responses.py): closing it closes the run and stores what happened.
    batches = _pinged(cast(AsyncGenerator[list[Event], None], service.stream(prepared)), PING_INTERVAL_S)
    try:
        async for batch in batches:
            if batch is None:
                yield _PING
                continue
            try:
                out = [rendered for event in batch for rendered in events.feed(event)]
            except ParleyError as err:
                out, events.done = [error_event(err.message)], True
            if out:
                yield b"".join(sse_frame(event) for event in out)
            if events.done:
                return
    except Exception:
        log.exception("rendering message %s failed", rendering.message_id)
        yield sse_frame(error_event("The server had an error while processing your request."))
    finally:
        await batches.aclose()


async def _pinged(batches: AsyncGenerator[list[Event], None],
                  interval: float) -> AsyncGenerator[list[Event] | None, None]:
    """The batches, and None each time `interval` passes without one (a ping is due). The canonical stream runs in
    a task of its own, whole (its cancel scopes and timeouts must stay in one task); closing this cancels it,
    which closes the run as a client disconnect does."""
    queue: asyncio.Queue[list[Event] | BaseException | None] = asyncio.Queue(maxsize=1)

    async def produce() -> None:
        try:
            async for batch in batches:
                await queue.put(batch)
            await queue.put(None)
        except Exception as exc:  # handed to the reader, which raises it where the rendering is
            await queue.put(exc)
        finally:
            await batches.aclose()

    producer = asyncio.ensure_future(produce())
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), interval)
            except TimeoutError:
                yield None
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer


create_message = Endpoint(_create_message, anthropic_error)
count_tokens = Endpoint(_count_tokens, anthropic_error)
