"""Request bodies of the Anthropic Messages API (`POST /v1/messages`, `/v1/messages/count_tokens`), validated with
pydantic. The shapes are the `anthropic` SDK's `MessageCreateParams` and Anthropic's API reference.

Unknown top-level fields follow the server's `unknown_fields` policy (api/http.py FieldPolicy); unknown keys of
nested objects are ignored, so `cache_control` (prompt caching) is accepted anywhere. Content blocks and tools are
discriminated by `type`: a type Parley does not serve is a 400 naming it, never dropped.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StringConstraints, Tag, model_validator

from parley.schema.id_fields import BodyId

# Anthropic's tool name rule is the one Parley's function tools follow (schema/requests.py FunctionTool).
ToolName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


def _by_type(tags: frozenset[str], what: str) -> Discriminator:
    """A discriminator on `type` whose unknown values fail with a message naming the type (pydantic's default
    names the union's tags instead)."""

    def tag(value: Any) -> str | None:
        kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        if not isinstance(kind, str):
            return None
        return kind if kind in tags else None

    return Discriminator(tag, custom_error_type="invalid_value",
                         custom_error_message=f"unknown or unsupported {what} type")


# -- sources -------------------------------------------------------------------------------------------------


class Base64Image(_Lenient):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str


class Base64Pdf(_Lenient):
    type: Literal["base64"]
    media_type: Literal["application/pdf"]
    data: str


class UrlSource(_Lenient):
    type: Literal["url"]
    url: str


class FileSource(_Lenient):
    """A file uploaded to this server's Files API (`file_id`)."""

    type: Literal["file"]
    file_id: BodyId


class PlainTextSource(_Lenient):
    type: Literal["text"]
    media_type: Literal["text/plain"]
    data: str


class TextBlock(_Lenient):
    type: Literal["text"]
    text: str


ImageSource = Annotated[
    Annotated[Base64Image, Tag("base64")] | Annotated[UrlSource, Tag("url")] | Annotated[FileSource, Tag("file")],
    _by_type(frozenset({"base64", "url", "file"}), "image source"),
]


class ImageBlock(_Lenient):
    type: Literal["image"]
    source: ImageSource


class ContentSource(_Lenient):
    """A document given as content blocks (its text and images)."""

    type: Literal["content"]
    content: str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]]


DocumentSource = Annotated[
    Annotated[Base64Pdf, Tag("base64")] | Annotated[PlainTextSource, Tag("text")]
    | Annotated[ContentSource, Tag("content")] | Annotated[UrlSource, Tag("url")] | Annotated[FileSource, Tag("file")],
    _by_type(frozenset({"base64", "text", "content", "url", "file"}), "document source"),
]


class DocumentBlock(_Lenient):
    type: Literal["document"]
    source: DocumentSource
    title: str | None = None
    context: str | None = None


class SearchResultBlock(_Lenient):
    type: Literal["search_result"]
    source: str
    title: str
    content: list[TextBlock]


class ToolReferenceBlock(_Lenient):
    """A deferred tool loaded by a tool search (in a tool_result's content)."""

    type: Literal["tool_reference"]
    tool_name: str


ToolResultPart = Annotated[
    Annotated[TextBlock, Tag("text")] | Annotated[ImageBlock, Tag("image")] | Annotated[DocumentBlock, Tag("document")]
    | Annotated[SearchResultBlock, Tag("search_result")] | Annotated[ToolReferenceBlock, Tag("tool_reference")],
    _by_type(frozenset({"text", "image", "document", "search_result", "tool_reference"}), "tool_result content"),
]


# -- content blocks ------------------------------------------------------------------------------------------


class ToolUseBlock(_Lenient):
    type: Literal["tool_use"]
    id: Annotated[BodyId, StringConstraints(min_length=1)]
    name: str
    input: dict[str, Any]


class ToolResultBlock(_Lenient):
    type: Literal["tool_result"]
    tool_use_id: Annotated[BodyId, StringConstraints(min_length=1)]
    content: str | list[ToolResultPart] = ""
    is_error: bool = False


class ThinkingBlock(_Lenient):
    type: Literal["thinking"]
    thinking: str
    signature: Annotated[str, StringConstraints(min_length=1)]


class RedactedThinkingBlock(_Lenient):
    type: Literal["redacted_thinking"]
    data: Annotated[str, StringConstraints(min_length=1)]


