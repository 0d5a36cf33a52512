"""The route table: every endpoint Parley serves, in one place."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Scope

from parley.api import (
    compaction,
    containers,
    conversations,
    files,
    messages,
    models,
    organization,
    prompts,
    responses,
)
from parley.api import vector_stores as vs
from parley.api.console import console_asset, console_page
from parley.api.http import error_response, json_response, request_id
from parley.api.messages_errors import anthropic_error, by_version_header
from parley.api.observability import metrics, ready
from parley.api.openapi import docs_asset, docs_page, openapi_json
from parley.api.websocket import ResponsesWebSocket
from parley.errors import InvalidRequest, NotFound, ParleyError
from parley.log_context import set_request_id


async def health(request: Request) -> Response:
    return json_response({"status": "ok"}, request_id())


def routes() -> list[Route]:
    return [
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs_page, methods=["GET"]),
        Route("/docs/{asset}", docs_asset, methods=["GET"]),
        Route("/console", console_page, methods=["GET"]),
        Route("/console/{asset}", console_asset, methods=["GET"]),
        Route("/v1/responses", responses.create_response, methods=["POST"]),
        # Before /v1/responses/{response_id}: that GET would otherwise take "input_tokens" as a response id.
        Route("/v1/responses/input_tokens", responses.count_input_tokens, methods=["POST"]),
        # GET /v1/responses is WebSocket mode's upgrade; the list (a Parley extension) has its own path.
        Route("/v1/responses/list", responses.list_responses, methods=["GET"]),
        Route("/v1/responses/compact", compaction.compact_response, methods=["POST"]),
        Route("/v1/responses/{response_id}", responses.retrieve_response, methods=["GET"]),
        Route("/v1/responses/{response_id}", responses.delete_response, methods=["DELETE"]),
        Route("/v1/responses/{response_id}/cancel", responses.cancel_response, methods=["POST"]),
        Route("/v1/responses/{response_id}/input_items", responses.list_input_items, methods=["GET"]),
        Route("/v1/responses/{response_id}/usage", responses.get_response_usage, methods=["GET"]),
        Route("/v1/models", models.list_models, methods=["GET"]),
        # The Anthropic Messages API (api/messages.py); Claude Code adds `?beta=true`.
        Route("/v1/messages", messages.create_message, methods=["POST"]),
        Route("/v1/messages/count_tokens", messages.count_tokens, methods=["POST"]),
        Route("/v1/conversations", conversations.create_conversation, methods=["POST"]),
        Route("/v1/conversations/{conversation_id}", conversations.retrieve_conversation, methods=["GET"]),
        Route("/v1/conversations/{conversation_id}", conversations.update_conversation, methods=["POST"]),
        Route("/v1/conversations/{conversation_id}", conversations.delete_conversation, methods=["DELETE"]),
        Route("/v1/conversations/{conversation_id}/items", conversations.create_items, methods=["POST"]),
        Route("/v1/conversations/{conversation_id}/items", conversations.list_items, methods=["GET"]),
        Route("/v1/conversations/{conversation_id}/items/{item_id}", conversations.retrieve_item, methods=["GET"]),
        Route("/v1/conversations/{conversation_id}/items/{item_id}", conversations.delete_item,
              methods=["DELETE"]),
        Route("/v1/files", files.create_file, methods=["POST"]),
        Route("/v1/files", files.list_files, methods=["GET"]),
        Route("/v1/files/{file_id}", files.retrieve_file, methods=["GET"]),
        Route("/v1/files/{file_id}", files.delete_file, methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", files.retrieve_file_content, methods=["GET"]),
        Route("/v1/vector_stores", vs.create_vector_store, methods=["POST"]),
        Route("/v1/vector_stores", vs.list_vector_stores, methods=["GET"]),
        Route("/v1/vector_stores/{vector_store_id}", vs.retrieve_vector_store, methods=["GET"]),
        Route("/v1/vector_stores/{vector_store_id}", vs.update_vector_store, methods=["POST"]),
        Route("/v1/vector_stores/{vector_store_id}", vs.delete_vector_store, methods=["DELETE"]),
        Route("/v1/vector_stores/{vector_store_id}/search", vs.search_vector_store, methods=["POST"]),
        Route("/v1/vector_stores/{vector_store_id}/files", vs.create_vector_store_file, methods=["POST"]),
        Route("/v1/vector_stores/{vector_store_id}/files", vs.list_vector_store_files, methods=["GET"]),
        Route("/v1/vector_stores/{vector_store_id}/files/{file_id}", vs.retrieve_vector_store_file, methods=["GET"]),
        Route("/v1/vector_stores/{vector_store_id}/files/{file_id}", vs.update_vector_store_file, methods=["POST"]),
        Route("/v1/vector_stores/{vector_store_id}/files/{file_id}", vs.delete_vector_store_file,
              methods=["DELETE"]),
        Route("/v1/vector_stores/{vector_store_id}/files/{file_id}/content", vs.retrieve_vector_store_file_content,
              methods=["GET"]),
        Route("/v1/vector_stores/{vector_store_id}/file_batches", vs.create_file_batch, methods=["POST"]),
        Route("/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}", vs.retrieve_file_batch,
              methods=["GET"]),
        Route("/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel", vs.cancel_file_batch,
              methods=["POST"]),
        Route("/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/files", vs.list_file_batch_files,
              methods=["GET"]),
        Route("/v1/containers", containers.create_container, methods=["POST"]),
        Route("/v1/containers", containers.list_containers, methods=["GET"]),
        Route("/v1/containers/{container_id}", containers.retrieve_container, methods=["GET"]),
        Route("/v1/containers/{container_id}", containers.delete_container, methods=["DELETE"]),
        Route("/v1/containers/{container_id}/files", containers.create_container_file, methods=["POST"]),
        Route("/v1/containers/{container_id}/files", containers.list_container_files, methods=["GET"]),
        Route("/v1/containers/{container_id}/files/{file_id}", containers.retrieve_container_file,
              methods=["GET"]),
        Route("/v1/containers/{container_id}/files/{file_id}", containers.delete_container_file,
              methods=["DELETE"]),
        Route("/v1/containers/{container_id}/files/{file_id}/content", containers.retrieve_container_file_content,
              methods=["GET"]),
        Route("/v1/prompts", prompts.create_prompt, methods=["POST"]),
        Route("/v1/prompts", prompts.list_prompts, methods=["GET"]),
        Route("/v1/prompts/{prompt_id}", prompts.retrieve_prompt, methods=["GET"]),
        Route("/v1/prompts/{prompt_id}", prompts.delete_prompt, methods=["DELETE"]),
        Route("/v1/prompts/{prompt_id}/versions", prompts.create_prompt_version, methods=["POST"]),
        Route("/v1/prompts/{prompt_id}/versions/{version}", prompts.retrieve_prompt, methods=["GET"]),
        Route("/v1/organization/usage/completions", organization.usage_completions, methods=["GET"]),
        Route("/v1/organization/costs", organization.costs, methods=["GET"]),
        Route("/v1/organization/keys", organization.create_key, methods=["POST"]),
        Route("/v1/organization/keys", organization.list_keys, methods=["GET"]),
        Route("/v1/organization/keys/{key_id}", organization.retrieve_key, methods=["GET"]),
        Route("/v1/organization/keys/{key_id}", organization.update_key, methods=["POST"]),
        Route("/v1/organization/keys/{key_id}", organization.delete_key, methods=["DELETE"]),
        Route("/v1/models/{model:path}", models.retrieve_model, methods=["GET"]),
        Route("/v1/models/{model:path}", models.delete_model, methods=["DELETE"]),
    ]


def websocket_routes() -> dict[str, ASGIApp]:
    """WebSocket upgrades by path: WebSocket mode of /v1/responses (api/websocket.py)."""
    return {"/v1/responses": ResponsesWebSocket()}


def nul_in_path(scope: Scope, table: Sequence[BaseRoute]) -> Response | None:
    """A path whose id holds a NUL character: no id has one, and PostgreSQL refuses one in a query parameter (a
    500 there), so it is a 404 here, naming the route's path parameter, before any endpoint reads it. None when
    no route has such a parameter (the router's own 404 then)."""
    param = None
    for route in table:
        match, child = route.matches(scope)
        if match != Match.NONE:
            param = next((name for name, value in child.get("path_params", {}).items() if "\x00" in str(value)),
                         None)
            break
    if param is None:
        return None
    rid = request_id()
    set_request_id(rid)
    err = NotFound("No object has an id with a NUL character (U+0000) in it.", param=param)
    if scope["path"].startswith("/v1/messages"):
        return anthropic_error(Request(scope), err, rid)
    return error_response(err, rid)


def nul_in_query(scope: Scope) -> Response | None:
    """A query parameter (its value or its name) holding a NUL character: no cursor, id, filter or option has one,
    and PostgreSQL refuses one in a query parameter (a 400 without `param` there, a 500 for a metadata key, while
    SQLite answered 200, 400 or 404), so it is a 400 naming the parameter here, before any endpoint reads it, on
    either database. Called only when the query string has `%00` (or a raw NUL) in it."""
    pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
    name = next((name for name, value in pairs if "\x00" in name or "\x00" in value), None)
    if name is None:
        return None
    param = name.removesuffix("[]")  # include[]=... is the `include` parameter
    rid = request_id()
    set_request_id(rid)
    err = InvalidRequest(f"Invalid value for '{param}': a query parameter cannot contain a NUL character (U+0000).",
                         param=param)
    request = Request(scope)
    if scope["path"].startswith("/v1/messages"):
        return anthropic_error(request, err, rid)
    return by_version_header(request, err, rid)


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 in the OpenAI error shape (Anthropic's under /v1/messages)."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        err: ParleyError = NotFound(f"Unknown request URL: {request.method} {request.url.path}.", code="unknown_url")
    else:
        err = ParleyError(exc.detail, None, "method_not_allowed" if exc.status_code == 405 else None,
                          exc.status_code, "invalid_request_error")
    rid = request_id()
    set_request_id(rid)
    if request.url.path.startswith("/v1/messages"):
        return anthropic_error(request, err, rid)
    return error_response(err, rid)
