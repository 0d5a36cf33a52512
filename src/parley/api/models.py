"""HTTP endpoints of /v1/models (api-surface.md §1.7)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from parley.api.http import Endpoint, endpoint, json_response
from parley.api.messages_errors import by_version_header
from parley.api.messages_models import anthropic_model, anthropic_model_list
from parley.api.runtime import runtime_of
from parley.errors import NotFound, ParleyError
from parley.providers.registry import ModelEntry


def _model(entry: ModelEntry) -> dict[str, Any]:
    model: dict[str, Any] = {"id": entry.id, "object": "model", "created": entry.created, "owned_by": entry.owned_by}
    if entry.capabilities is not None:  # Parley's own field (the SDK's Model type keeps extras)
        model["capabilities"] = entry.capabilities.as_json(entry.context_window, entry.hosted_tools)
    if entry.deployments:  # a route: the models that serve it (x-parley-deployment names one of them)
        model["deployments"] = list(entry.deployments)
    if entry.status is not None:
        # Parley's own fields (the SDK's Model type keeps extras): whether the embedded model can answer now.
        status = entry.status()
        model["status"] = status.state
        model["status_reason"] = status.reason
    return model


async def _list_models(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    caller = await rt.auth.caller_of(request)
    caller.check_project()
    entries = [e for e in rt.models.all() if caller.may_use(e.id)]
    if "anthropic-version" in request.headers:  # the Anthropic SDK (api/messages_models.py)
        return json_response(anthropic_model_list(request, entries), rid, headers={"request-id": rid})
    return json_response({"object": "list", "data": [_model(e) for e in entries]}, rid)


async def _retrieve_model(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    caller = await rt.auth.caller_of(request)
    caller.check_project()
    model_id = request.path_params["model"]
    entry = rt.models.find(model_id)
    if entry is None or not caller.may_use(model_id):
        raise NotFound(f"The model '{model_id}' does not exist.", param="model", code="model_not_found")
    if "anthropic-version" in request.headers:
        return json_response(anthropic_model(entry), rid, headers={"request-id": rid})
    return json_response(_model(entry), rid)


# Errors in the shape of the SDK asking: Anthropic's when the request carries `anthropic-version`.
list_models = Endpoint(_list_models, by_version_header)
retrieve_model = Endpoint(_retrieve_model, by_version_header)


@endpoint
async def delete_model(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    await rt.auth.project_of(request)
    raise ParleyError("Models are declared in the configuration and cannot be deleted through the API.",
                      "model", "model_not_deletable", 403, "permission_error")
