"""HTTP plumbing shared by every endpoint: JSON bodies, the one error rendering, query parsing, SSE framing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from parley.api.body_coding import BodyLimit, body_decoder
from parley.api.http_protocol import exchange_of
from parley.engine.stream import sse_frame
from parley.errors import InternalError, InvalidRequest, ParleyError, PayloadTooLarge, RequestTimeout
from parley.ids import random_hex
from parley.log_context import set_request_id
from parley.schema.json_limits import INT_MAX, check_json_numbers
from parley.schema.requests import cross_field_param, most_specific, param_from_loc
from parley.store.base import PageQuery
from parley.telemetry.observe import Telemetry

log = logging.getLogger("parley.api")
M = TypeVar("M", bound=BaseModel)

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def request_id() -> str:
    return "req_" + random_hex(32)


class JsonResponse(Response):
    """A JSON body with its headers built directly (Starlette's header initialisation is generic and
    measurable per request)."""

    def __init__(self, body: bytes, status: int, headers: dict[str, str]) -> None:
        self.status_code = status
        self.body = body
        self.background = None
        self.raw_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()),
        ]


def json_response(body: Any, rid: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """`headers`: more headers (a rate-limited endpoint's x-ratelimit-*)."""
    return JsonResponse(orjson.dumps(body), status, {"x-request-id": rid, **headers} if headers else
                        {"x-request-id": rid})


def error_response(err: ParleyError, rid: str) -> Response:
    """The one place an error becomes an HTTP body (DESIGN.md §5)."""
    return JsonResponse(orjson.dumps(err.body()), err.status, {"x-request-id": rid, **err.headers})


ErrorRenderer = Callable[[Request, ParleyError, str], Response]


def _openai_error(request: Request, err: ParleyError, rid: str) -> Response:
    return error_response(err, rid)


class ClientGoneError(Exception):
    """Raised by a handler whose client disconnected before the response was ready; nothing is sent."""


class Endpoint:
    """A handler as a plain ASGI app: request id, ParleyError -> OpenAI error body, anything else -> an
    opaque 500. Being an object (not a function), Starlette's router calls it directly, without its
    per-request exception-handling wrapper (measured on the hot path, bench/README.md). With metrics or
    tracing on, the app's telemetry sees each request: its route, status and duration, and its trace context."""

    def __init__(self, handler: Callable[[Request, str], Awaitable[Response]],
                 render: ErrorRenderer | None = None) -> None:
        self.handler = handler
        # How errors become bodies: OpenAI's shape, or another door's (api/messages_errors.py).
        self.render: ErrorRenderer = render or _openai_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        telemetry: Telemetry = scope["app"].state.runtime.telemetry
        if not telemetry.enabled:
            await self._serve(scope, receive, send)
            return
        observation = telemetry.request_started(scope)
        status = 500
        try:
            status = await self._serve(scope, receive, send)
        finally:
            telemetry.request_ended(observation, scope, status)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Answer the request; the HTTP status sent (499: the client went away before an answer was ready)."""
        request = Request(scope, receive, send)
        rid = request_id()
        set_request_id(rid)  # for log lines below this request (parley/log_context.py)
        try:
            response = await self.handler(request, rid)
        except ClientGoneError:
            return 499  # the client disconnected: there is nobody to answer
        except ParleyError as err:
            response = self.render(request, err, rid)
        except Exception:
            log.exception("unhandled error in %s %s (request %s)", request.method, request.url.path, rid)
            response = self.render(request, InternalError(), rid)
        await response(scope, receive, send)
        status: int = getattr(response, "status_code", 200)  # SseResponse: 200, sent with its first bytes
        return status


def endpoint(handler: Callable[[Request, str], Awaitable[Response]]) -> Endpoint:
    return Endpoint(handler)


async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The whole body, at most `limit` bytes (413 beyond), within `timeout_s` (408 after: a client sending
    slowly must not hold the request open). A client that disconnects mid-body ends the request quietly.
    A body that has already arrived whole (the usual case: it came with the headers) has nothing to wait
    for, so no deadline is set up for it. A body sent with `Content-Encoding: gzip` or `deflate` is decoded,
    within the same limit (api/body_coding.py); another coding is a 415 before the body is read."""
    headers = request.headers
    declared = headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.")
    coding = headers.get("content-encoding")
    decoder = None if coding is None else body_decoder(
        coding, BodyLimit(limit, f"Request body is larger than the limit of {limit} bytes."))
    body = await _timed_body(request, limit, timeout_s)
    if decoder is None:
        return body
    decoded = decoder.decode(body)
    decoder.end()
    return decoded


async def _timed_body(request: Request, limit: int, timeout_s: float | None) -> bytes:
    exchange = exchange_of(request.scope)
    if timeout_s is None or (exchange is not None and exchange.body_received):
        return await _read_body(request, limit)
    try:
        async with asyncio.timeout(timeout_s):
            return await _read_body(request, limit)
    except TimeoutError:
        raise RequestTimeout(f"The request body was not received within {timeout_s:g} seconds.") from None


async def _read_body(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGoneError from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class FieldPolicy:
    """What happens to top-level body fields Parley does not know (`unknown_fields` in the settings):
    `ignore` (the default: clients newer than the server keep working; each name is logged once at warning
    level) or `reject` (400 `unknown_parameter` naming the field, as OpenAI answers)."""

    def __init__(self, reject: bool) -> None:
        self.reject = reject
        self._logged: set[str] = set()

    def unknown(self, model: BaseModel) -> None:
        extra = model.__pydantic_extra__
        if not extra:
            return
        names = sorted(extra)
        extra.clear()  # never reaches the service (nor a stored background request)
        if self.reject:
            raise InvalidRequest(f"Unknown parameter: '{names[0]}'.", param=names[0], code="unknown_parameter")
        fresh = [name for name in names if name not in self._logged]
        if fresh and len(self._logged) < 1000:
            self._logged.update(fresh)
            log.warning("ignoring unknown request field(s) %s (set unknown_fields = \"reject\" to refuse them)",
                        ", ".join(repr(name[:64]) for name in fresh))


def parse_model(model: type[M], body: bytes, fields: FieldPolicy | None = None) -> M:
    """Validate a JSON body into `model`: every failure is a 400 naming the parameter. Numbers no later step
    can carry (NaN, Infinity, 1e999, integers beyond 64 bits) are refused first (schema/json_limits.py)."""
    if not body.strip():
        raise InvalidRequest("The request body is empty; expected a JSON object.", code="invalid_json")
    check_json_numbers(body)
    try:
        parsed = model.model_validate_json(body)
    except ValidationError as err:
        raise _invalid(err, body) from None
    if fields is not None:
        fields.unknown(parsed)
    return parsed


class _JsonObject(BaseModel):
    """Any JSON object (parse_object's errors are parse_model's)."""

    model_config = ConfigDict(extra="allow")


def parse_object(body: bytes) -> dict[str, Any]:
    """A body that must be one JSON object, as data, before anything says which model it is (a WebSocket frame,
    whose `type` picks it): the errors are parse_model's for the same bytes, so a lone surrogate, NaN or 1e999
    (which orjson refuses) is named where it is, as over HTTP, not a bare invalid_json."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        parse_model(_JsonObject, body)  # raises what the HTTP door answers for these bytes
        data = _loads(body)  # (accepted there though orjson refuses it: none is known)
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    return data


def _invalid(err: ValidationError, body: bytes) -> InvalidRequest:
    first = most_specific(err)
    if first["type"] == "json_invalid":
        reason = str((first.get("ctx") or {}).get("error", ""))
        if reason.startswith("recursion limit exceeded"):  # valid JSON, deeper than the parser goes
            return InvalidRequest(f"The JSON body is nested too deeply to be read ({reason}).", code="invalid_json")
        return InvalidRequest(
            "We could not parse the JSON body of your request. The body must be valid JSON.", code="invalid_json"
        )
    if first["type"] == "model_type" and not first["loc"]:
        return InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    cause = (first.get("ctx") or {}).get("error")
    param = cross_field_param(cause) if cause is not None else None
    if param is not None:
        return InvalidRequest(str(cause), param=param)
    param = param_from_loc(first["loc"], _loads(body), missing=first["type"] == "missing")
    message = first["msg"]
    return InvalidRequest(f"Invalid value for '{param}': {message}." if param else message, param=param)


def _loads(body: bytes) -> Any:
    """The body as data, for naming a parameter: it parsed as JSON already, but orjson is stricter than
    pydantic's parser (lone surrogates), so fall back to the standard library."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            return None


def query_bool(request: Request, name: str, default: bool = False) -> bool:
    """`true`/`false` (any case; also 1/0); anything else is a 400 naming the parameter."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    value = raw.lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise InvalidRequest(f"Invalid value for '{name}': expected 'true' or 'false'.", param=name)


_INTEGER = re.compile(r"-?[0-9]{1,19}")


def query_int(request: Request, name: str, default: int, minimum: int = 0, maximum: int = INT_MAX) -> int:
    """An integer query parameter within [minimum, maximum]; anything else is a 400 naming it."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if _INTEGER.fullmatch(raw) is None or not minimum <= int(raw) <= maximum:
        raise InvalidRequest(f"Invalid value for '{name}': expected an integer between {minimum} and {maximum}.",
                             param=name)
    return int(raw)


def query_list(request: Request, name: str) -> list[str]:
    """`include[]=a&include[]=b`, `include=a&include=b` and `include=a,b` are all accepted."""
    values = request.query_params.getlist(f"{name}[]") + request.query_params.getlist(name)
    return [v for raw in values for v in raw.split(",") if v]


def page_query(request: Request, default_limit: int = 20, max_limit: int = 100) -> PageQuery:
    params = request.query_params
    limit = query_int(request, "limit", default_limit, 1, max_limit)
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("'order' must be 'asc' or 'desc'.", param="order")
    sort: Literal["asc", "desc"] = "asc" if order == "asc" else "desc"
    return PageQuery(limit=limit, order=sort, after=params.get("after"), before=params.get("before"))


def list_body(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


class DisconnectWatch:
    """Cancels the current task when the client goes away, until `stop()`; `gone` says whether it did. Through the
    connection's Exchange (api/http_protocol.py) when there is one, else with a task waiting on `receive()` for
    `http.disconnect` (the body must have been read already)."""

    __slots__ = ("_exchange", "_watcher", "gone", "task")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        self.gone = False
        self._watcher: asyncio.Future[None] | None = None
        self._exchange = exchange_of(scope)
        if self._exchange is None:
            self._watcher = asyncio.ensure_future(self._watch(receive))
        elif self._exchange.gone:  # already gone: cancelled at its first wait, as the watcher task would
            self._lost()
        else:
            self._exchange.on_gone = self._lost

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._lost()

    def _lost(self) -> None:
        self.gone = True
        self.task.cancel()

    def stop(self) -> None:
        # Dropping the references breaks the cycles through this object (the watcher's coroutine holds it; so does
        # the exchange's callback), so it is freed at once rather than by the garbage collector.
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        elif self._exchange is not None:
            self._exchange.on_gone = None


class SseResponse(Response):
    """A text/event-stream response as a plain ASGI app: writes each chunk as it comes, then `[DONE]`.

    A client disconnect cancels the producer (so the upstream call is closed): one watcher task on
    `receive`, instead of Starlette's StreamingResponse and its anyio task group per stream (measured
    on the streaming hot path, bench/README.md)."""

    def __init__(self, chunks: AsyncGenerator[bytes, None], rid: str, headers: dict[str, str] | None = None,
                 end: bytes = b"data: [DONE]\n\n") -> None:
        # Response.__init__ is not called: there is no body to render, only chunks to stream.
        self._chunks = chunks
        self._end = end  # after the last chunk (Anthropic's streams have no `[DONE]`)
        self._raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            (b"x-request-id", rid.encode()),
            *((name.encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watch = DisconnectWatch(scope, receive)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self._raw_headers})
            async for chunk in self._chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": self._end, "more_body": False})
        except asyncio.CancelledError:
            if not watch.gone:
                raise
            watch.task.uncancel()  # the client went away: the producer was closed, nothing more to send
        except OSError:
            pass  # the connection broke while writing
        finally:
            watch.stop()
            with contextlib.suppress(Exception):
                await self._chunks.aclose()


def sse_frames(frames: AsyncGenerator[bytes, None], rid: str, headers: dict[str, str] | None = None) -> SseResponse:
    """Already-framed events (a background response's log), then `[DONE]`."""
    return SseResponse(frames, rid, headers)


def sse_response(batches: AsyncIterator[list[dict[str, Any]]], rid: str,
                 headers: dict[str, str] | None = None) -> SseResponse:
    """Each batch is written at once: whole events only, so no event straddles two writes."""

    async def body() -> AsyncGenerator[bytes, None]:
        async for batch in batches:
            yield b"".join(sse_frame(event) for event in batch)

    return SseResponse(body(), rid, headers)
