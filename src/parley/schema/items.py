"""Input items (api-surface.md §3): validation and normalisation into canonical stored items.

Canonical items have the shapes of the output-item union (§5.5): every item has `id` and `type`;
messages always carry a content list. A string `input` is one user message.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError

from parley.errors import InvalidRequest
from parley.ids import new_id
from parley.schema.client_tool_items import ID_PREFIX as CLIENT_TOOL_ID_PREFIX
from parley.schema.client_tool_items import MODELS as CLIENT_TOOL_ITEMS
from parley.schema.id_fields import BodyId
from parley.schema.mcp_items import ID_PREFIX as MCP_ID_PREFIX
from parley.schema.mcp_items import MODELS as MCP_ITEMS
from parley.schema.requests import most_specific, param_from_loc

Item = dict[str, Any]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Keep(BaseModel):
    model_config = ConfigDict(extra="allow")


class InputText(_Keep):
    type: Literal["input_text"]
    text: str


class InputImage(_Keep):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: BodyId | None = None
    detail: Literal["low", "high", "auto", "original"] = "auto"


class InputFile(_Keep):
    type: Literal["input_file"]
    file_id: BodyId | None = None
    file_url: str | None = None
    file_data: str | None = None
    filename: str | None = None


class OutputText(_Keep):
    type: Literal["output_text"]
    text: str
    annotations: list[dict[str, Any]] = Field(default_factory=list)
    logprobs: list[dict[str, Any]] | None = None


class Refusal(_Keep):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[InputText | InputImage | InputFile | OutputText | Refusal, Field(discriminator="type")]


class Message(_Lenient):
    type: Literal["message"] = "message"
    id: BodyId | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    status: Literal["in_progress", "completed", "incomplete"] | None = None
    phase: Literal["commentary", "final_answer"] | None = None


class ItemReference(_Lenient):
    type: Literal["item_reference"] | None = "item_reference"
    id: BodyId


class FunctionCall(_Keep):
    type: Literal["function_call"]
    id: BodyId | None = None
    call_id: Annotated[BodyId, Field(min_length=1, max_length=64)]
    name: str
    arguments: str
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallOutput(_Keep):
    type: Literal["function_call_output"]
    id: BodyId | None = None
    call_id: Annotated[BodyId, Field(min_length=1, max_length=64)]
    output: str | list[ContentPart]
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class Reasoning(_Keep):
    type: Literal["reasoning"]
    id: BodyId | None = None
    summary: list[dict[str, Any]] = Field(default_factory=list)
    content: list[dict[str, Any]] | None = None
    encrypted_content: str | None = None


class CustomToolCall(_Keep):
    type: Literal["custom_tool_call"]
    id: BodyId | None = None
    call_id: Annotated[BodyId, Field(min_length=1, max_length=64)]
    name: str
    input: str
    namespace: str | None = None


class CustomToolCallOutput(_Keep):
    type: Literal["custom_tool_call_output"]
    id: BodyId | None = None
    call_id: Annotated[BodyId, Field(min_length=1, max_length=64)]
    output: str | list[ContentPart]


class FileSearchResult(_Keep):
    """Every field is optional in the SDK's type; the ones present are typed."""

    file_id: str | None = None
    filename: str | None = None
    score: float | None = None
    text: str | None = None
    attributes: dict[str, str | float | bool] | None = None


class FileSearchCall(_Keep):
    type: Literal["file_search_call"]
    id: BodyId | None = None
    queries: list[str]
    status: Literal["in_progress", "searching", "completed", "incomplete", "failed"]
    results: list[FileSearchResult] | None = None


class WebSearchSource(_Keep):
    type: Literal["url"]
    url: str


class WebSearchSearch(_Keep):
    type: Literal["search"]
    query: str | None = None
    queries: list[str] | None = None
    sources: list[WebSearchSource] | None = None


class WebSearchOpenPage(_Keep):
    type: Literal["open_page"]
    url: str | None = None


class WebSearchFind(_Keep):
    type: Literal["find_in_page"]
    url: str
    pattern: str


class WebSearchCall(_Keep):
    type: Literal["web_search_call"]
    id: BodyId | None = None
    status: Literal["in_progress", "searching", "completed", "failed", "incomplete"]
    action: Annotated[WebSearchSearch | WebSearchOpenPage | WebSearchFind, Field(discriminator="type")]


class OtherItem(_Keep):
    """Item types Parley stores and echoes but does not interpret yet."""

    type: str
    id: BodyId | None = None


OTHER_ITEM_TYPES = frozenset(
    {
        "compaction", "code_interpreter_call", "image_generation_call", "computer_call", "computer_call_output",
        "local_shell_call", "local_shell_call_output", "shell_call", "shell_call_output", "apply_patch_call",
        "apply_patch_call_output", "mcp_list_tools", "mcp_approval_request", "mcp_approval_response",
        "mcp_call", "tool_search_call", "tool_search_output", "additional_tools", "program", "program_output",
    }
)
ITEM_TAGS = frozenset({"message", "item_reference", "function_call", "function_call_output", "reasoning",
                       "custom_tool_call", "custom_tool_call_output", "file_search_call", "web_search_call", "other"})


