"""HTTP endpoints of /v1/organization (admin keys only): usage and costs in OpenAI's shapes, and Parley's own
key management (`/v1/organization/keys`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from parley.api.http import endpoint, json_response, list_body, query_int, query_list
from parley.api.runtime import Runtime, parse_body, runtime_of
from parley.errors import InvalidRequest
from parley.schema.keys import UPDATABLE, CreateKeyRequest, UpdateKeyRequest
from parley.services.usage_reports import BUCKETS, ReportRequest
from parley.store.base import KeySpec


async def _admin(request: Request) -> Runtime:
    rt = runtime_of(request)
    (await rt.auth.caller_of(request)).check_admin()
    return rt


def _report(request: Request) -> ReportRequest:
    """The query parameters of the usage and costs endpoints, validated (400 naming the parameter)."""
    if "start_time" not in request.query_params:
        raise InvalidRequest("Missing required parameter: 'start_time'.", param="start_time",
                             code="missing_required_parameter")
    width = request.query_params.get("bucket_width", "1d")
    if width not in BUCKETS:
        raise InvalidRequest("Invalid value for 'bucket_width': expected '1m', '1h' or '1d'.", param="bucket_width")
    end = query_int(request, "end_time", -1) if "end_time" in request.query_params else None
    limit = query_int(request, "limit", 1, minimum=1) if "limit" in request.query_params else None
    return ReportRequest(
        start_time=query_int(request, "start_time", 0), end_time=end, bucket_width=width,
        group_by=tuple(query_list(request, "group_by")), project_ids=tuple(query_list(request, "project_ids")),
        api_key_ids=tuple(query_list(request, "api_key_ids")), models=tuple(query_list(request, "models")),
        limit=limit, page=request.query_params.get("page"),
    )


@endpoint
async def usage_completions(request: Request, rid: str) -> Response:
    rt = await _admin(request)
    return json_response(await rt.usage_reports.completions(_report(request)), rid)


@endpoint
async def costs(request: Request, rid: str) -> Response:
    rt = await _admin(request)
    return json_response(await rt.usage_reports.costs(_report(request)), rid)


@endpoint
async def create_key(request: Request, rid: str) -> Response:
    rt = await _admin(request)
    body = await parse_body(request, CreateKeyRequest)
    allowed = tuple(body.allowed_models) if body.allowed_models is not None else None
    spec = KeySpec(body.name, body.role, body.expires_at, allowed, body.limits)
    return json_response(await rt.keys.create(body.project_id, spec), rid)


@endpoint
async def list_keys(request: Request, rid: str) -> Response:
    rt = await _admin(request)
    limit = query_int(request, "limit", 20, minimum=1, maximum=100)
    data, has_more = await rt.keys.list(request.query_params.get("project_id"), request.query_params.get("after"),
                                        limit)
    return json_response(list_body(data, has_more), rid)


@endpoint
async def retrieve_key(request: Request, rid: str) -> Response:
    rt = await _admin(request)
    return json_response(await rt.keys.retrieve(request.path_params["key_id"]), rid)


@endpoint
async def update_key(request: Request, rid: str) -> Response:
    rt = await _admin(request)
    body = await parse_body(request, UpdateKeyRequest)
    given = body.model_fields_set & UPDATABLE - ({"name"} if body.name is None else set())
    allowed = tuple(body.allowed_models) if body.allowed_models is not None else None
    spec = KeySpec(body.name or "", "project", body.expires_at, allowed, body.limits, keep=UPDATABLE - given)
    return json_response(await rt.keys.update(request.path_params["key_id"], spec), rid)


@endpoint
async def delete_key(request: Request, rid: str) -> Response:
    rt = await _admin(request)
    return json_response(await rt.keys.revoke(request.path_params["key_id"]), rid)
