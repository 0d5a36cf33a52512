"""HTTP plumbing shared by every endpoint: JSON bodies, the one error rendering, query parsing, SSE framing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from parley.engine.stream import sse_frame
from parley.errors import InternalError, InvalidRequest, ParleyError, PayloadTooLarge
from parley.schema.requests import cross_field_param, param_from_loc
from parley.store.base import PageQuery

log = logging.getLogger("parley.api")
M = TypeVar("M", bound=BaseModel)

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def request_id() -> str:
    return "req_" + secrets.token_hex(16)


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


def json_response(body: Any, rid: str, status: int = 200) -> Response:
    return JsonResponse(orjson.dumps(body), status, {"x-request-id": rid})


def error_response(err: ParleyError, rid: str) -> Response:
    """The one place an error becomes an HTTP body (DESIGN.md §5)."""
    return JsonResponse(orjson.dumps(err.body()), err.status, {"x-request-id": rid, **err.headers})


class ClientGoneError(Exception):
    """Raised by a handler whose client disconnected before the response was ready; nothing is sent."""


class Endpoint:
    """A handler as a plain ASGI app: request id, ParleyError -> OpenAI error body, anything else -> an
    opaque 500. Being an object (not a function), Starlette's router calls it directly, without its
    per-request exception-handling wrapper (measured on the hot path, bench/README.md)."""

    def __init__(self, handler: Callable[[Request, str], Awaitable[Response]]) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        rid = request_id()
        try:
            response = await self.handler(request, rid)
        except ClientGoneError:
            return  # the client disconnected: there is nobody to answer
        except ParleyError as err:
            response = error_response(err, rid)
        except Exception:
            log.exception("unhandled error in %s %s (request %s)", request.method, request.url.path, rid)
            response = error_response(InternalError(), rid)
        await response(scope, receive, send)


def endpoint(handler: Callable[[Request, str], Awaitable[Response]]) -> Endpoint:
    return Endpoint(handler)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_model(model: type[M], body: bytes) -> M:
    if not body.strip():
        raise InvalidRequest("The request body is empty; expected a JSON object.", code="invalid_json")
    try:
        return model.model_validate_json(body)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        if first["type"] == "json_invalid":
            raise InvalidRequest(
                "We could not parse the JSON body of your request. The body must be valid JSON.",
                code="invalid_json",
            ) from None
        if first["type"] == "model_type" and not first["loc"]:
            raise InvalidRequest("The request body must be a JSON object.", code="invalid_type") from None
        cause = (first.get("ctx") or {}).get("error")
        param = cross_field_param(cause) if cause is not None else None
        if param is not None:
            raise InvalidRequest(str(cause), param=param) from None
        param = param_from_loc(first["loc"], orjson.loads(body))
        message = first["msg"]
        raise InvalidRequest(f"Invalid value for '{param}': {message}." if param else message, param=param) from None


def query_list(request: Request, name: str) -> list[str]:
    """`include[]=a&include[]=b`, `include=a&include=b` and `include=a,b` are all accepted."""
    values = request.query_params.getlist(f"{name}[]") + request.query_params.getlist(name)
    return [v for raw in values for v in raw.split(",") if v]


def page_query(request: Request, default_limit: int = 20, max_limit: int = 100) -> PageQuery:
    params = request.query_params
    raw_limit = params.get("limit")
    limit = default_limit
    if raw_limit is not None:
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= max_limit:
            raise InvalidRequest(f"'limit' must be an integer between 1 and {max_limit}.", param="limit")
        limit = int(raw_limit)
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


class SseResponse(Response):
    """A text/event-stream response as a plain ASGI app: writes each chunk as it comes, then `[DONE]`.

    A client disconnect cancels the producer (so the upstream call is closed): one watcher task on
    `receive`, instead of Starlette's StreamingResponse and its anyio task group per stream (measured
    on the streaming hot path, bench/README.md)."""

    def __init__(self, chunks: AsyncGenerator[bytes, None], rid: str) -> None:
        # Response.__init__ is not called: there is no body to render, only chunks to stream.
        self._chunks = chunks
        self._raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            (b"x-request-id", rid.encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            task.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self._raw_headers})
            async for chunk in self._chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})
        except asyncio.CancelledError:
            if not gone:
                raise
            task.uncancel()  # the client went away: the producer was closed, nothing more to send
        except OSError:
            pass  # the connection broke while writing
        finally:
            watcher.cancel()
            with contextlib.suppress(Exception):
                await self._chunks.aclose()


def sse_frames(frames: AsyncGenerator[bytes, None], rid: str) -> SseResponse:
    """Already-framed events (a background response's log), then `[DONE]`."""
    return SseResponse(frames, rid)


def sse_response(batches: AsyncIterator[list[dict[str, Any]]], rid: str) -> SseResponse:
    """Each batch is written at once: whole events only, so no event straddles two writes."""

    async def body() -> AsyncGenerator[bytes, None]:
        async for batch in batches:
            yield b"".join(sse_frame(event) for event in batch)

    return SseResponse(body(), rid)
