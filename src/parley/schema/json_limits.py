"""Numbers a request body may carry: what every later step (orjson, SQLite, PostgreSQL, upstreams) can hold.

JSON itself has no `NaN` or `Infinity`, and pydantic's parser accepts them, as it accepts integers of any
size and `1e999` (which becomes infinity). Past this check no such value exists anywhere in a request, also
not in free-form parts (tool `parameters`, schemas, item contents): each is a 400 naming where it is.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from parley.errors import InvalidRequest

INT_MIN = -(2**63)
INT_MAX = 2**63 - 1

# Cheap screen over the raw bytes (runs in C): a non-finite literal, an integer of 19+ digits (2**63 has 19),
# an exponent of 3+ digits (1e999), or a UTF-16 surrogate escape (a lone one is a string no UTF-8 encoder,
# orjson included, can write back). It also matches inside strings; a match only means "look closer".
_SUSPECT = re.compile(rb"NaN|Infinity|\d{19}|[eE][+-]?\d{3}|\\u[dD][89a-fA-F]")


def check_json_numbers(body: bytes) -> None:
    """Raise a 400 naming the first number a request must not carry (the body is known to be parseable)."""
    if _SUSPECT.search(body) is None:
        return
    try:
        data = json.loads(body)
    except ValueError:
        return  # not JSON at all: the model parser reports it
    except RecursionError:
        raise InvalidRequest("The request body is nested too deeply.", code="invalid_json") from None
    path = _first_bad(data, "")
    if path is not None:
        where, what = path
        raise InvalidRequest(
            f"Invalid value for '{where}': {what}." if where else f"Invalid number in the request body: {what}.",
            param=where or None, code="invalid_value",
        )


def _bad_value(value: Any) -> str | None:
    if isinstance(value, str):
        return None if _encodable(value) else "strings must not contain unpaired UTF-16 surrogates"
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
        return "integers must fit in 64 bits"
    if isinstance(value, float) and not math.isfinite(value):
        return "numbers must be finite (NaN, Infinity and overflowing values are not JSON numbers)"
    return None


def _first_bad(node: Any, path: str) -> tuple[str, str] | None:
    """Depth-first, iteratively (a hostile body may nest deeper than Python's recursion limit)."""
    stack: list[tuple[Any, str]] = [(node, path)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, dict):
            for key in value:
                if not _encodable(key):
                    return where or "body", "keys must not contain unpaired UTF-16 surrogates"
            stack.extend((v, f"{where}.{k}" if where else str(k)) for k, v in reversed(list(value.items())))
        elif isinstance(value, list):
            stack.extend((v, f"{where}[{i}]") for i, v in reversed(list(enumerate(value))))
        else:
            problem = _bad_value(value)
            if problem is not None:
                return where, problem
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