BLOCK_TYPES = frozenset({"text", "image", "document", "search_result", "tool_use", "tool_result", "thinking",
                         "redacted_thinking"})
ContentBlock = Annotated[
    Annotated[TextBlock, Tag("text")] | Annotated[ImageBlock, Tag("image")]
    | Annotated[DocumentBlock, Tag("document")] | Annotated[SearchResultBlock, Tag("search_result")]
    | Annotated[ToolUseBlock, Tag("tool_use")] | Annotated[ToolResultBlock, Tag("tool_result")]
    | Annotated[ThinkingBlock, Tag("thinking")] | Annotated[RedactedThinkingBlock, Tag("redacted_thinking")],
    _by_type(BLOCK_TYPES, "content block"),
]


class MessageParam(_Lenient):
    # `system`: Claude Code sends system turns mid-conversation (DESIGN.md, measured).
    role: Literal["user", "assistant", "system"]
    content: str | list[ContentBlock]


# -- tools and options ---------------------------------------------------------------------------------------


class CustomTool(_Lenient):
    type: Literal["custom"] | None = None
    name: ToolName
    description: str | None = None
    input_schema: dict[str, Any]
    strict: bool | None = None
    # Tool search: left out of what the model is offered until a tool_result's `tool_reference` loads it.
    defer_loading: bool = False


class AnthropicTool(_Lenient):
    """A tool Anthropic defines and runs or schematises itself (bash_20250124, web_search_20250305, ...)."""

    type: str
    name: str | None = None


def _tool_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return "custom" if kind in (None, "custom") else "anthropic"


Tool = Annotated[
    Annotated[CustomTool, Tag("custom")] | Annotated[AnthropicTool, Tag("anthropic")], Discriminator(_tool_tag),
]


class ToolChoice(_Lenient):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None

    @model_validator(mode="after")
    def _named(self) -> ToolChoice:
        if self.type == "tool" and not self.name:
            raise ValueError("tool_choice of type 'tool' needs the tool's 'name'")
        return self


class Thinking(_Lenient):
    type: Literal["enabled", "disabled", "adaptive", "between_tools"]
    budget_tokens: int | None = Field(default=None, ge=1024)
    display: Literal["summarized", "omitted"] | None = None

    @model_validator(mode="after")
    def _budget(self) -> Thinking:
        if self.type == "enabled" and self.budget_tokens is None:
            raise ValueError("thinking of type 'enabled' needs 'budget_tokens'")
        return self

    @property
    def on(self) -> bool:
        return self.type != "disabled"


class JsonOutputFormat(_Lenient):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Lenient):
    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: JsonOutputFormat | None = None


class Metadata(_Lenient):
    user_id: Annotated[str, StringConstraints(max_length=512)] | None = None


class MessagesBase(BaseModel):
    """What create and count_tokens share."""

    model_config = ConfigDict(extra="allow", strict=True)  # unknown fields: api/http.py FieldPolicy

    model: Annotated[str, StringConstraints(min_length=1)]
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    output_format: JsonOutputFormat | None = None  # the structured-outputs beta's spelling of output_config.format
    # Context editing (beta): accepted; Parley sends the conversation as given (README, "Anthropic Messages API").
    context_management: dict[str, Any] | None = None
    mcp_servers: list[dict[str, Any]] | None = None  # the MCP connector (beta): refused when not empty
    cache_control: dict[str, Any] | None = None  # automatic prompt caching: the upstream's own business


class CreateMessageRequest(MessagesBase):
    """POST /v1/messages."""

    max_tokens: int = Field(ge=1)
    metadata: Metadata | None = None
    stop_sequences: list[Annotated[str, StringConstraints(min_length=1)]] | None = None
    stream: bool | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)  # no Responses equivalent: accepted, not applied
    service_tier: Literal["auto", "standard_only"] | None = None
    container: Any = None  # for Anthropic's code execution tools, which Parley refuses
    inference_geo: str | None = None
    speed: Literal["standard", "fast"] | None = None

    @model_validator(mode="after")
    def _thinking_budget(self) -> CreateMessageRequest:
        thinking = self.thinking
        if thinking is not None and thinking.budget_tokens is not None and thinking.budget_tokens >= self.max_tokens:
            raise ValueError("thinking.budget_tokens must be less than max_tokens")
        return self


class CountTokensRequest(MessagesBase):
    """POST /v1/messages/count_tokens: the same body without the generation settings."""
