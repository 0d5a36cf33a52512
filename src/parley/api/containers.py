"""HTTP endpoints of /v1/containers and /v1/containers/{id}/files (api-surface.md §1.6), scoped to the caller's
project. A container file is created by a multipart upload (`file`) or by copying a File (JSON `{file_id}`)."""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from parley.api.body_coding import BodyLimit
from parley.api.http import endpoint, json_response, list_body, page_query
from parley.api.multipart import FORM_OVERHEAD_BYTES, MultipartUpload, UploadDeadlines
from parley.api.runtime import Runtime, parse_body, runtime_of
from parley.errors import InvalidRequest, NotFound, PayloadTooLarge
from parley.retrieval.extract import guess_media_type
from parley.schema.containers import CreateContainerFileRequest, CreateContainerRequest
from parley.services.containers import ContainersService, container_file_object, container_object, upload_path


def _service(rt: Runtime) -> ContainersService:
    if rt.containers is None:
        raise NotFound("The Containers API is not enabled on this server.", code="unknown_url")
    return rt.containers


@endpoint
async def create_container(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    service = _service(rt)
    body = await parse_body(request, CreateContainerRequest)
    return json_response(container_object(await service.create(project, body), service.now()), rid)


@endpoint
async def list_containers(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    service = _service(rt)
    records, has_more = await service.list_containers(project, request.query_params.get("name"), page_query(request))
    now = service.now()
    return json_response(list_body([container_object(r, now) for r in records], has_more), rid)


@endpoint
async def retrieve_container(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    service = _service(rt)
    record = await service.get(project, request.path_params["container_id"])
    return json_response(container_object(record, service.now()), rid)


@endpoint
async def delete_container(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    container_id = request.path_params["container_id"]
    await _service(rt).delete(project, container_id)
    return json_response({"id": container_id, "object": "container.deleted", "deleted": True}, rid)


async def _uploaded(request: Request, rt: Runtime, limit: int) -> tuple[str, bytes]:
    """(file name, bytes) of a multipart upload, at most `limit` bytes (413 past it)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and \
            int(declared) > limit + FORM_OVERHEAD_BYTES:
        raise PayloadTooLarge(f"A container file may have at most {limit} bytes.")
    cfg = rt.settings.files
    form = MultipartUpload(request, "file", UploadDeadlines(cfg.upload_idle_timeout_s, cfg.upload_timeout_s),
                           BodyLimit(limit + FORM_OVERHEAD_BYTES, f"A container file may have at most {limit} bytes."))
    pieces: list[bytes] = []
    size = 0
    async for piece in form.file_chunks():
        size += len(piece)
        if size > limit:
            raise PayloadTooLarge(f"A container file may have at most {limit} bytes.")
        pieces.append(piece)
    if form.file is None:
        raise InvalidRequest("Missing required parameter: 'file' (or send JSON with a 'file_id').", param="file",
                             code="missing_required_parameter")
    return form.file.filename, b"".join(pieces)


@endpoint
async def create_container_file(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    service = _service(rt)
    container_id = request.path_params["container_id"]
    await service.running(project, container_id)  # before a large upload is read
    if request.headers.get("content-type", "").lower().startswith("multipart/"):
        filename, data = await _uploaded(request, rt, service.config.max_file_bytes)
        record = await service.add_file(project, container_id, upload_path(filename), data)
    else:
        body = await parse_body(request, CreateContainerFileRequest)
        record = await service.copy_file(project, container_id, body.file_id)
    return json_response(container_file_object(record), rid)


@endpoint
async def list_container_files(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    records, has_more = await _service(rt).list_files(project, request.path_params["container_id"],
                                                      page_query(request))
    return json_response(list_body([container_file_object(r) for r in records], has_more), rid)


@endpoint
async def retrieve_container_file(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    params = request.path_params
    record = await _service(rt).get_file(project, params["container_id"], params["file_id"])
    return json_response(container_file_object(record), rid)


@endpoint
async def delete_container_file(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    params = request.path_params
    await _service(rt).delete_file(project, params["container_id"], params["file_id"])
    return json_response({"id": params["file_id"], "object": "container.file.deleted", "deleted": True}, rid)


@endpoint
async def retrieve_container_file_content(request: Request, rid: str) -> Response:
    """The raw bytes, always as an attachment and never sniffed: the code in the container wrote them."""
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    params = request.path_params
    service = _service(rt)
    record = await service.get_file(project, params["container_id"], params["file_id"])
    chunks = await service.open_file(project, params["container_id"], params["file_id"])
    name = record.path.rsplit("/", 1)[-1]
    headers = {
        "content-length": str(record.bytes),
        "content-disposition": f"attachment; filename*=UTF-8''{quote(name, safe='')}",
        "x-content-type-options": "nosniff",
        "x-request-id": rid,
    }
    return StreamingResponse(chunks, media_type=guess_media_type(name) or "application/octet-stream",
                             headers=headers)
