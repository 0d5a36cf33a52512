"""Checks on a finished model turn that the upstream cannot be trusted to guarantee.

- tool_choice: `required`, a forced tool or `allowed_tools` are enforced even when the upstream lacks
  native support (it was offered the tools with "auto"); a non-complying turn fails the response.
- text.format json_object / json_schema: the message text must parse (and match the schema), so an
  upstream without constrained decoding can never return invalid JSON as a success.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from parley.engine.stream import StreamBuilder
from parley.errors import InvalidRequest
from parley.schema.tools import ToolChoicePlan

TurnCheck = Callable[[StreamBuilder], str | None]


def tool_choice_check(plan: ToolChoicePlan) -> TurnCheck:
    def check(builder: StreamBuilder) -> str | None:
        return plan.violation(builder.called)

    return check


def _message_text(builder: StreamBuilder) -> list[str]:
    return [
        part["text"]
        for item in builder.output
        if item["type"] == "message"
        for part in item.get("content", ())
        if part.get("type") == "output_text"
    ]


def json_format_check(text_format: dict[str, Any]) -> TurnCheck | None:
    kind = text_format.get("type")
    if kind not in ("json_object", "json_schema"):
        return None
    validator = None
    if kind == "json_schema":
        try:
            Draft202012Validator.check_schema(text_format["schema"])
        except SchemaError as err:
            raise InvalidRequest(f"Invalid JSON schema: {err.message}", param="text.format.schema") from None
        validator = Draft202012Validator(text_format["schema"])

    def check(builder: StreamBuilder) -> str | None:
        for text in _message_text(builder):
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError:
                return "the model's output is not valid JSON"
            if validator is None:
                if not isinstance(value, dict):
                    return "the model's output is not a JSON object"
                continue
            error = next(iter(validator.iter_errors(value)), None)
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "(root)"
                return f"the model's output does not match the JSON schema at {where}: {error.message}"
        return None

    return check
