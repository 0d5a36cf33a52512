"""The `tools` and `tool_choice` request fields: validation against the tools Parley can run."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from parley.errors import InvalidRequest
from parley.schema.items import validation_to_invalid_request
from parley.schema.requests import (
    KNOWN_TOOL_TYPES,
    SUPPORTED_TOOL_TYPES,
    CreateResponseRequest,
    FunctionTool,
)


def validate_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Function tools normalised; an unknown or not-yet-supported type is a 400 naming tools[i].type."""
    out: list[dict[str, Any]] = []
    names: set[str] = set()
    for index, tool in enumerate(tools or ()):
        kind = tool.get("type")
        if kind not in KNOWN_TOOL_TYPES:
            raise InvalidRequest(f"Invalid tool type '{kind}'.", param=f"tools[{index}].type")
        if kind not in SUPPORTED_TOOL_TYPES:
            raise InvalidRequest(
                f"Tool type '{kind}' is not supported by this server yet.", param=f"tools[{index}].type",
                code="unsupported_tool",
            )
        try:
            parsed = FunctionTool.model_validate(tool)
        except ValidationError as err:
            raise validation_to_invalid_request(err, f"tools[{index}]", tool) from None
        if parsed.name in names:
            raise InvalidRequest(f"Duplicate tool name '{parsed.name}'.", param=f"tools[{index}].name")
        names.add(parsed.name)
        out.append(parsed.model_dump(exclude_none=True))
    return out


def validate_tool_choice(req: CreateResponseRequest, tools: list[dict[str, Any]]) -> str | dict[str, Any] | None:
    choice = req.tool_choice
    if choice is None or isinstance(choice, str):
        if choice == "required" and not tools:
            raise InvalidRequest("tool_choice 'required' needs at least one tool.", param="tool_choice")
        return choice
    data = choice.model_dump(exclude_none=True)
    names = {t["name"] for t in tools if t.get("type") == "function"}
    if data["type"] == "function":
        if data["name"] not in names:
            raise InvalidRequest(
                f"Tool choice '{data['name']}' not found in 'tools' parameter.", param="tool_choice.name"
            )
        return data
    raise InvalidRequest(
        f"tool_choice of type '{data['type']}' is not supported by this server yet.", param="tool_choice.type",
        code="unsupported_value",
    )
