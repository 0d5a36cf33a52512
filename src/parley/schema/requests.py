"""Request bodies of POST /v1/responses and friends (api-surface.md §2), validated with pydantic.

Unknown top-level fields are ignored (clients send extras); known fields are checked for type and
range and a violation becomes a 400 naming the parameter (see `param_from_loc`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from parley.schema.id_fields import BodyId

IncludeValue = Literal[
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
]
ServiceTier = Literal["auto", "default", "flex", "scale", "priority", "fast", "ultrafast"]
Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]

Short64 = Annotated[str, StringConstraints(max_length=64)]


class Lenient(BaseModel):
    """Nested request objects: unknown keys are ignored, known keys validated."""

    model_config = ConfigDict(extra="ignore", strict=True)


class Passthrough(BaseModel):
    """Objects echoed back as sent (their extra keys are kept)."""

    model_config = ConfigDict(extra="allow", strict=True)


class StreamOptions(Lenient):
    include_obfuscation: bool | None = None


class ConversationRef(Lenient):
    id: BodyId


class JsonSchemaFormat(Lenient):
    type: Literal["json_schema"]
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextFormat(Lenient):
    type: Literal["text"]


class JsonObjectFormat(Lenient):
    type: Literal["json_object"]


class TextConfig(Lenient):
    format: Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(Passthrough):
    effort: Effort | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None
    context: Literal["auto", "current_turn", "all_turns"] | None = None
    mode: str | None = None


class PromptRef(Passthrough):
    id: BodyId
    version: str | None = None
    variables: dict[str, Any] | None = None


class PromptCacheOptions(Lenient):
    """Echoed with its defaults filled in, as the Response type requires `mode` and `ttl`."""

    mode: Literal["implicit", "explicit"] = "implicit"
    ttl: Literal["30m", "12h"] = "30m"
    comparison_response_id: BodyId | None = None
    prewarm: bool | None = None


class ContextManagement(Lenient):
    type: Literal["compaction"]
    compact_threshold: int | None = Field(default=None, ge=1)


class FunctionTool(Passthrough):
    type: Literal["function"]
    name: Annotated[str, StringConstraints(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


# Tool types of the OpenAI API. Unknown ones are a 400; known but unsupported ones a 400 `unsupported_tool`.
KNOWN_TOOL_TYPES = frozenset(
    {
        "function", "custom", "namespace", "file_search", "web_search", "web_search_2025_08_26",
        "web_search_preview", "web_search_preview_2025_03_11", "code_interpreter", "mcp",
        "image_generation", "computer", "computer_use", "computer_use_preview", "local_shell", "shell",
        "apply_patch", "tool_search", "programmatic_tool_calling",
    }
)


class ToolChoiceFunction(Lenient):
    type: Literal["function"]
    name: str


class ToolChoiceAllowed(Passthrough):
    type: Literal["allowed_tools"]
    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]] = Field(min_length=1, max_length=128)


class ToolChoiceOther(Passthrough):
    type: str
    name: str | None = None


def _tool_choice_tag(value: Any) -> str | None:
    # The discriminator is checked to be a string first; "allowed_tools" without its fields must fail as
    # allowed_tools, not pass as some other tool choice.
    kind = value.get("type") if isinstance(value, dict) else None
    if not isinstance(kind, str):
        return None
    return kind if kind in ("function", "allowed_tools") else "other"


ToolChoiceObject = Annotated[
    Annotated[ToolChoiceFunction, Tag("function")]
    | Annotated[ToolChoiceAllowed, Tag("allowed_tools")]
    | Annotated[ToolChoiceOther, Tag("other")],
    Discriminator(_tool_choice_tag, custom_error_type="invalid_value",
                  custom_error_message="Invalid tool_choice: unknown or missing 'type'"),
]
ToolChoice = Literal["none", "auto", "required"] | ToolChoiceObject


def _check_metadata(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return None
    if len(value) > 16:
        raise ValueError("metadata may have at most 16 keys")
    for key, val in value.items():
        if len(key) > 64:
            raise ValueError(f"metadata key {key[:20]!r}... is longer than 64 characters")
        if len(val) > 512:
            raise ValueError(f"metadata value for {key!r} is longer than 512 characters")
    return value


class CreateResponseRequest(BaseModel):
    """POST /v1/responses. Items in `input` are validated separately by schema.items."""

    # unknown fields: api.http.FieldPolicy. Strict: "true", 1 or "16" are not a boolean or a number (pydantic's lax
    # mode would convert them silently; OpenAI answers a 400), while a JSON integer still fills a float.
    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = None
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    previous_response_id: BodyId | None = None
    conversation: BodyId | ConversationRef | None = None
    store: bool | None = None
    background: bool | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    include: list[IncludeValue] | None = None
    max_output_tokens: int | None = Field(default=None, ge=16)
    max_tool_calls: int | None = Field(default=None, ge=1)
    parallel_tool_calls: bool | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    truncation: Literal["auto", "disabled"] | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: ToolChoice | None = None
    prompt: PromptRef | None = None
    metadata: dict[str, str] | None = None
    safety_identifier: Short64 | None = None
    prompt_cache_key: Short64 | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    prompt_cache_options: PromptCacheOptions | None = None
    service_tier: ServiceTier | None = None
    context_management: list[ContextManagement] | None = None
    moderation: dict[str, Any] | None = None
    user: str | None = None
    # Sent by Codex on every request (OpenAI's API accepts it; no SDK type has it): known, so that
    # unknown_fields = "reject" does not refuse Codex; not used.
    client_metadata: dict[str, Any] | None = None

    _check_md = field_validator("metadata")(_check_metadata)

    @model_validator(mode="after")
    def _cross_field(self) -> CreateResponseRequest:
        if self.previous_response_id is not None and self.conversation is not None:
            raise _CrossFieldError(
                "previous_response_id",
                "Mutually exclusive parameters: 'previous_response_id' and 'conversation' cannot be used together.",
            )
        if self.stream_options is not None and not self.stream:
            raise _CrossFieldError("stream_options", "'stream_options' is only allowed when 'stream' is true.")
        if self.background and self.store is False:
            raise _CrossFieldError("background", "Background responses require 'store' to be true.")
        return self

    @property
    def conversation_id(self) -> str | None:
        if self.conversation is None:
            return None
        return self.conversation if isinstance(self.conversation, str) else self.conversation.id


class _CrossFieldError(ValueError):
    """Raised from model validators; carries the parameter the message is about."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def param_from_loc(loc: tuple[int | str, ...], data: Any, prefix: str = "", missing: bool = False) -> str | None:
    """('input', 2, 'content', 0, 'text') -> 'input[2].content[0].text', walking the submitted data.

    Segments pydantic adds that are not in the data (union member names, discriminator tags such as
    'json_schema') are dropped; when the error is a missing field (`missing`), the key at the end of the
    path is kept (it is the missing field).
    """
    out = prefix
    node = data
    for position, seg in enumerate(loc):
        last = position == len(loc) - 1
        if isinstance(seg, int) and isinstance(node, list) and 0 <= seg < len(node):
            out += f"[{seg}]"
            node = node[seg]
        elif isinstance(seg, str) and isinstance(node, dict) and (seg in node or (last and missing)):
            out += f".{seg}" if out else seg
            node = node.get(seg)
    return out or None


def most_specific(err: ValidationError) -> ErrorDetails:
    """The error to report: the deepest location wins (a union reports every member's failure, and the
    member that got furthest into the data is the one the client meant); the first among equals."""
    errors = err.errors(include_url=False)
    # Among equals, a failed literal (one union member's fixed values) says least about what was meant.
    return max(errors, key=lambda e: (len(e["loc"]), e["type"] != "literal_error"))


def cross_field_param(error: Exception) -> str | None:
    return error.param if isinstance(error, _CrossFieldError) else None
