"""HTTP endpoints of /v1/prompts: Parley's admin API for the prompt templates `prompt` refers to.

OpenAI has no public endpoint to create prompts (api-surface.md §2, `prompt`), so this shape is Parley's:
prompt objects `{id, object: "prompt", version, created_at, instructions, input, model, metadata}`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from parley.api.http import endpoint, json_response, list_body, page_query
from parley.api.runtime import parse_body, runtime_of
from parley.schema.prompts import PromptBody


async def _body(request: Request) -> PromptBody:
    return await parse_body(request, PromptBody)


@endpoint
async def create_prompt(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    return json_response(await rt.prompts.create(project, await _body(request)), rid)


@endpoint
async def create_prompt_version(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    body = await _body(request)
    return json_response(await rt.prompts.add_version(project, request.path_params["prompt_id"], body), rid)


@endpoint
async def list_prompts(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    page = await rt.prompts.list_latest(project, page_query(request))
    return json_response(list_body(page.data, page.has_more), rid)


@endpoint
async def retrieve_prompt(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    version = request.path_params.get("version")
    return json_response(await rt.prompts.retrieve(project, request.path_params["prompt_id"], version), rid)


@endpoint
async def delete_prompt(request: Request, rid: str) -> Response:
    rt = runtime_of(request)
    project = await rt.auth.project_of(request)
    return json_response(await rt.prompts.delete(project, request.path_params["prompt_id"]), rid)
