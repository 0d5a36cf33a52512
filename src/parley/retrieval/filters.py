"""Attribute filters of vector store search and `file_search` (api-surface.md §4): comparison filters
`{type: eq|ne|gt|gte|lt|lte|in|nin, key, value}` and compound ones `{type: and|or, filters: [...]}`, nested.

`parse_filter` validates a filter's shape (InvalidRequest naming the offending part, e.g.
`filters.filters[1].value`); `matches` tests a file's attributes. Semantics: values compare only with values of
the same kind (a string never equals a number; booleans are not numbers); gt/gte/lt/lte order numbers, or
strings lexicographically; a missing attribute matches only `ne` and `nin`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from parley.errors import InvalidRequest

ComparisonType = Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"]
COMPARISONS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin")
COMPOUNDS = ("and", "or")
MAX_DEPTH = 8
MAX_CONDITIONS = 64
Scalar = str | int | float | bool


@dataclass(frozen=True, slots=True)
class Comparison:
    type: ComparisonType
    key: str
    value: Scalar | tuple[str | int | float, ...]


@dataclass(frozen=True, slots=True)
class Compound:
    type: Literal["and", "or"]
    filters: tuple[Comparison | Compound, ...]


Filter = Comparison | Compound


def _scalar(value: Any) -> bool:
    return isinstance(value, str | bool | int | float)


def parse_filter(raw: Any, param: str = "filters") -> Filter:
    count = [0]
    return _parse(raw, param, 0, count)


def _parse(raw: Any, param: str, depth: int, count: list[int]) -> Filter:
    if not isinstance(raw, dict):
        raise InvalidRequest(f"Invalid value for '{param}': expected an object.", param=param)
    kind = raw.get("type")
    count[0] += 1
    if depth > MAX_DEPTH or count[0] > MAX_CONDITIONS:
        raise InvalidRequest(f"'{param}' is too complex: at most {MAX_DEPTH} levels and {MAX_CONDITIONS} filters.",
                             param=param)
    if kind in COMPOUNDS:
        filters = raw.get("filters")
        if not isinstance(filters, list) or not filters:
            raise InvalidRequest(f"Invalid value for '{param}.filters': expected a non-empty array of filters.",
                                 param=f"{param}.filters")
        parsed = tuple(_parse(f, f"{param}.filters[{i}]", depth + 1, count) for i, f in enumerate(filters))
        return Compound(kind, parsed)
    if kind not in COMPARISONS:
        raise InvalidRequest(f"Invalid value for '{param}.type': expected one of {', '.join(COMPARISONS + COMPOUNDS)}.",
                             param=f"{param}.type")
    key = raw.get("key")
    if not isinstance(key, str) or not key:
        raise InvalidRequest(f"Invalid value for '{param}.key': expected a non-empty string.", param=f"{param}.key")
    if "value" not in raw:
        raise InvalidRequest(f"Missing required parameter: '{param}.value'.", param=f"{param}.value",
                             code="missing_required_parameter")
    value = raw["value"]
    if kind in ("in", "nin"):
        if not isinstance(value, list) or not all(_scalar(v) and not isinstance(v, bool) for v in value):
            raise InvalidRequest(f"Invalid value for '{param}.value': '{kind}' expects an array of strings or "
                                 "numbers.", param=f"{param}.value")
        return Comparison(kind, key, tuple(value))
    if not _scalar(value):
        raise InvalidRequest(f"Invalid value for '{param}.value': expected a string, number or boolean.",
                             param=f"{param}.value")
    if kind in ("gt", "gte", "lt", "lte") and isinstance(value, bool):
        raise InvalidRequest(f"Invalid value for '{param}.value': '{kind}' compares numbers or strings.",
                             param=f"{param}.value")
    return Comparison(kind, key, value)


def _same_kind(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str)
    return True  # both numbers


def _equal(a: Any, b: Any) -> bool:
    return _same_kind(a, b) and bool(a == b)


def matches(condition: Filter, attributes: Mapping[str, Any]) -> bool:
    if isinstance(condition, Compound):
        results = (matches(f, attributes) for f in condition.filters)
        return all(results) if condition.type == "and" else any(results)
    kind, expected = condition.type, condition.value
    if condition.key not in attributes:
        return kind in ("ne", "nin")
    actual = attributes[condition.key]
    if kind == "eq":
        return _equal(actual, expected)
    if kind == "ne":
        return not _equal(actual, expected)
    if kind in ("in", "nin"):
        assert isinstance(expected, tuple)
        found = any(_equal(actual, v) for v in expected)
        return found if kind == "in" else not found
    if not _same_kind(actual, expected) or isinstance(actual, bool):
        return False
    if kind == "gt":
        return bool(actual > expected)
    if kind == "gte":
        return bool(actual >= expected)
    if kind == "lt":
        return bool(actual < expected)
    return bool(actual <= expected)
