"""GET /openapi.json (an OpenAPI 3.1 document of every endpoint) and GET /docs (a page rendering it, offline).

The document is generated from the app's route table joined with api/endpoint_docs.py, so a new route appears in
it at once (marked undocumented until it has an entry). Request bodies are the JSON Schemas of the pydantic models
the endpoints validate with (OpenAPI 3.1 schemas are JSON Schema 2020-12, which pydantic writes); answers are the
small schemas below: the wire objects themselves are specified in api-surface.md and by the `openai` SDK's types.
A WebSocket door (WebSocket mode on /v1/responses) is a GET answered 101, its client events' schemas and what the
server sends under the operation's `x-websocket` (OpenAPI has no words for WebSocket messages).

The page is three small files of Parley's own (docs/index.html, docs.js, docs.css: no CDN, no framework), served
under a content-security policy that allows only them and same-origin requests.
"""

from __future__ import annotations

import importlib
import re
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from parley.api.endpoint_docs import DOCS, WEBSOCKETS, EndpointDoc, WebSocketDoc
from parley.api.http import endpoint, json_response
from parley.errors import NotFound

_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")
_JSON = "application/json"
_ASSETS = {"docs.js": "text/javascript; charset=utf-8", "docs.css": "text/css; charset=utf-8"}
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _object(description: str, kind: str | None = None, **properties: Any) -> dict[str, Any]:
    props: dict[str, Any] = {"id": {"type": "string"}} if kind else {}
    if kind:
        props["object"] = {"const": kind}
    props.update(properties)
    return {"type": "object", "description": description, "properties": props, "additionalProperties": True}


_STRING = {"type": "string"}
_INT = {"type": "integer"}

# Answers, by name (EndpointDoc.returns). Objects keep extra properties: these name what clients rely on.
SCHEMAS: dict[str, dict[str, Any]] = {
    "Object": _object("A JSON object."),
    "Text": {"type": "string"},
    "Binary": {"type": "string", "contentMediaType": "application/octet-stream"},
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["message", "type"], "properties": {
            "message": _STRING, "type": _STRING, "param": {"type": ["string", "null"]},
            "code": {"type": ["string", "null"]}}}}},
    "Health": _object("The process answers.", status={"const": "ok"}),
    "Ready": _object("Readiness and each check's state.", status={"enum": ["ready", "not_ready"]}, checks={
        "type": "object", "properties": {
            "database": {"enum": ["ok", "timeout", "unreachable"]},
            "models": {"type": "object", "description": "model id -> ok, timeout, unreachable (its upstream), or "
                       "the state of a model Parley runs itself", "additionalProperties": _STRING}}}),
    "List": _object("A page of objects.", None, object={"const": "list"}, data={"type": "array"},
                    first_id={"type": ["string", "null"]}, last_id={"type": ["string", "null"]},
                    has_more={"type": "boolean"}),
    "Page": _object("A page of results (search results, usage buckets, file content).", None,
                    data={"type": "array"}, has_more={"type": "boolean"}),
    "Deleted": _object("What was deleted.", None, id=_STRING, object=_STRING, deleted={"type": "boolean"}),
    "Response": _object("A Response (api-surface.md §5; the SDK's `Response`).", "response",
                        status={"enum": ["completed", "failed", "in_progress", "cancelled", "queued", "incomplete"]},
                        model=_STRING, output={"type": "array"}, usage={"type": ["object", "null"]}),
    "ResponseUsage": _object(
        "One response's usage records summed, and each run with its timeline (a Parley extension).", None,
        object={"const": "response.usage"}, response_id=_STRING, input_tokens=_INT, output_tokens=_INT,
        total_tokens=_INT, tool_calls={"type": "object", "additionalProperties": _INT},
        cost={"type": "object", "properties": {"value": {"type": "number"}, "currency": {"const": "usd"}}},
        runs={"type": "array", "items": {"type": "object", "properties": {
            "latency_ms": _INT, "ttft_ms": {"type": ["integer", "null"]}, "timeline": {"type": ["object", "null"]}}}}),
    "InputTokens": _object("An input token count.", None, object={"const": "response.input_tokens"},
                           input_tokens=_INT),
    "Compaction": _object("A compacted context: its user messages and one compaction item.", "response.compaction",
                          output={"type": "array"}),
    "Model": _object("A model.", "model", created=_INT, owned_by=_STRING),
    "Message": _object("An Anthropic Messages API `Message` (the `anthropic` SDK's `Message`); streamed: Anthropic's "
                       "events. Errors in Anthropic's shape.", None, id=_STRING, type={"const": "message"},
                       content={"type": "array"}, stop_reason={"type": ["string", "null"]}, usage={"type": "object"}),
    "MessageTokens": _object("An Anthropic token count.", None, input_tokens=_INT),
    "Conversation": _object("A conversation.", "conversation", metadata={"type": ["object", "null"]}),
    "Item": _object("A conversation item (message, tool call, ...).", None, id=_STRING, type=_STRING),
    "File": _object("A file.", "file", bytes=_INT, filename=_STRING, purpose=_STRING),
    "VectorStore": _object("A vector store.", "vector_store", name={"type": ["string", "null"]}),
    "VectorStoreFile": _object("A file in a vector store.", "vector_store.file", status=_STRING),
    "FileBatch": _object("A vector store file batch.", "vector_store.files_batch", status=_STRING),
    "Container": _object("A container.", "container", status=_STRING),
    "ContainerFile": _object("A container file.", "container.file", path=_STRING),
    "Prompt": _object("A prompt template version.", "prompt", version=_STRING),
    "ApiKey": _object("An API key (its secret only in `value`, once, when created).", "organization.api_key",
                      role={"enum": ["project", "admin"]}, project_id={"type": ["string", "null"]}),
}

