"""How stored items are shown to a client: what `include[]` adds (api-surface.md §2, `include`).

Items are stored whole (a file_search_call keeps its results, so later turns can give them to the model);
a client sees the optional parts only when its request (or its GET) asks for them with `include`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

Item = dict[str, Any]

_ABSENT = object()  # "otherwise" value: the key is left out (the SDK's item type has no such field)

# item type -> [(path of the field shown only when included, the include value, the value shown otherwise)]
_OPTIONAL: dict[str, list[tuple[tuple[str, ...], str, Any]]] = {
    "file_search_call": [(("results",), "file_search_call.results", None)],
    "code_interpreter_call": [(("outputs",), "code_interpreter_call.outputs", None)],
    # `results`: what the model was given (kept for later turns); not a field of the SDK's web_search_call.
    "computer_call_output": [(("output", "image_url"), "computer_call_output.output.image_url", _ABSENT)],
    "web_search_call": [(("action", "sources"), "web_search_call.action.sources", _ABSENT),
                        (("results",), "web_search_call.results", _ABSENT)],
}


def _hide(shown: Item, path: tuple[str, ...], otherwise: Any) -> Item:
    """`shown` with the field at `path` replaced (copies along the path; the stored item is untouched)."""
    head, rest = path[0], path[1:]
    if head not in shown:
        return shown
    out = dict(shown)
    if rest:
        inner = out[head]
        if isinstance(inner, dict):
            out[head] = _hide(inner, rest, otherwise)
    elif otherwise is _ABSENT:
        del out[head]
    else:
        out[head] = otherwise
    return out


def presenter(include: Iterable[str] | None) -> Callable[[Item], Item]:
    """A function giving the client's view of an item (always a copy)."""
    wanted = frozenset(include or ())

    def present(item: Item) -> Item:
        shown = dict(item)
        shown.pop("upstream", None)  # an upstream's own state for the item (providers/base.py): never shown
        for path, value, otherwise in _OPTIONAL.get(item.get("type", ""), ()):
            if value not in wanted:
                shown = _hide(shown, path, otherwise)
        return shown

    return present


def present_response(response: dict[str, Any], include: Iterable[str] | None) -> dict[str, Any]:
    present = presenter(include)
    return {**response, "output": [present(item) for item in response.get("output") or ()]}
