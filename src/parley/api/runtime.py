"""The per-app runtime: every shared object, built once in the app's lifespan (no module globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import BaseModel
from starlette.requests import Request

from parley.api.auth import Authenticator
from parley.api.http import FieldPolicy, parse_model, read_body
from parley.config import Settings
from parley.providers.http1 import Http1Pool
from parley.providers.registry import ModelRegistry
from parley.retrieval.fetch import UrlFetcher
from parley.services.background_responses import BackgroundResponses
from parley.services.containers import ContainersService
from parley.services.conversations import ConversationsService
from parley.services.files import FilesService
from parley.services.ingestion import IngestionWorker
from parley.services.keys import KeysService
from parley.services.limits import Limiter
from parley.services.prompts import PromptsService
from parley.services.readiness import Readiness
from parley.services.responses import ResponsesService
from parley.services.usage import Meter
from parley.services.usage_reports import UsageReports
from parley.services.vector_stores import VectorStoresService
from parley.store.sql import SqlStore
from parley.telemetry.observe import Telemetry


@dataclass(slots=True)
class Runtime:
    settings: Settings
    store: SqlStore
    http: Http1Pool
    models: ModelRegistry
    auth: Authenticator
    responses: ResponsesService
    prompts: PromptsService
    conversations: ConversationsService
    background: BackgroundResponses
    fields: FieldPolicy
    files: FilesService
    fetcher: UrlFetcher  # the SSRF guard: every server-side fetch of a client's or model's URL
    limiter: Limiter  # rate limits and budgets: every door admits model requests through it
    meter: Meter  # usage records and the charges of finished responses
    keys: KeysService
    usage_reports: UsageReports
    telemetry: Telemetry = field(default_factory=Telemetry)  # metrics, traces, access lines (telemetry/)
    readiness: Readiness | None = None  # GET /ready's checks
    ingestion: IngestionWorker | None = None  # this process's vector store indexing (its stats feed /metrics)
    containers: ContainersService | None = None  # the Containers API and code_interpreter
    vector_stores: VectorStoresService | None = None  # the Vector Stores API and file_search


M = TypeVar("M", bound=BaseModel)


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def parse_body(request: Request, model: type[M]) -> M:
    """The request's JSON body as `model`, read within the configured size and time limits, its unknown
    top-level fields handled by the configured policy."""
    rt = runtime_of(request)
    body = await read_body(request, rt.settings.max_body_bytes, rt.settings.body_timeout_s)
    return parse_model(model, body, rt.fields)
