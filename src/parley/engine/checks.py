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
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

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
    validator = _validator(text_format["schema"]) if kind == "json_schema" else None

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
            try:
                error = next(iter(validator.iter_errors(value)), None)
            except Exception:  # a schema that cannot be evaluated (refused up front where it can be seen)
                return "the model's output could not be checked against the JSON schema"
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "(root)"
                return f"the model's output does not match the JSON schema at {where}: {error.message}"
        return None

    return check


_PARAM = "text.format.schema"


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    """A validator for a client's schema, refused with a 400 when it is not one: invalid keywords, patterns
    the regex engine cannot compile (or whose repeat counts overflow), and `$ref`s that do not resolve
    within the schema (nothing is fetched)."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as err:
        raise InvalidRequest(f"Invalid JSON schema: {err.message}", param=_PARAM) from None
    except Exception as err:  # e.g. OverflowError from a pattern such as a{99999999999}
        raise InvalidRequest(f"Invalid JSON schema: {type(err).__name__}", param=_PARAM) from None
    resolver = Registry().with_resource(
        "urn:parley:schema", Resource.from_contents(schema, default_specification=DRAFT202012)
    ).resolver(base_uri="urn:parley:schema")
    for ref in _refs(schema):
        try:
            resolver.lookup(ref)
        except Exception:
            raise InvalidRequest(f"Invalid JSON schema: $ref '{ref[:100]}' does not resolve within the schema.",
                                 param=_PARAM) from None
    return Draft202012Validator(schema)


def _refs(schema: Any) -> list[str]:
    found: list[str] = []
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                    found.append(value)
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    return found
