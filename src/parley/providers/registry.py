"""Public model ids -> providers, built once from the settings at start-up.

Each configured model is one deployment: a provider of its wire format (`provider` in the config: a
ChatCompletionsProvider, or a NativeProvider with the Responses, Anthropic or Gemini wire). `build_provider` makes
one deployment's provider; routing a public id over several deployments is a Provider that wraps several of them,
so nothing above the registry changes when that comes.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from parley.config import ModelConfig, Settings
from parley.errors import InvalidRequest
from parley.providers.anthropic import AnthropicWire
from parley.providers.base import ModelCall, ModelStatus, Provider
from parley.providers.chat_completions import ChatCompletionsProvider, ReplyLimits
from parley.providers.gemini import GeminiWire
from parley.providers.http1 import Http1Pool
from parley.providers.native import NativeProvider, NativeUpstream, Wire
from parley.providers.native_profiles import NativeProfile, resolve_native_profile
from parley.providers.openai_responses import ResponsesWire
from parley.providers.profiles import Profile, resolve_profile
from parley.providers.redact import SecretMasker
from parley.providers.routing import Deployment, Load, RoutedProvider
from parley.providers.tokens import Encodings


@dataclass(frozen=True, slots=True)
class ModelEntry:
    id: str
    owned_by: str
    created: int
    upstream_model: str
    context_window: int
    provider: Provider
    # Models Parley runs itself (the embedded one) say whether they can answer now; upstreams are not probed.
    status: Callable[[], ModelStatus] | None = None
    # Built-in tool types its upstream runs itself (config `hosted_tools`; services/hosted_tools.py).
    hosted_tools: frozenset[str] = frozenset()
    capabilities: Capabilities | None = None  # what /v1/models says the model supports
    deployments: tuple[str, ...] = ()  # a route's deployments, in configured order (listed by /v1/models)
    # What only the model can refuse of a call, asked without generating (the embedded model's grammar check):
    # raises the 400 opening the call would. A background create asks it before queueing; None: nothing to ask.
    check: Callable[[ModelCall], Awaitable[None]] | None = None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a model supports, as its profile says (listed by /v1/models). Function tools, structured output and
    every built-in tool work on any model (Parley checks what an upstream cannot enforce); these say how."""

    vision: bool  # input images (a 400 without)
    native_files: bool  # input files as the upstream's own file parts (otherwise their extracted text)
    reasoning_effort: bool  # `reasoning.effort` reaches the upstream
    tool_choice: str  # "native": forced by the upstream; "checked": offered as auto, a breaking turn fails
    structured_output: str  # "native": the upstream constrains it; "checked": validated by Parley

    @classmethod
    def of_chat(cls, profile: Profile) -> Capabilities:
        native_choice = profile.tool_choice_required and profile.tool_choice_named
        return cls(profile.vision, profile.files, profile.reasoning_effort,
                   "native" if native_choice else "checked", "native" if profile.json_schema else "checked")

    @classmethod
    def of_native(cls, profile: NativeProfile) -> Capabilities:
        return cls(profile.vision, profile.files, True, "native", "native")

    @classmethod
    def common(cls, each: Sequence[Capabilities]) -> Capabilities:
        """What every one of a route's deployments supports."""
        return cls(all(c.vision for c in each), all(c.native_files for c in each),
                   all(c.reasoning_effort for c in each),
                   "native" if all(c.tool_choice == "native" for c in each) else "checked",
                   "native" if all(c.structured_output == "native" for c in each) else "checked")

    def as_json(self, context_window: int, hosted_tools: frozenset[str]) -> dict[str, object]:
        return {"context_window": context_window, "vision": self.vision, "native_files": self.native_files,
                "reasoning_effort": self.reasoning_effort, "tool_choice": self.tool_choice,
                "structured_output": self.structured_output, "hosted_tools": sorted(hosted_tools)}


class ModelRegistry:
    def __init__(self, entries: list[ModelEntry]) -> None:
        self._entries = {e.id: e for e in entries}

    def get(self, model_id: str | None) -> ModelEntry:
        if not model_id:
            raise InvalidRequest("Missing required parameter: 'model'.", param="model",
                                 code="missing_required_parameter")
        entry = self._entries.get(model_id)
        if entry is None:
            raise InvalidRequest(f"The model '{model_id}' does not exist.", param="model", code="model_not_found")
        return entry

    def find(self, model_id: str) -> ModelEntry | None:
        return self._entries.get(model_id)

    def all(self) -> list[ModelEntry]:
        return list(self._entries.values())


@dataclass(frozen=True, slots=True)
class UpstreamPolicy:
    """What every configured upstream shares: how much of a reply is taken, which secrets are masked."""

    limits: ReplyLimits
    masker: SecretMasker
    memo_bytes: int = 0  # each Chat Completions model's memo of translated contexts (providers/prefix_memo.py)

    @classmethod
    def from_settings(cls, settings: Settings) -> UpstreamPolicy:
        limits = ReplyLimits(settings.max_upstream_reply_bytes, settings.max_output_chars)
        # Every configured upstream key is masked in every upstream's errors (one may quote another's).
        return cls(limits, SecretMasker(cfg.resolved_api_key() for cfg in settings.models), settings.chain_cache_bytes)