def _item_tag(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    kind = value.get("type")
    if kind is None:
        return "item_reference" if "role" not in value and "id" in value else "message"
    if not isinstance(kind, str):  # a discriminator is checked to be a string before any lookup
        return None
    if kind in ITEM_TAGS and kind != "other":
        return str(kind)
    return "other" if kind in OTHER_ITEM_TYPES else None


InputItem = Annotated[
    Annotated[Message, Tag("message")]
    | Annotated[ItemReference, Tag("item_reference")]
    | Annotated[FunctionCall, Tag("function_call")]
    | Annotated[FunctionCallOutput, Tag("function_call_output")]
    | Annotated[Reasoning, Tag("reasoning")]
    | Annotated[CustomToolCall, Tag("custom_tool_call")]
    | Annotated[CustomToolCallOutput, Tag("custom_tool_call_output")]
    | Annotated[FileSearchCall, Tag("file_search_call")]
    | Annotated[WebSearchCall, Tag("web_search_call")]
    | Annotated[OtherItem, Tag("other")],
    Discriminator(
        _item_tag,
        custom_error_type="invalid_value",
        custom_error_message="Invalid input item: unknown or missing 'type'",
    ),
]
_INPUT_ADAPTER: TypeAdapter[list[InputItem]] = TypeAdapter(list[InputItem])


def validation_to_invalid_request(err: ValidationError, prefix: str, data: Any) -> InvalidRequest:
    first = most_specific(err)
    param = param_from_loc(first["loc"], data, prefix, missing=first["type"] == "missing")
    loc_text = f" at '{param}'" if param else ""
    return InvalidRequest(f"Invalid value{loc_text}: {first['msg']}", param=param)


def normalize_input(raw: str | list[dict[str, Any]] | None) -> list[Item]:
    """Validate `input` and return canonical items (ids assigned where the client sent none)."""
    if raw is None:
        return []
    if isinstance(raw, str):
        return [_message_item("user", [{"type": "input_text", "text": raw}], None, None)]
    try:
        parsed = _INPUT_ADAPTER.validate_python(raw)
    except ValidationError as err:
        raise validation_to_invalid_request(err, "input", raw) from None
    items: list[Item] = []
    seen: set[str] = set()
    for index, item in enumerate(parsed):
        try:
            canonical = _canonical(item)
        except InvalidRequest as err:
            err.param = f"input[{index}].{err.param}" if err.param else f"input[{index}]"
            raise
        if canonical["type"] != "item_reference":
            if canonical["id"] in seen:
                raise InvalidRequest(f"Duplicate item id '{canonical['id']}' in input.", param=f"input[{index}].id")
            seen.add(canonical["id"])
        items.append(canonical)
    return items


def _canonical(item: BaseModel) -> Item:
    if isinstance(item, Message):
        return _message_from(item)
    if isinstance(item, ItemReference):
        return {"type": "item_reference", "id": item.id}
    data = item.model_dump(exclude_none=True)
    if isinstance(item, FunctionCall):
        data.setdefault("id", new_id("fc"))
        data.setdefault("status", "completed")
    elif isinstance(item, FunctionCallOutput):
        data.setdefault("id", new_id("fco"))
        data.setdefault("status", "completed")
    elif isinstance(item, Reasoning):
        data.setdefault("id", new_id("rs"))
        data.setdefault("summary", [])
    else:
        model = CLIENT_TOOL_ITEMS.get(data["type"]) or MCP_ITEMS.get(data["type"])
        if model is not None:  # typed like the SDK's (schema/client_tool_items.py, schema/mcp_items.py)
            try:
                data = model.model_validate(data).model_dump(exclude_none=True)
            except ValidationError as err:
                raise validation_to_invalid_request(err, "", data) from None
        data.setdefault("id", new_id(_ID_PREFIX.get(data["type"], "item")))
    return data


_ID_PREFIX = {**CLIENT_TOOL_ID_PREFIX, **MCP_ID_PREFIX, "custom_tool_call": "ctc", "custom_tool_call_output": "ctco",
              "compaction": "cmp", "file_search_call": "fs", "web_search_call": "ws"}


def _message_from(msg: Message) -> Item:
    if isinstance(msg.content, str):
        if msg.role == "assistant":
            parts: list[dict[str, Any]] = [
                {"type": "output_text", "text": msg.content, "annotations": [], "logprobs": []}
            ]
        else:
            parts = [{"type": "input_text", "text": msg.content}]
    else:
        parts = [p.model_dump(exclude_none=True) for p in msg.content]
        for part in parts:
            if part["type"] == "output_text":
                part.setdefault("logprobs", [])
        _check_parts_for_role(msg.role, parts)
    return _message_item(msg.role, parts, msg.id, msg.phase, msg.status)


_ASSISTANT_PARTS = frozenset({"output_text", "refusal"})


def _check_parts_for_role(role: str, parts: list[dict[str, Any]]) -> None:
    for index, part in enumerate(parts):
        is_assistant_part = part["type"] in _ASSISTANT_PARTS
        if (role == "assistant") != is_assistant_part:
            allowed = "output_text or refusal" if role == "assistant" else "input_text, input_image or input_file"
            raise InvalidRequest(
                f"Invalid content part type '{part['type']}' for role '{role}'; expected {allowed}.",
                param=f"content[{index}].type",
            )


def _message_item(
    role: str, parts: list[dict[str, Any]], item_id: str | None, phase: str | None, status: str | None = None
) -> Item:
    item: Item = {
        "id": item_id or new_id("msg"),
        "type": "message",
        "role": role,
        "content": parts,
        "status": status or "completed",
    }
    if phase is not None:
        item["phase"] = phase
    return item


def item_text(item: Item) -> str:
    """All text of a message item, for token estimates and logs."""
    out: list[str] = []
    for part in item.get("content", ()):
        text = part.get("text") or part.get("refusal")
        if isinstance(text, str):
            out.append(text)
    return "".join(out)
