"""How stored items are shown to a client: what `include[]` adds (api-surface.md §2, `include`).

Items are stored whole (a file_search_call keeps its results, so later turns can give them to the model);
a client sees the optional parts only when its request (or its GET) asks for them with `include`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

Item = dict[str, Any]

# item type -> (field shown only when included, the include value, the value shown otherwise)
_OPTIONAL: dict[str, tuple[str, str, Any]] = {
    "file_search_call": ("results", "file_search_call.results", None),
}


def presenter(include: Iterable[str] | None) -> Callable[[Item], Item]:
    """A function giving the client's view of an item (always a copy)."""
    wanted = frozenset(include or ())

    def present(item: Item) -> Item:
        shown = dict(item)
        optional = _OPTIONAL.get(item.get("type", ""))
        if optional is not None:
            field, value, otherwise = optional
            if value not in wanted and field in shown:
                shown[field] = otherwise
        return shown

    return present


def present_response(response: dict[str, Any], include: Iterable[str] | None) -> dict[str, Any]:
    present = presenter(include)
    return {**response, "output": [present(item) for item in response.get("output") or ()]}
