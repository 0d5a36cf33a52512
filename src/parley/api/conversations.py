"""HTTP endpoints of /v1/conversations and their items: parse + validate, call the service, render JSON."""

from __future__ import annotations

from typing import TypeVar, get_args

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from parley.api.http import endpoint, json_response, list_body, page_query, query_list
from parley.api.runtime import parse_body, runtime_of
from parley.errors import InvalidRequest
from parley.schema.conversations import AddItemsRequest, CreateConversationRequest, UpdateConversationRequest
from parley.schema.requests import IncludeValue

_INCLUDE_VALUES = frozenset(get_args(IncludeValue))
M = TypeVar("M", bound=BaseModel)


async def _body(request: Request, model: type[M]) -> M:
    return await parse_body(request, model)


def _include(request: Request) -> list[str]:
    """`include[]`, validated: what it adds to the items shown (schema/present.py)."""
    values = query_list(request, "include")
    for value in values:
        if value not in _INCLUDE_VALUES:
            raise InvalidRequest(f"Invalid value for 'include': '{value}'.", param="include")
    return values


@endpoint
async def create_conversation(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    body = await _body(request, CreateConversationRequest)
    return json_response(await rt.conversations.create(project, body), rid)


@endpoint
async def retrieve_conversation(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    return json_response(await rt.conversations.retrieve(project, request.path_params["conversation_id"]), rid)


@endpoint
async def update_conversation(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    body = await _body(request, UpdateConversationRequest)
    return json_response(await rt.conversations.update(project, request.path_params["conversation_id"], body), rid)


@endpoint
async def delete_conversation(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    return json_response(await rt.conversations.delete(project, request.path_params["conversation_id"]), rid)


@endpoint
async def create_items(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    _include(request)
    body = await _body(request, AddItemsRequest)
    items = await rt.conversations.add_items(project, request.path_params["conversation_id"], body)
    return json_response(list_body(items, False), rid)


@endpoint
async def list_items(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    include = _include(request)
    page = await rt.conversations.list_items(project, request.path_params["conversation_id"], page_query(request),
                                             include)
    return json_response(list_body(page.data, page.has_more), rid)


@endpoint
async def retrieve_item(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    include = _include(request)
    conversation_id, item_id = request.path_params["conversation_id"], request.path_params["item_id"]
    return json_response(await rt.conversations.retrieve_item(project, conversation_id, item_id, include), rid)


@endpoint
async def delete_item(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    conversation_id, item_id = request.path_params["conversation_id"], request.path_params["item_id"]
    return json_response(await rt.conversations.delete_item(project, conversation_id, item_id), rid)
