"""HTTP endpoint of POST /v1/responses/compact: parse + validate, compact, render the CompactedResponse."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from parley.api.http import endpoint, json_response
from parley.api.runtime import parse_body, runtime_of
from parley.schema.compaction import CompactRequest


@endpoint
async def compact_response(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    caller = await rt.auth.caller_of(request)
    headers = rt.limiter.admit(rt.meter.scopes(caller)).headers  # it calls the model: rate-limited too
    body = await parse_body(request, CompactRequest)
    return json_response(await rt.responses.compact(caller.project, body, caller), rid, headers=headers)
