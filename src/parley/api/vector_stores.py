"""HTTP endpoints of /v1/vector_stores (api-surface.md §1.5): stores, their files, file batches and search; parse
+ validate, call services/vector_stores.py, render JSON. Everything is scoped to the caller's project."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from parley.api.http import endpoint, json_response, list_body, page_query
from parley.api.runtime import Runtime, parse_body, runtime_of
from parley.errors import InvalidRequest
from parley.schema.vector_stores import (
    CreateFileBatchRequest,
    CreateVectorStoreFileRequest,
    CreateVectorStoreRequest,
    SearchRequest,
    UpdateVectorStoreFileRequest,
    UpdateVectorStoreRequest,
)
from parley.services.vector_stores import VectorStoresService


async def _context(request: Request) -> tuple[VectorStoresService, str]:
    rt: Runtime = runtime_of(request)
    project = await rt.auth.project_of(request)
    if rt.vector_stores is None:
        raise InvalidRequest("Vector stores are not enabled on this server.", code="unsupported")
    return rt.vector_stores, project


def _store_id(request: Request) -> str:
    return str(request.path_params["vector_store_id"])


# -- stores ------------------------------------------------------------------------------------------


@endpoint
async def create_vector_store(request: Request, rid: str) -> Response:
    service, project = await _context(request)
    body = await parse_body(request, CreateVectorStoreRequest)
    return json_response(await service.create(project, body), rid)


@endpoint
async def list_vector_stores(request: Request, rid: str) -> Response:
    service, project = await _context(request)
    data, has_more = await service.list_stores(project, page_query(request))
    return json_response(list_body(data, has_more), rid)


@endpoint
async def retrieve_vector_store(request: Request, rid: str) -> Response:
    service, project = await _context(request)
    return json_response(await service.retrieve(project, _store_id(request)), rid)


@endpoint
async def update_vector_store(request: Request, rid: str) -> Response:
    service, project = await _context(request)
    body = await parse_body(request, UpdateVectorStoreRequest)
    return json_response(await service.update(project, _store_id(request), body), rid)


@endpoint
async def delete_vector_store(request: Request, rid: str) -> Response:
    service, project = await _context(request)
    return json_response(await service.delete(project, _store_id(request)), rid)


@endpoint
async def search_vector_store(request: Request, rid: str) -> Response:
    service, project = await _context(request)
    body = await parse_body(request, SearchRequest)
    return json_response(await service.search_page(project, _store_id(request), body), rid)


# -- files -------------------------------------------------------------------------------------------


@endpoint
async def create_vector_store_file(request: Request, rid: str) -> Response:
    service, project = await _context(request)
    body = await parse_body(request, CreateVectorStoreFileRequest)
    return json_response(await service.attach_file(project, _store_id(request), body), rid)


@endpoint
async def list_vector_store_files(request: Request, rid: str) -> Response:
    service, project = await _context(request)
    data, has_more = await service.list_files(project, _store_id(request), request.query_params.get("filter"),
                                              page_query(request))
    return json_response(list_body(data, has_more), rid)


@endpoint
async def retrieve_vector_store_file(request: Request, rid: str) -> Response:
    service, project = await _context(request)
    return json_response(await service.retrieve_file(project, _store_id(request), request.path_params["file_id"]),
                         rid)


@endpoint
async def update_vector_store_file(request: Request, rid: str) -> Response:
    service, project = await _context(request)
    body = await parse_body(request, UpdateVectorStoreFileRequest)
    return json_response(await service.update_file(project, _store_id(request), request.path_params["file_id"],
                                                   body.attributes), rid)


@endpoint
async def delete_vector_store_file(request: Request, rid: str) -> Response:
    service, project = await _context(request)
    return json_response(await service.detach_file(project, _store_id(request), request.path_params["file_id"]), rid)


@endpoint
async def retrieve_vector_store_file_content(request: Request, rid: str) -> Response:
    service, project = await _context(request)
    return json_response(await service.file_content(project, _store_id(request), request.path_params["file_id"]),
                         rid)


# -- file batches ------------------------------------------------------------------------------------


@endpoint
async def create_file_batch(request: Request, rid: str) -> Response:
    service, project = await _context(request)
    body = await parse_body(request, CreateFileBatchRequest)
    return json_response(await service.create_batch(project, _store_id(request), body), rid)


@endpoint
async def retrieve_file_batch(request: Request, rid: str) -> Response:
    service, project = await _context(request)
    return json_response(await service.retrieve_batch(project, _store_id(request), request.path_params["batch_id"]),
                         rid)


@endpoint
async def cancel_file_batch(request: Request, rid: str) -> Response:
    service, project = await _context(request)
    return json_response(await service.cancel_batch(project, _store_id(request), request.path_params["batch_id"]),
                         rid)


@endpoint
async def list_file_batch_files(request: Request, rid: str) -> Response:
    service, project = await _context(request)
    data, has_more = await service.list_files(project, _store_id(request), request.query_params.get("filter"),
                                              page_query(request), batch_id=request.path_params["batch_id"])
    return json_response(list_body(data, has_more), rid)
