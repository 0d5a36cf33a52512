"""HTTP endpoints of /v1/responses: parse + validate, call the service, render JSON or SSE."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, get_args

from starlette.requests import Request
from starlette.responses import Response

from parley.api.http import (
    ClientGoneError,
    DisconnectWatch,
    endpoint,
    json_response,
    list_body,
    page_query,
    query_bool,
    query_int,
    query_list,
    sse_frames,
    sse_response,
)
from parley.api.runtime import parse_body, runtime_of
from parley.engine.obfuscation import as_asked
from parley.errors import InvalidRequest
from parley.providers.routing import clear_served, served_by
from parley.schema.requests import CreateResponseRequest, IncludeValue
from parley.services.background import follow
from parley.services.response_usage import response_usage
from parley.services.usage import UsageOrigin
from parley.store.base import ResponseFilter

_INCLUDE_VALUES = frozenset(get_args(IncludeValue))


async def cancel_on_disconnect(request: Request, work: Callable[[], Awaitable[Any]]) -> Any:
    """Run `work` in this task, cancelling it if the client goes away (the body has been read already).

    The request's own task is cancelled (api/http.py DisconnectWatch): cheaper than running `work` in a task
    of its own and waiting on both (measured, bench/README.md)."""
    watch = DisconnectWatch(request.scope, request.receive)
    try:
        return await work()
    except asyncio.CancelledError:
        if not watch.gone:
            raise
        watch.task.uncancel()
        raise ClientGoneError from None
    finally:
        watch.stop()


@endpoint
async def create_response(request: Request, rid: str) -> Response:
    clear_served()
    rt = runtime_of(request)
    caller = await rt.auth.caller_of(request)
    project = caller.project
    # Rate limits and budgets: a 429 here, else the x-ratelimit-* headers of the answer (no I/O).
    scopes = rt.meter.scopes(caller)
    headers = rt.limiter.admit(scopes).headers
    req = await parse_body(request, CreateResponseRequest)
    if req.background:
        # The run is recorded before answering and goes on without this client: a dropped stream
        # can be resumed with GET /v1/responses/{id}?stream=true.
        response = await rt.background.create(project, req, caller)
        if not req.stream:
            return json_response(response, rid, headers=headers)
        return sse_frames(follow(rt.store, rt.background.runner, project, response["id"], -1,
                                 rt.settings.background.poll_s), rid, headers)
    origin = UsageOrigin(caller, scopes)
    if req.stream:
        prepared = await rt.responses.prepare(project, req, caller, origin)
        return sse_response(rt.responses.stream(prepared), rid, served_headers(headers))

    async def prepare_and_complete() -> Any:
        # A non-streaming upstream sends its headers only when it has finished, so opening the call
        # (in prepare) is most of the work: it must be cancelled too when the client goes away.
        return await rt.responses.complete(await rt.responses.prepare(project, req, caller, origin))

    response = await cancel_on_disconnect(request, prepare_and_complete)
    return json_response(response, rid, headers=served_headers(headers))


def served_headers(headers: dict[str, str]) -> dict[str, str]:
    """A routed model's answer names the deployment that opened its (last) turn (providers/routing.py)."""
    deployment = served_by()
    return {**headers, "x-parley-deployment": deployment} if deployment is not None else headers


@endpoint
async def count_input_tokens(request: Request, rid: str) -> Response:
    """POST /v1/responses/input_tokens: the same body as create; counts the input without generating."""
    rt = runtime_of(request)
    caller = await rt.auth.caller_of(request)
    req = await parse_body(request, CreateResponseRequest)
    return json_response(await rt.responses.input_tokens(caller.project, req, caller), rid)


def _include(request: Request) -> list[str]:
    """`include[]` of a GET: validated; what it adds to the items shown (schema/present.py)."""
    values = query_list(request, "include")
    for part in values:
        if part not in _INCLUDE_VALUES:
            raise InvalidRequest(f"Invalid value for 'include': '{part}'.", param="include")
    return values


@endpoint
async def retrieve_response(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    include = _include(request)
    response_id = request.path_params["response_id"]
    stream = query_bool(request, "stream")
    # Replay the event log from response.created (the SDK helper filters client-side), or after
    # `starting_after`, then follow the run live until its terminal event (api-surface.md §6.6).
    after = query_int(request, "starting_after", -1, minimum=-1)
    # Padded as a create's stream is, by the same default, whichever way the run logging the events was asked.
    obfuscate = query_bool(request, "include_obfuscation", rt.settings.obfuscation_default)
    if not stream:
        return json_response(await rt.responses.retrieve(project, response_id, include), rid)
    await rt.background.check_streamable(project, response_id)
    frames = follow(rt.store, rt.background.runner, project, response_id, after, rt.settings.background.poll_s)
    return sse_frames(as_asked(frames, obfuscate), rid)


@endpoint
async def delete_response(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    return json_response(await rt.responses.delete(project, request.path_params["response_id"]), rid)


@endpoint
async def cancel_response(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    return json_response(await rt.background.cancel(project, request.path_params["response_id"]), rid)


@endpoint
async def list_input_items(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    include = _include(request)
    page = await rt.responses.input_items(project, request.path_params["response_id"], page_query(request),
                                          include)
    return json_response(list_body(page.data, page.has_more), rid)


@endpoint
async def get_response_usage(request: Request, rid: str) -> Response:
    """GET /v1/responses/{response_id}/usage (a Parley extension, for the console's explorer): the response's
    tokens, cost and timeline from its usage records, in the key's project. It takes no query parameter."""
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    for name in request.query_params:
        raise InvalidRequest(f"Unknown query parameter '{name}'.", param=name, code="unknown_parameter")
    return json_response(await response_usage(rt.store, project, request.path_params["response_id"]), rid)


_STATUSES = ("completed", "failed", "in_progress", "cancelled", "queued", "incomplete")
_LIST_PARAMS = frozenset({"limit", "order", "after", "before", "model", "status", "created_after", "created_before"})


@endpoint
async def list_responses(request: Request, rid: str) -> Response:
    """GET /v1/responses/list (a Parley extension, for the console's explorer): stored responses without `output`,
    filtered by `model`, `status`, `metadata[key]=value` and `created_after`/`created_before` (unix seconds)."""
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    params = request.query_params
    metadata: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in params.multi_items():
        if name in seen:  # which one would count is a guess: refuse rather than pick
            raise InvalidRequest(f"Query parameter '{name}' is given more than once.", param=name)
        seen.add(name)
        if name.startswith("metadata[") and name.endswith("]") and len(name) > len("metadata[]"):
            key = name[len("metadata["):-1]
            if len(key) > 64 or len(value) > 512:  # what a metadata key and value can be
                raise InvalidRequest("A metadata key has at most 64 characters and its value at most 512.", param=name)
            metadata[key] = value
        elif name not in _LIST_PARAMS:
            raise InvalidRequest(f"Unknown query parameter '{name}'.", param=name, code="unknown_parameter")
    status = params.get("status")
    if status is not None and status not in _STATUSES:
        raise InvalidRequest(f"'status' must be one of {', '.join(_STATUSES)}.", param="status")
    after = query_int(request, "created_after", -1, minimum=0) if "created_after" in params else None
    before = query_int(request, "created_before", -1, minimum=0) if "created_before" in params else None
    where = ResponseFilter(model=params.get("model"), status=status, metadata=metadata,
                           created_after=after, created_before=before)
    page = await rt.store.list_responses(project, where, page_query(request))
    return json_response(list_body(page.data, page.has_more), rid)
