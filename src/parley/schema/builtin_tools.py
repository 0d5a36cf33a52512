"""Parameters of the built-in (server-run) tools a request may declare in `tools` (api-surface.md §4).

Each tool type Parley runs maps to its parameter model, the tool it is, and the function name the model
calls it by. Unknown keys inside a tool entry are ignored (clients send fields newer than the SDK's types);
known ones are validated. Tool types absent here are refused with `unsupported_tool` (schema/tools.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    field_validator,
)

from parley.schema.containers import CodeInterpreterParams
from parley.schema.id_fields import BodyId


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


# Strict numbers: `true` is not 1 (a JSON boolean where a number belongs is a 400, never silently repaired).
class HybridSearch(_Lenient):
    embedding_weight: StrictFloat = Field(ge=0)
    text_weight: StrictFloat = Field(ge=0)


class RankingOptions(_Lenient):
    ranker: Literal["none", "auto", "default-2024-11-15", "default_2024_08_21"] | None = None
    score_threshold: StrictFloat | None = Field(default=None, ge=0, le=1)
    hybrid_search: HybridSearch | None = None


class FileSearchParams(_Lenient):
    type: Literal["file_search"]
    vector_store_ids: list[BodyId] = Field(min_length=1, max_length=16)
    max_num_results: StrictInt | None = Field(default=None, ge=1, le=50)
    filters: dict[str, Any] | None = None  # comparison or compound filter, checked by the vector stores service
    ranking_options: RankingOptions | None = None


# Free text that is sent on to search providers (some as HTTP headers): printable, bounded.
_LocationText = Annotated[str, StringConstraints(max_length=128, pattern=r"^[^\x00-\x1f\x7f]*$")]


class UserLocation(_Lenient):
    type: Literal["approximate"] | None = None
    city: _LocationText | None = None
    country: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}$")] | None = None  # ISO 3166-1 alpha-2
    region: _LocationText | None = None
    timezone: _LocationText | None = None  # IANA, e.g. "Europe/Paris"


class PreviewUserLocation(UserLocation):
    type: Literal["approximate"]  # required by web_search_preview


# Host names only (IDNs in their punycode form): labels of letters, digits and hyphens.
_HOST = re.compile(r"^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*\.?$")


def _domain_problem(domain: str) -> str | None:
    if "://" in domain or "/" in domain:
        return "must be a domain such as 'example.com', without a scheme or path"
    if not _HOST.match(domain.lower()):
        return "must be a domain such as 'example.com'"
    return None


class WebSearchFilters(_Lenient):
    allowed_domains: list[str] | None = Field(default=None, max_length=100)

    @field_validator("allowed_domains")
    @classmethod
    def _domains(cls, domains: list[str] | None) -> list[str] | None:
        for domain in domains or ():
            problem = _domain_problem(domain)
            if problem is not None:
                raise ValueError(f"allowed_domains entry {domain!r} {problem}")
        return [domain.lower().rstrip(".") for domain in domains] if domains is not None else None


class WebSearchParams(_Lenient):
    type: Literal["web_search", "web_search_2025_08_26"]
    external_web_access: StrictBool | None = None  # default true; false: only the local page cache
    filters: WebSearchFilters | None = None
    search_context_size: Literal["low", "medium", "high"] | None = None
    user_location: UserLocation | None = None


class WebSearchPreviewParams(_Lenient):
    type: Literal["web_search_preview", "web_search_preview_2025_03_11"]
    search_context_size: Literal["low", "medium", "high"] | None = None
    user_location: PreviewUserLocation | None = None
    search_content_types: list[Literal["text", "image"]] | None = None


class McpToolFilter(_Lenient):
    """Tools of an MCP server chosen by name and/or by their `readOnlyHint` annotation (both must hold)."""

    tool_names: list[str] | None = Field(default=None, max_length=1000)
    read_only: StrictBool | None = None


class McpApprovalFilter(_Lenient):
    always: McpToolFilter | None = None
    never: McpToolFilter | None = None


# HTTP header names (RFC 9110 tokens) and values without line breaks; the transport's own headers are Parley's.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "content-type",
                               "accept", "mcp-session-id", "mcp-protocol-version", "last-event-id"})


class McpParams(_Lenient):
    type: Literal["mcp"]
    server_label: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")]
    server_url: Annotated[str, StringConstraints(max_length=2048)] | None = None
    connector_id: str | None = None  # refused: Parley has no connectors (services/mcp.py)
    tunnel_id: str | None = None  # refused likewise
    authorization: Annotated[str, StringConstraints(max_length=8192, pattern=r"^[^\x00-\x1f\x7f]*$")] | None = None
    headers: dict[str, Annotated[str, StringConstraints(max_length=8192)]] | None = Field(default=None, max_length=64)
    server_description: Annotated[str, StringConstraints(max_length=8192)] | None = None
    allowed_tools: list[str] | McpToolFilter | None = None
    require_approval: Literal["always", "never"] | McpApprovalFilter | None = None

    @field_validator("server_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("server_url must be an http(s) URL")
        return url

    @field_validator("headers")
    @classmethod
    def _header_fields(cls, headers: dict[str, str] | None) -> dict[str, str] | None:
        for name, value in (headers or {}).items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"the {name} header is set by the server, not by the request")
            if any(ch in value for ch in "\r\n\x00"):
                raise ValueError(f"the value of header {name!r} may not contain line breaks")
        return headers


class ImageMask(_Lenient):
    image_url: Annotated[str, StringConstraints(max_length=50_000_000)] | None = None
    file_id: BodyId | None = None


class ImageGenerationParams(_Lenient):
    """`image_generation` (tools/image_generation.py): the image settings sent to the images upstream."""

    type: Literal["image_generation"]
    action: Literal["generate", "edit", "auto"] | None = None
    background: Literal["transparent", "opaque", "auto"] | None = None
    input_fidelity: Literal["high", "low"] | None = None
    input_image_mask: ImageMask | None = None
    model: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    moderation: Literal["auto", "low"] | None = None
    output_compression: int | None = Field(default=None, ge=0, le=100)
    output_format: Literal["png", "webp", "jpeg", "gif", "svg"] | None = None
    partial_images: int | None = Field(default=None, ge=0, le=3)
    quality: Literal["low", "medium", "high", "xhigh", "max", "auto"] | None = None
    size: Annotated[str, StringConstraints(pattern=r"^(auto|[1-9][0-9]{1,4}x[1-9][0-9]{1,4})$")] | None = None


class ToolSearchParams(_Lenient):
    """`tool_search`: `execution` server (tools/tool_search.py searches the deferred tools) or client (the call
    goes to the client, with the `description` and `parameters` it gives)."""

    type: Literal["tool_search"]
    execution: Literal["server", "client"] | None = None
    description: Annotated[str, StringConstraints(max_length=8192)] | None = None
    parameters: dict[str, Any] | None = None


# tool type -> (the tool it is, the function name the model calls, its parameters)
BUILTIN_PARAMS: Mapping[str, tuple[str, str, type[BaseModel]]] = MappingProxyType({
    "file_search": ("file_search", "file_search", FileSearchParams),
    "web_search": ("web_search", "web_search", WebSearchParams),
    "web_search_2025_08_26": ("web_search", "web_search", WebSearchParams),
    "web_search_preview": ("web_search", "web_search", WebSearchPreviewParams),
    "web_search_preview_2025_03_11": ("web_search", "web_search", WebSearchPreviewParams),
    "code_interpreter": ("code_interpreter", "python", CodeInterpreterParams),
    "image_generation": ("image_generation", "image_generation", ImageGenerationParams),
    # One entry per server; the functions the model calls are named after the server's tools (tools/mcp/names.py).
    "mcp": ("mcp", "mcp", McpParams),
})