def chat_provider(
    cfg: ModelConfig, http: Http1Pool, encodings: Encodings | None = None, policy: UpstreamPolicy | None = None
) -> ChatCompletionsProvider:
    return ChatCompletionsProvider(
        model_id=cfg.id,
        base_url=cfg.base_url,
        api_key=cfg.resolved_api_key(),
        profile=resolve_profile(cfg.profile, cfg.quirks),
        http=http,
        connect_timeout_s=cfg.connect_timeout_s,
        read_timeout_s=cfg.read_timeout_s,
        encodings=encodings,
        limits=policy.limits if policy else None,
        masker=policy.masker if policy else None,
        memo_bytes=policy.memo_bytes if policy else 0,
    )


# Each wire built with the size of its memo of translated contexts.
_WIRES: dict[str, Callable[[int], Wire]] = {
    "openai_responses": ResponsesWire, "anthropic": AnthropicWire, "gemini": GeminiWire,
}


def build_provider(
    cfg: ModelConfig, http: Http1Pool, encodings: Encodings | None = None, policy: UpstreamPolicy | None = None
) -> Provider:
    """The provider of one configured deployment, by its wire format."""
    if cfg.provider == "chat_completions":
        return chat_provider(cfg, http, encodings, policy)
    upstream = NativeUpstream(
        model_id=cfg.id, base_url=cfg.base_url, api_key=cfg.resolved_api_key(),
        profile=resolve_native_profile(cfg.provider, cfg.profile, cfg.quirks),
        connect_timeout_s=cfg.connect_timeout_s, read_timeout_s=cfg.read_timeout_s,
    )
    wire = _WIRES[cfg.provider](policy.memo_bytes if policy else 0)
    return NativeProvider(upstream, wire, http, encodings=encodings,
                          limits=policy.limits if policy else None, masker=policy.masker if policy else None,
                          memo_bytes=policy.memo_bytes if policy else 0)


def capabilities_of(cfg: ModelConfig) -> Capabilities:
    if cfg.provider == "chat_completions":
        return Capabilities.of_chat(resolve_profile(cfg.profile, cfg.quirks))
    return Capabilities.of_native(resolve_native_profile(cfg.provider, cfg.profile, cfg.quirks))


def configured_entries(
    settings: Settings, http: Http1Pool, created: int, encodings: Encodings | None = None
) -> list[ModelEntry]:
    policy = UpstreamPolicy.from_settings(settings)
    return [
        ModelEntry(
            id=cfg.id,
            owned_by=cfg.owned_by,
            created=created,
            upstream_model=cfg.upstream_model or cfg.id,
            context_window=cfg.context_window,
            provider=build_provider(cfg, http, encodings, policy),
            hosted_tools=frozenset(cfg.hosted_tools),
            capabilities=capabilities_of(cfg),
        )
        for cfg in settings.models
    ]


def routed(entries: list[ModelEntry], settings: Settings) -> list[ModelEntry]:
    """The public models: each configured one (behind a route of one when it has `retries` or a limit), each
    route over its deployments, and every alias as its model under another id."""
    log = logging.getLogger("parley.routing")
    configs = {m.id: m for m in settings.models}
    by_id: dict[str, ModelEntry] = {}
    loads: dict[str, Load] = {}  # one per deployment, whichever routes use it
    public: list[ModelEntry] = []
    for entry in entries:
        cfg = configs.get(entry.id)
        by_id[entry.id] = entry
        if cfg is not None and (cfg.retries or cfg.max_concurrent or cfg.requests_per_minute
                                or cfg.tokens_per_minute):
            deployment = _deployment(entry, cfg, 1.0, loads)
            entry = dataclasses.replace(entry, provider=RoutedProvider(entry.id, [deployment], cooldown_s=0.0))
        public.append(entry)
        public += [dataclasses.replace(entry, id=alias) for alias in (cfg.aliases if cfg is not None else ())]
    for route in settings.routes:
        weights = route.weights or [1.0] * len(route.deployments)
        members = [(by_id[name], weight) for name, weight in zip(route.deployments, weights, strict=True)
                   if name in by_id]
        missing = [name for name in route.deployments if name not in by_id]
        if missing:  # only the embedded model can be configured and absent (not installed)
            log.warning("route %s: deployments %s are not available", route.id, missing)
        if not members:
            continue
        deployments = [_deployment(e, configs.get(e.id), weight, loads) for e, weight in members]
        caps = [e.capabilities for e, _ in members if e.capabilities is not None]
        entry = ModelEntry(
            id=route.id, owned_by=route.owned_by, created=members[0][0].created, upstream_model=route.id,
            context_window=min(e.context_window for e, _ in members),
            provider=RoutedProvider(route.id, deployments, strategy=route.strategy, cooldown_s=route.cooldown_s,
                                    retry_max_wait_s=route.retry_max_wait_s, cache_affinity=route.cache_affinity),
            capabilities=Capabilities.common(caps) if len(caps) == len(members) else None,
            deployments=tuple(e.id for e, _ in members),
        )
        public.append(entry)
        public += [dataclasses.replace(entry, id=alias) for alias in route.aliases]
    return public


def _deployment(entry: ModelEntry, cfg: ModelConfig | None, weight: float, loads: dict[str, Load]) -> Deployment:
    """A model as a route's deployment, with its limits (none for the embedded model) and the one Load it shares
    with every other route over it."""
    load = loads.setdefault(entry.id, Load())
    if cfg is None:
        return Deployment(entry.id, entry.provider, entry.upstream_model, weight=weight, load=load)
    return Deployment(entry.id, entry.provider, entry.upstream_model, cfg.retries, weight, cfg.max_concurrent, load,
                      cfg.requests_per_minute, cfg.tokens_per_minute)
