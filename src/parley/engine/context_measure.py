"""What the hot path must know of a model context before it goes upstream: the bytes of its items' JSON and its
images (truncation's cheap bound, engine/truncation.py) and whether any part is a file still to resolve
(services/file_inputs.py). Along a chain each turn measures only its new items (providers/prefix_memo.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from parley.providers.base import Item
from parley.providers.prefix_memo import PrefixMemo


@dataclass(frozen=True, slots=True)
class Measure:
    json_bytes: int  # an upper bound on the items' JSON, as orjson writes it
    images: int  # input_image parts in messages
    file_parts: bool  # an input_file, or an input_image by file_id without its image_url yet
    kinds: frozenset[str]  # the items' types: a step whose types are absent has nothing to do


class ContextMeasures:
    """One per app: FileInputs fills it, truncation then finds the same list measured."""

    def __init__(self, max_bytes: int = 0) -> None:
        self.memo: PrefixMemo[tuple[int, bool, frozenset[str]]] = PrefixMemo(max_bytes)

    def of(self, items: Sequence[Item], keep: bool = True) -> Measure:
        """`keep`: whether a later call may start with these item objects (ModelCall.continuable)."""
        hit = self.memo.find(items)
        images, file_parts, kinds = hit.state if hit is not None else (0, False, frozenset[str]())
        new = items[hit.start if hit is not None else 0:]
        if new:
            kinds = kinds.union(str(item.get("type", "")) for item in new)
        for item in new:
            if item.get("type") != "message" or not isinstance(item.get("content"), list):
                continue
            for part in item["content"]:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "input_image":
                    images += 1
                    file_parts = file_parts or bool(part.get("file_id") and not part.get("image_url"))
                elif kind == "input_file":
                    file_parts = True
        size = self.memo.put(items, (images, file_parts, kinds), hit, keep)
        return Measure(size, images, file_parts, kinds)


def has_file_parts(item: Item) -> bool:
    """An item with a part services/file_inputs.py resolves."""
    if item.get("type") != "message" or not isinstance(item.get("content"), list):
        return False
    return any(p.get("type") == "input_file" or (p.get("type") == "input_image" and p.get("file_id")
                                                  and not p.get("image_url")) for p in item["content"])
