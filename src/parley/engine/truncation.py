"""`truncation`: fit the model context into the model's context window, or refuse it (api-surface.md §2).

The budget is the model's `context_window` minus the `max_output_tokens` reserve. `disabled` (the default)
never drops anything: an input that does not fit is a 400 `context_length_exceeded`. `auto` drops whole items
from the start of the context, oldest first, never separating a tool call from its output and never
dropping the newest user message (nor anything after it); if even that does not fit, the same 400.

The hot path stays lean: tokens are counted only when a cheap size bound says the input might not fit
(`might_not_fit`); the upstream's own context error (providers/upstream_http.py) stays the backstop.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import orjson

from parley.engine.context_measure import ContextMeasures
from parley.errors import InvalidRequest, UpstreamError
from parley.providers.base import Item, ModelCall, TokenCount

log = logging.getLogger("parley.truncation")

Truncation = Literal["auto", "disabled"]
CountTokens = Callable[[ModelCall], Awaitable[TokenCount]]

# A byte-level BPE (tiktoken, Llama 3, Qwen) or byte-fallback SentencePiece token covers at least one byte of
# UTF-8, and the JSON of an item is longer than its chat-template framing in tokens: an input serialized to
# fewer bytes than the budget has fewer tokens. Typical text is 3-4 bytes per token, so only inputs within a
# factor of ~3 of the window are counted (1-2 ms of tiktoken, or one tokenizer call, per such request).
BYTES_PER_TOKEN_BOUND = 1
# An image costs hundreds of tokens (up to ~1100 at high detail) but its URL only a few bytes.
IMAGE_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Fitted:
    """The call to send, and its count if one was made (None: the cheap bound said it fits)."""

    call: ModelCall
    count: TokenCount | None
    dropped: int = 0


def might_not_fit(call: ModelCall, budget: int, measures: ContextMeasures | None = None) -> bool:
    """A cheap, sound test (orjson over the items `measures` has not seen yet, no tokenizer): False means `call`
    fits in `budget` tokens."""
    measure = (measures or ContextMeasures()).of(call.items, call.continuable)
    size = measure.json_bytes + len((call.instructions or "").encode())
    size += len(orjson.dumps(call.tools)) if call.tools else 0
    size += IMAGE_BYTES * measure.images
    return size >= budget * BYTES_PER_TOKEN_BOUND


def _is_output(item: Item) -> bool:
    return str(item.get("type", "")).endswith("_output")


def cut_points(items: list[Item]) -> list[int]:
    """The indices the context may start at after dropping older items.

    A start may not fall between a call (`function_call`, `custom_tool_call`, ...) and its `*_output`, and may
    not be later than the newest user message (without one, the start of the last whole group)."""
    output_at: dict[Any, int] = {
        item["call_id"]: i for i, item in enumerate(items) if "call_id" in item and _is_output(item)
    }
    cuts: list[int] = []
    reach = -1  # the furthest output index of any call before the current index
    for index, item in enumerate(items):
        if reach < index:
            cuts.append(index)
        if "call_id" in item and not _is_output(item):
            reach = max(reach, output_at.get(item["call_id"], -1))
    newest_user = max(
        (i for i, item in enumerate(items) if item.get("type") == "message" and item.get("role") == "user"),
        default=None,
    )
    if newest_user is not None:
        cuts = [c for c in cuts if c <= newest_user]
    return cuts


def context_length_exceeded(
    tokens: int, call: ModelCall, context_window: int, *, truncated: bool = False
) -> InvalidRequest:
    """The 400 for a context that does not fit. With truncation='auto' (`truncated`), `tokens` is what is left
    after dropping every item that may be dropped (the newest user message and what follows it stay)."""
    reserve = call.max_output_tokens or 0
    reserved = f" with {reserve} tokens reserved for max_output_tokens" if reserve else ""
    if reserve >= context_window:
        advice = f"max_output_tokens ({reserve}) leaves no room for input in the context window of {context_window}"
        return InvalidRequest(f"Your input cannot fit: {advice}. Lower max_output_tokens.",
                              param="max_output_tokens", code="context_length_exceeded")
    if truncated:
        return InvalidRequest(
            f"Your input exceeds the context window of this model even after truncation='auto' dropped every "
            f"earlier item it may drop: the newest user message and what follows it take {tokens} tokens, which "
            f"do not fit in {context_window} tokens{reserved}. Shorten that message or lower max_output_tokens.",
            param="input", code="context_length_exceeded",
        )
    return InvalidRequest(
        f"Your input exceeds the context window of this model: {tokens} input tokens do not fit in "
        f"{context_window} tokens{reserved}. Shorten the input or use truncation='auto'.",
        param="input", code="context_length_exceeded",
    )


async def fit_context(call: ModelCall, count: CountTokens, mode: Truncation, context_window: int,
                      measures: ContextMeasures | None = None) -> Fitted:
    """Apply `truncation` to `call`: the call to send (possibly without its oldest items), or a 400."""
    budget = context_window - (call.max_output_tokens or 0)
    if not might_not_fit(call, budget, measures):
        return Fitted(call, None)
    try:
        whole = await count(call)
    except UpstreamError as exc:
        if mode == "auto":
            raise
        # `disabled` only counts to fail early; the upstream still refuses an input that does not fit.
        log.warning("token count failed (%s); sending the input uncounted", exc.message)
        return Fitted(call, None)
    if whole.tokens <= budget:
        return Fitted(call, whole)
    if mode == "disabled":
        raise context_length_exceeded(whole.tokens, call, context_window)
    return await _drop_oldest(call, count, budget, context_window, whole)


async def _drop_oldest(
    call: ModelCall, count: CountTokens, budget: int, context_window: int, whole: TokenCount
) -> Fitted:
    """Binary search over the allowed starts for the earliest one that fits: O(log n) counts, since the
    count only shrinks as items are dropped."""
    cuts = cut_points(call.items)[1:]  # cut 0 (the whole context) is known not to fit
    if not cuts:
        raise context_length_exceeded(whole.tokens, call, context_window, truncated=True)
    shortest = replace(call, items=call.items[cuts[-1]:])
    best = await count(shortest)
    if best.tokens > budget:
        raise context_length_exceeded(best.tokens, shortest, context_window, truncated=True)
    best_call, low, high = shortest, 0, len(cuts) - 1  # invariant: cuts[high] fits
    while low < high:
        middle = (low + high) // 2
        candidate = replace(call, items=call.items[cuts[middle]:])
        counted = await count(candidate)
        if counted.tokens <= budget:
            best_call, best, high = candidate, counted, middle
        else:
            low = middle + 1
    return Fitted(best_call, best, dropped=cuts[high])
