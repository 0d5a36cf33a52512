"""HTTP endpoints of /v1/models (api-surface.md §1.7)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from parley.api.http import endpoint, json_response
from parley.api.runtime import runtime_of
from parley.errors import NotFound, ParleyError
from parley.providers.registry import ModelEntry


def _model(entry: ModelEntry) -> dict[str, Any]:
    model: dict[str, Any] = {"id": entry.id, "object": "model", "created": entry.created, "owned_by": entry.owned_by}
    if entry.status is not None:
        # Parley's own fields (the SDK's Model type keeps extras): whether the embedded model can answer now.
        status = entry.status()
        model["status"] = status.state
        model["status_reason"] = status.reason
    return model


@endpoint
async def list_models(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    caller = await rt.auth.caller_of(request)
    caller.check_project()
    entries = [e for e in rt.models.all() if caller.may_use(e.id)]
    return json_response({"object": "list", "data": [_model(e) for e in entries]}, rid)


@endpoint
async def retrieve_model(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    caller = await rt.auth.caller_of(request)
    caller.check_project()
    model_id = request.path_params["model"]
    entry = rt.models.find(model_id)
    if entry is None or not caller.may_use(model_id):
        raise NotFound(f"The model '{model_id}' does not exist.", param="model", code="model_not_found")
    return json_response(_model(entry), rid)


@endpoint
async def delete_model(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    await rt.auth.project_of(request)
    raise ParleyError("Models are declared in the configuration and cannot be deleted through the API.",
                      "model", "model_not_deletable", 403, "permission_error")
