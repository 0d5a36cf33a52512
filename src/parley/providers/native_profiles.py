"""Profiles of the native upstream kinds (Responses, Anthropic Messages, Gemini), as data.

A profile says how an endpoint is reached (which header carries the key, fixed headers and query parameters)
and what it takes (images, files, the tokenizer that counts for it). Chosen per model with `profile`; single
flags are overridden with `quirks` (config.py NATIVE_QUIRKS lists which). Code never branches on a name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from parley.config import ProfileOverrides, TokenizerName


@dataclass(frozen=True, slots=True)
class NativeProfile:
    # The header carrying the key: `authorization` sends "Bearer <key>", any other header the key itself.
    auth_header: str = "authorization"
    # Sent with every request (e.g. anthropic-version).
    headers: tuple[tuple[str, str], ...] = ()
    # Sent as the `api-version` query parameter (Azure OpenAI).
    api_version: str | None = None
    # How input tokens are counted (providers/tokens.py), over the call's Chat Completions form.
    tokenizer: TokenizerName = "estimate"
    # Whether the model takes images; without, input_image parts are a 400.
    vision: bool = True
    # Whether input_file parts go as the upstream's own file parts (PDF documents, inline data); otherwise the
    # model gets the file's extracted text (services/file_inputs.py).
    files: bool = True
    # Anthropic requires max_tokens: what a request without max_output_tokens gets (before a thinking budget).
    default_max_tokens: int = 4096
    # Whether temperature and top_p are sent (Anthropic's Messages API no longer takes them).
    sampling: bool = True

    def with_overrides(self, overrides: ProfileOverrides) -> NativeProfile:
        fields = {f.name for f in dataclasses.fields(self)}
        changes = {k: v for k, v in overrides.model_dump(exclude_none=True).items() if k in fields}
        return dataclasses.replace(self, **changes)


_RESPONSES = NativeProfile()
_ANTHROPIC = NativeProfile(
    # https://docs.anthropic.com/en/api/overview (x-api-key) and /en/api/versioning (anthropic-version)
    auth_header="x-api-key", headers=(("anthropic-version", "2023-06-01"),),
)
# api.anthropic.com: its Messages API takes no temperature or top_p any more (anthropic 2.17's MessageCreateParams
# has neither); servers of the older API (`generic`) still do.
_ANTHROPIC_API = dataclasses.replace(_ANTHROPIC, sampling=False)
# https://ai.google.dev/api/generate-content (the key in x-goog-api-key)
_GEMINI = NativeProfile(auth_header="x-goog-api-key")

NATIVE_PROFILES: dict[tuple[str, str], NativeProfile] = {
    ("openai_responses", "generic"): _RESPONSES,
    # https://platform.openai.com/docs/api-reference/responses (gpt-4o, gpt-4.1, o-series, gpt-5: o200k_base)
    ("openai_responses", "openai"): NativeProfile(tokenizer="tiktoken:o200k_base"),
    # https://learn.microsoft.com/azure/ai-foundry/openai/api-version-lifecycle (the v1 API: `api-key` header,
    # `api-version=preview` on {resource}.openai.azure.com/openai/v1/responses; older deployments name a dated
    # version, e.g. quirks = {api_version = "2025-04-01-preview"} with base_url .../openai)
    ("openai_responses", "azure"): NativeProfile(auth_header="api-key", api_version="preview",
                                                 tokenizer="tiktoken:o200k_base"),
    ("anthropic", "generic"): _ANTHROPIC,
    ("anthropic", "anthropic"): _ANTHROPIC_API,
    ("gemini", "generic"): _GEMINI,
    ("gemini", "gemini"): _GEMINI,
}


def resolve_native_profile(kind: str, name: str, overrides: ProfileOverrides) -> NativeProfile:
    return NATIVE_PROFILES[(kind, name)].with_overrides(overrides)
