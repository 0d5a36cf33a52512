"""The Anthropic Messages door's one error mapping: a `ParleyError` as Anthropic's error body and status.

`{"type": "error", "error": {"type", "message"}, "request_id"}` with Anthropic's statuses
(https://docs.claude.com/en/api/errors): invalid_request_error 400 (and other 4xx), authentication_error 401,
permission_error 403, not_found_error 404, request_too_large 413, rate_limit_error 429, api_error 500,
timeout_error 504, overloaded_error 529. Parley's 502 (the upstream failed) is an api_error 500; a model Parley
runs that cannot answer now (503) is overloaded_error 529, which the SDKs retry.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from parley.api.http import JsonResponse, error_response
from parley.errors import ParleyError

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
          504: "timeout_error", 529: "overloaded_error"}
_STATUS = {502: 500, 503: 529}  # Parley's statuses Anthropic's API does not use


def status_of(err: ParleyError) -> int:
    status = _STATUS.get(err.status, err.status)
    if status >= 500 and status not in _TYPES:
        return 500
    return status


def error_type(status: int) -> str:
    return _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_body(err: ParleyError, rid: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(status_of(err)), "message": err.message},
            "request_id": rid}


def headers(rid: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Every answer of the door names its request as Anthropic's API does (`request-id`), and as Parley does."""
    return {"request-id": rid, "x-request-id": rid, **(extra or {})}


def anthropic_error(request: Request, err: ParleyError, rid: str) -> Response:
    """The error renderer of the Messages endpoints (api/http.py Endpoint)."""
    return JsonResponse(orjson.dumps(error_body(err, rid)), status_of(err), headers(rid, err.headers))


def by_version_header(request: Request, err: ParleyError, rid: str) -> Response:
    """Endpoints both wires share (/v1/models): Anthropic's shape when the request carries `anthropic-version`."""
    if "anthropic-version" in request.headers:
        return anthropic_error(request, err, rid)
    return error_response(err, rid)
