"""The per-app runtime: every shared object, built once in the app's lifespan (no module globals)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from parley.api.auth import Authenticator
from parley.config import Settings
from parley.providers.http1 import Http1Pool
from parley.providers.registry import ModelRegistry
from parley.services.background_responses import BackgroundResponses
from parley.services.conversations import ConversationsService
from parley.services.prompts import PromptsService
from parley.services.responses import ResponsesService
from parley.store.sql import SqlStore


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


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime
