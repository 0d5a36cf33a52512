"""`truncation` without HTTP: where a context may be cut, the cheap size bound, and fit_context's choices
with a counter that charges a known number of tokens per item."""

from __future__ import annotations

from typing import Any

import pytest

from parley.engine.truncation import BYTES_PER_TOKEN_BOUND, cut_points, fit_context, might_not_fit
from parley.errors import InvalidRequest, UpstreamError
from parley.providers.base import ModelCall, TokenCount

PAD = "x" * 400  # every item is large enough for the cheap bound to ask for a count


def _msg(role: str, name: str) -> dict[str, Any]:
    return {"type": "message", "role": role, "content": [{"type": "input_text", "text": name + PAD}], "name": name}


def _call(call_id: str) -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": "f", "arguments": PAD, "label": call_id}


def _output(call_id: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": PAD, "label": call_id + "-out"}


class Counter:
    """100 tokens per item; records every call it counted."""

    def __init__(self) -> None:
        self.counted: list[int] = []

    async def __call__(self, call: ModelCall) -> TokenCount:
        self.counted.append(len(call.items))
        return TokenCount(100 * len(call.items), exact=True)


def _labels(call: ModelCall) -> list[str]:
    return [item.get("label") or item["name"] for item in call.items]


def test_cut_points_keep_calls_with_outputs_and_the_newest_user_message() -> None:
    items = [_msg("user", "u1"), _call("a"), _call("b"), _output("a"), _output("b"), _msg("assistant", "a1"),
             _msg("user", "u2"), _call("c"), _output("c")]
    assert cut_points(items) == [0, 1, 5, 6]
    # A call whose output never came is no constraint; without a user message everything may go but the last.
    assert cut_points([_call("z"), _msg("assistant", "a")]) == [0, 1]


def test_cheap_bound() -> None:
    small = ModelCall("m", [_msg("user", "u")])
    size = len(_msg("user", "u")["content"][0]["text"])
    assert not might_not_fit(small, 2 * size)  # ~480 bytes of JSON cannot be 800 tokens
    assert might_not_fit(small, size // BYTES_PER_TOKEN_BOUND)
    image = {"type": "message", "role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}
    assert might_not_fit(ModelCall("m", [image]), 1000)  # an image counts as ~1500 tokens of bytes


async def test_a_context_that_fits_is_sent_whole() -> None:
    counter = Counter()
    call = ModelCall("m", [_msg("user", "u1"), _msg("assistant", "a1"), _msg("user", "u2")])
    fitted = await fit_context(call, counter, "auto", 300)
    assert fitted.call is call and fitted.dropped == 0 and fitted.count == TokenCount(300, exact=True)
    assert (await fit_context(call, counter, "disabled", 300)).call is call


async def test_small_input_is_not_counted() -> None:
    counter = Counter()
    call = ModelCall("m", [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}])
    fitted = await fit_context(call, counter, "disabled", 4096)
    assert fitted.count is None and counter.counted == []


async def test_one_item_too_many() -> None:
    call = ModelCall("m", [_msg("user", "u1"), _msg("assistant", "a1"), _msg("user", "u2"), _msg("assistant", "a2"),
                           _msg("user", "u3")])
    fitted = await fit_context(call, Counter(), "auto", 400)
    assert _labels(fitted.call) == ["a1", "u2", "a2", "u3"] and fitted.dropped == 1
    with pytest.raises(InvalidRequest) as info:
        await fit_context(call, Counter(), "disabled", 400)
    assert (info.value.code, info.value.param, info.value.status) == ("context_length_exceeded", "input", 400)


async def test_max_output_tokens_is_reserved() -> None:
    call = ModelCall("m", [_msg("user", "u1"), _msg("assistant", "a1"), _msg("user", "u2")], max_output_tokens=100)
    fitted = await fit_context(call, Counter(), "auto", 300)
    assert _labels(fitted.call) == ["a1", "u2"]


async def test_a_call_and_its_output_go_together() -> None:
    call = ModelCall("m", [_msg("user", "u1"), _call("a"), _output("a"), _msg("assistant", "a1"), _msg("user", "u2")])
    # 300 tokens would allow dropping two items (u1, the call) but that would orphan the output.
    fitted = await fit_context(call, Counter(), "auto", 300)
    assert _labels(fitted.call) == ["a1", "u2"]


async def test_binary_search_counts_logarithmically() -> None:
    items = [_msg("user" if i % 2 == 0 else "assistant", f"m{i}") for i in range(65)]
    counter = Counter()
    fitted = await fit_context(ModelCall("m", items), counter, "auto", 1000)
    assert len(fitted.call.items) == 10 and fitted.call.items[-1] is items[-1]
    assert len(counter.counted) <= 9  # whole + shortest + ~log2(64) probes, not one per dropped item


async def test_newest_user_message_is_never_dropped() -> None:
    call = ModelCall("m", [_msg("user", "u1"), _msg("assistant", "a1"), _msg("user", "u2"), _call("a"), _output("a")])
    with pytest.raises(InvalidRequest) as info:
        await fit_context(call, Counter(), "auto", 250)  # even [u2, call, output] is 300
    assert info.value.code == "context_length_exceeded"
    fitted = await fit_context(call, Counter(), "auto", 300)
    assert _labels(fitted.call) == ["u2", "a", "a-out"]


async def test_a_failing_tokenizer_only_blocks_auto() -> None:
    async def broken(call: ModelCall) -> TokenCount:
        raise UpstreamError.bad_gateway("tokenizer down")

    call = ModelCall("m", [_msg("user", "u1"), _msg("assistant", "a1"), _msg("user", "u2")])
    fitted = await fit_context(call, broken, "disabled", 200)
    assert fitted.call is call and fitted.count is None  # the upstream's own context check decides
    with pytest.raises(UpstreamError):
        await fit_context(call, broken, "auto", 200)


async def test_auto_that_cannot_fit_says_what_does_not_fit() -> None:
    # truncation=auto already dropped everything it may: the message must not advise truncation='auto'.
    call = ModelCall(upstream_model="m", items=[_msg("user", "u1"), _msg("assistant", "a1"), _msg("user", "u2")])
    with pytest.raises(InvalidRequest) as caught:
        await fit_context(call, Counter(), "auto", context_window=50)
    message = caught.value.message
    assert "truncation='auto'" in message and "Shorten the input or use" not in message
    assert "newest user message" in message and caught.value.param == "input"


async def test_max_output_tokens_larger_than_the_window_names_it() -> None:
    call = ModelCall(upstream_model="m", items=[_msg("user", "u1")], max_output_tokens=10**6)
    for mode in ("auto", "disabled"):
        with pytest.raises(InvalidRequest) as caught:
            await fit_context(call, Counter(), mode, context_window=8192)
        assert caught.value.param == "max_output_tokens" and "1000000" in caught.value.message