_PAGE_ORDER = {"type": "string", "enum": ["asc", "desc"]}
QUERY: dict[str, tuple[dict[str, Any], str]] = {
    "limit": (_INT, "How many to return"),
    "order": (_PAGE_ORDER, "Sort order by creation time"),
    "after": (_STRING, "Return objects after this id"),
    "before": (_STRING, "Return objects before this id"),
    "include": ({"type": "array", "items": _STRING}, "Extra fields to include (`include[]=...` or a comma list)"),
    "stream": ({"type": "boolean"}, "Replay the response's events as Server-Sent Events, then follow it"),
    "starting_after": (_INT, "With stream=true: the sequence number to replay after"),
    "purpose": (_STRING, "Only files with this purpose"),
    "filter": (_STRING, "Only files with this status (in_progress, completed, failed, cancelled)"),
    "name": (_STRING, "Only containers with this name"),
    "start_time": (_INT, "Start of the range (Unix seconds, inclusive)"),
    "end_time": (_INT, "End of the range (Unix seconds, exclusive)"),
    "bucket_width": ({"type": "string", "enum": ["1m", "1h", "1d"]}, "Width of each time bucket"),
    "group_by": ({"type": "array", "items": _STRING}, "Group each bucket's results by these fields"),
    "project_ids": ({"type": "array", "items": _STRING}, "Only these projects"),
    "api_key_ids": ({"type": "array", "items": _STRING}, "Only these keys"),
    "models": ({"type": "array", "items": _STRING}, "Only these models"),
    "page": (_STRING, "The `next_page` cursor of the previous page"),
    "project_id": (_STRING, "Only keys of this project"),
    "model": (_STRING, "Only responses of this model"),
    "status": (_STRING, "Only responses in this status"),
    "created_after": (_INT, "Only responses created at or after this time (Unix seconds)"),
    "created_before": (_INT, "Only responses created before this time (Unix seconds)"),
    "metadata[KEY]": (_STRING, "Only responses whose metadata KEY has this value (repeatable, one per key)"),
}


