"""HTTP endpoints of /v1/files (api-surface.md §1.4): multipart upload streamed to storage, list, retrieve,
content and delete, all scoped to the caller's project."""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from parley.api.body_coding import BodyLimit
from parley.api.http import endpoint, json_response, list_body, page_query
from parley.api.multipart import FORM_OVERHEAD_BYTES, MultipartUpload, UploadDeadlines
from parley.api.runtime import runtime_of
from parley.errors import InvalidRequest, PayloadTooLarge
from parley.services.files import MAX_EXPIRY_S, MIN_EXPIRY_S, UPLOAD_PURPOSES, FileUpload, file_object

MAX_FILENAME_CHARS = 1024
_LIST_LIMIT = 10_000  # the API's default and maximum page size for files


def _missing(param: str) -> InvalidRequest:
    return InvalidRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def _check_fields(fields: dict[str, str]) -> None:
    """The form's own fields, whichever of them have arrived (also before the file, to fail early)."""
    purpose = fields.get("purpose")
    if purpose is not None and purpose not in UPLOAD_PURPOSES:
        raise InvalidRequest(f"Invalid value for 'purpose': '{purpose[:100]}'; expected one of "
                             f"{', '.join(UPLOAD_PURPOSES)}.", param="purpose")
    anchor = fields.get("expires_after[anchor]")
    if anchor is not None and anchor != "created_at":
        raise InvalidRequest("Invalid value for 'expires_after.anchor': expected 'created_at'.",
                             param="expires_after.anchor")
    seconds = fields.get("expires_after[seconds]")
    if seconds is not None and not (seconds.isascii() and seconds.isdigit()
                                    and MIN_EXPIRY_S <= int(seconds) <= MAX_EXPIRY_S):
        raise InvalidRequest(f"Invalid value for 'expires_after.seconds': expected an integer between "
                             f"{MIN_EXPIRY_S} and {MAX_EXPIRY_S}.", param="expires_after.seconds")


def _upload(form: MultipartUpload) -> FileUpload:
    """The whole form, once read: every field checked, the required ones present."""
    fields = form.fields
    _check_fields(fields)
    if form.file is None:
        raise _missing("file")
    purpose = fields.get("purpose")
    if purpose is None:
        raise _missing("purpose")
    anchor, seconds = fields.get("expires_after[anchor]"), fields.get("expires_after[seconds]")
    if (anchor is None) != (seconds is None):
        raise _missing("expires_after.anchor" if anchor is None else "expires_after.seconds")
    if len(form.file.filename) > MAX_FILENAME_CHARS:
        raise InvalidRequest(f"The file name is longer than {MAX_FILENAME_CHARS} characters.", param="file")
    return FileUpload(form.file.filename, purpose, int(seconds) if seconds is not None else None,
                      form.file.content_type)


@endpoint
async def create_file(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    limit = rt.files.max_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and \
            int(declared) > limit + FORM_OVERHEAD_BYTES:
        raise PayloadTooLarge(f"The file is larger than the limit of {limit} bytes.")
    cfg = rt.settings.files
    decoded = BodyLimit(limit + FORM_OVERHEAD_BYTES, f"The file is larger than the limit of {limit} bytes.")
    form = MultipartUpload(request, "file", UploadDeadlines(cfg.upload_idle_timeout_s, cfg.upload_timeout_s),
                           decoded, _check_fields)
    record = await rt.files.create(project, form.file_chunks(), lambda: _upload(form))
    return json_response(file_object(record), rid)


@endpoint
async def list_files(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    query = page_query(request, default_limit=_LIST_LIMIT, max_limit=_LIST_LIMIT)
    page = await rt.files.list(project, request.query_params.get("purpose"), query)
    return json_response(list_body([file_object(record) for record in page.data], page.has_more), rid)


@endpoint
async def retrieve_file(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    return json_response(file_object(await rt.files.get(project, request.path_params["file_id"])), rid)


@endpoint
async def delete_file(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    return json_response(await rt.files.delete(project, request.path_params["file_id"]), rid)


@endpoint
async def retrieve_file_content(request: Request, rid: str) -> Response:
    """The raw bytes, streamed, with the type the file was uploaded as. Always an attachment and never
    sniffed: the content is whatever a client uploaded."""
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    file_id = request.path_params["file_id"]
    record = await rt.files.get(project, file_id)
    chunks = await rt.files.open(project, file_id)
    headers = {
        "content-length": str(record.bytes),
        "content-disposition": f"attachment; filename*=UTF-8''{quote(record.filename, safe='')}",
        "x-content-type-options": "nosniff",
        "x-request-id": rid,
    }
    return StreamingResponse(chunks, media_type=record.content_type, headers=headers)
