"""Prompt templates: the admin body, and rendering a template with a request's `prompt.variables`. No I/O.

A template is `{instructions?, input?, model?}` with `{{name}}` placeholders. Text variables (a string or
an `input_text` part) substitute into the instructions and into the text of `input_text`/`output_text`
parts. An `input_image`/`input_file` variable replaces a whole `input_text` part whose text is just
`{{name}}`; anywhere else it is a 400. Substitution is one pass: values are never expanded again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from parley.errors import InvalidRequest
from parley.schema.items import InputFile, InputImage, InputText, Item, normalize_input
from parley.schema.requests import _check_metadata

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}")
_WHOLE_PLACEHOLDER = re.compile(r"\s*\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}\s*")
_TEXT_PARTS = frozenset({"input_text", "output_text"})


class PromptBody(BaseModel):
    """POST /v1/prompts and POST /v1/prompts/{id}/versions. Unknown keys: api.http.FieldPolicy."""

    model_config = ConfigDict(extra="allow")

    instructions: str | None = None
    input: str | list[dict[str, Any]] | None = None
    model: str | None = None
    metadata: dict[str, str] | None = None

    _check_md = field_validator("metadata")(_check_metadata)

    def template(self) -> dict[str, Any]:
        """The stored body. `input` is kept as sent (validated): ids are assigned afresh at each render."""
        normalize_input(self.input)  # 400 naming input[i]... if an item is invalid
        return self.model_dump(include={"instructions", "input", "model", "metadata"})


Variable = Annotated[InputText | InputImage | InputFile, Field(discriminator="type")]
_VARIABLE: TypeAdapter[str | Variable] = TypeAdapter(str | Variable)


def parse_variables(raw: dict[str, Any] | None) -> dict[str, str | dict[str, Any]]:
    """Validate `prompt.variables`: text variables become str, others their content part (defaults filled)."""
    parsed: dict[str, str | dict[str, Any]] = {}
    for name, value in (raw or {}).items():
        try:
            checked = _VARIABLE.validate_python(value)
        except ValidationError as err:
            message = err.errors(include_url=False)[0]["msg"]
            raise InvalidRequest(
                f"Invalid value for prompt variable '{name}': expected a string, input_text, input_image or "
                f"input_file ({message}).", param=f"prompt.variables.{name}",
            ) from None
        if isinstance(checked, str):
            parsed[name] = checked
        elif isinstance(checked, InputText):
            parsed[name] = checked.text
        else:
            parsed[name] = checked.model_dump(exclude_none=True)
    return parsed


def variables_echo(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    """`prompt.variables` as the Response echoes it: parts with their defaults (the SDK needs `detail`)."""
    if raw is None:
        return None
    echo: dict[str, Any] = {}
    for name, value in raw.items():
        checked = _VARIABLE.validate_python(value)
        echo[name] = checked if isinstance(checked, str) else checked.model_dump(exclude_none=True)
    return echo


@dataclass(frozen=True, slots=True)
class RenderedPrompt:
    instructions: str | None
    input_items: list[Item]
    model: str | None


def render(template: dict[str, Any], variables: dict[str, str | dict[str, Any]]) -> RenderedPrompt:
    """Fill a stored template. Every placeholder must have a variable (400 naming `prompt.variables`)."""
    instructions: str | None = template.get("instructions")
    items = normalize_input(template.get("input"))
    missing = sorted(_referenced(instructions, items) - variables.keys())
    if missing:
        raise InvalidRequest(
            f"Missing value for prompt variable{'s' if len(missing) > 1 else ''} "
            + ", ".join(f"'{name}'" for name in missing) + ".",
            param="prompt.variables",
        )
    if instructions is not None:
        instructions = _fill_text(instructions, variables)
    for item in items:
        if item["type"] == "message":
            item["content"] = [_fill_part(part, variables) for part in item["content"]]
    return RenderedPrompt(instructions, items, template.get("model"))


def _referenced(instructions: str | None, items: list[Item]) -> set[str]:
    texts = [instructions or ""]
    for item in items:
        if item["type"] == "message":
            texts += [part["text"] for part in item["content"] if part["type"] in _TEXT_PARTS]
    return {match.group(1) for text in texts for match in PLACEHOLDER.finditer(text)}


def _fill_text(text: str, variables: dict[str, str | dict[str, Any]]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        found = variables[name]
        if not isinstance(found, str):
            raise InvalidRequest(
                f"Prompt variable '{name}' is an {found['type']}; it can only stand alone as a whole input_text "
                "content part of the template's input, not inside text.", param=f"prompt.variables.{name}",
            )
        return found

    return PLACEHOLDER.sub(value, text)


def _fill_part(part: dict[str, Any], variables: dict[str, str | dict[str, Any]]) -> dict[str, Any]:
    if part["type"] not in _TEXT_PARTS:
        return part
    whole = _WHOLE_PLACEHOLDER.fullmatch(part["text"])
    if whole is not None and part["type"] == "input_text":
        found = variables[whole.group(1)]
        if not isinstance(found, str):
            return dict(found)
    return {**part, "text": _fill_text(part["text"], variables)}