def openapi_document(table: list[Route]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `table` (the app's routes), its bodies' schemas among the components."""
    paths: dict[str, dict[str, Any]] = {}
    bodies: dict[str, type[BaseModel]] = {}
    for route in table:
        template = _PARAM.sub(r"{\1}", route.path)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            doc = DOCS.get((method, template))
            if doc is not None and doc.body not in (None, "multipart"):
                bodies[str(doc.body)] = _model(str(doc.body))
            paths.setdefault(template, {})[method.lower()] = _operation(method, template, route, doc)
    for path, door in WEBSOCKETS.items():
        for reference in door.client_events:
            bodies[reference] = _model(reference)
        paths.setdefault(path, {})["get"] = _websocket_operation(path, door)
    refs, defs = models_json_schema([(model, "validation") for model in bodies.values()],
                                    ref_template="#/components/schemas/{model}")
    for operation in (op for item in paths.values() for op in item.values()):
        body = operation.pop("x-body", None)
        if body is not None:
            operation["requestBody"] = {"required": True, "content": {_JSON: {"schema": refs[(bodies[body],
                                                                                              "validation")]}}}
        events = operation.get("x-websocket")
        if events is not None:
            events["client_events"] = {"oneOf": [refs[(bodies[reference], "validation")]
                                                 for reference in events["client_events"]]}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Parley", "version": _version(),
                 "description": "A self-hosted OpenAI Responses API server over any model. Errors have OpenAI's "
                                "shape; keys are sent as `Authorization: Bearer <key>`."},
        "paths": paths,
        "components": {"schemas": {**defs.get("$defs", {}), **SCHEMAS},
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "A project key, or an admin key for "
                                                                     "/v1/organization"}}},
    }


def _operation(method: str, template: str, route: Route, doc: EndpointDoc | None) -> dict[str, Any]:
    slug = re.sub(r"[^a-z0-9]+", "_", template.lower()).strip("_")
    if doc is None:
        return {"operationId": f"{method.lower()}_{slug}", "summary": "Undocumented", "tags": ["Undocumented"],
                "x-parley-undocumented": True, "parameters": _path_params(template),
                "responses": {"default": {"description": "Undocumented"}}}
    operation: dict[str, Any] = {"operationId": f"{method.lower()}_{slug}", "summary": doc.summary,
                                 "tags": [doc.tag]}
    description = doc.description + {"admin": " Needs an admin key.", "project": ""}.get(doc.auth, "")
    if description:
        operation["description"] = description.strip()
    parameters = _path_params(template) + [
        {"name": name, "in": "query", "required": False, "description": QUERY[name][1], "schema": QUERY[name][0]}
        for name in doc.query
    ]
    if parameters:
        operation["parameters"] = parameters
    if doc.body == "multipart":
        operation["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "properties": {"file": {"type": "string", "contentMediaType": "application/octet-stream"},
                                             "purpose": _STRING, "file_id": _STRING}}}}}
    elif doc.body is not None:
        operation["x-body"] = doc.body
    content: dict[str, Any] = {doc.media_type: {"schema": {"$ref": f"#/components/schemas/{doc.returns}"}}}
    if doc.streams:
        content["text/event-stream"] = {"schema": {"type": "string", "description": "Server-Sent Events"}}
    operation["responses"] = {
        str(doc.status): {"description": doc.summary, "content": content},
        "default": {"description": "An error (OpenAI's error shape)",
                    "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}},
    }
    operation["security"] = {"none": [], "metrics": [{}, {"bearer": []}]}.get(doc.auth, [{"bearer": []}])
    return operation


def _websocket_operation(path: str, door: WebSocketDoc) -> dict[str, Any]:
    """A WebSocket door as OpenAPI can say it: a GET that upgrades (101), its events under `x-websocket`."""
    slug = re.sub(r"[^a-z0-9]+", "_", path.lower()).strip("_")
    return {
        "operationId": f"websocket_{slug}", "summary": door.summary, "tags": [door.tag],
        "description": door.description,
        "parameters": [{"name": "Upgrade", "in": "header", "required": True, "schema": {"const": "websocket"}},
                       {"name": "Connection", "in": "header", "required": True, "schema": {"const": "Upgrade"}}],
        "responses": {
            "101": {"description": "Switching Protocols: the connection is now a WebSocket"},
            "default": {"description": "The upgrade is refused with an error in OpenAI's shape (e.g. 401)",
                        "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}},
        },
        "security": [{"bearer": []}],
        "x-websocket": {"client_events": list(door.client_events), "server_events": door.server_events},
    }


def _path_params(template: str) -> list[dict[str, Any]]:
    return [{"name": name, "in": "path", "required": True, "schema": _STRING}
            for name in re.findall(r"\{(\w+)\}", template)]


def _model(reference: str) -> type[BaseModel]:
    module, _, name = reference.partition(":")
    model: type[BaseModel] = getattr(importlib.import_module(module), name)
    return model


def _version() -> str:
    try:
        return version("parley")
    except PackageNotFoundError:
        return "0"


@endpoint
async def openapi_json(request: Request, rid: str) -> Response:
    return json_response(openapi_document(request.app.router.routes), rid)


@endpoint
async def docs_page(request: Request, rid: str) -> Response:
    return _static("index.html", "text/html; charset=utf-8", rid)


@endpoint
async def docs_asset(request: Request, rid: str) -> Response:
    name = request.path_params["asset"]
    if name not in _ASSETS:
        raise NotFound(f"Unknown request URL: GET /docs/{name}.", code="unknown_url")
    return _static(name, _ASSETS[name], rid)


def _static(name: str, media_type: str, rid: str) -> Response:
    body = resources.files("parley.api").joinpath("docs", name).read_bytes()
    return Response(body, headers={"content-type": media_type, "content-security-policy": _CSP,
                                   "x-content-type-options": "nosniff", "x-request-id": rid})
