"""What the prefix memos keep (providers/prefix_memo.py, ModelCall.continuable): a context whose item objects no
later call can start with (a fresh HTTP request: its next turn reads its items back from the database as new
objects) is never kept as an entry, yet the same response's later steps still find it; a continuable one is kept."""

from __future__ import annotations

from typing import Any

from parley.engine.context_measure import ContextMeasures
from parley.providers.base import ModelCall
from parley.providers.chat_request import ChatMessages, chat_messages
from parley.providers.prefix_memo import PrefixMemo
from parley.providers.profiles import PROFILES

Item = dict[str, Any]


def _user(n: int) -> Item:
    return {"id": f"msg_u{n}", "type": "message", "role": "user", "content": [{"type": "input_text", "text": f"q{n}"}]}


def test_a_context_not_kept_takes_the_transient_slot_only() -> None:
    memo: PrefixMemo[str] = PrefixMemo(1 << 20)
    items = [_user(1), _user(2)]
    size = memo.put(items, "state", None, keep=False)
    assert len(memo) == 0 and memo.bytes == 0 and size > 0
    hit = memo.find([*items, _user(3)])  # the same response's next step, extending it
    assert hit is not None and (hit.start, hit.state, hit.size) == (2, "state", size)
    other = [_user(4)]
    memo.put(other, "other", None, keep=False)  # the next fresh context replaces it
    assert memo.find(items) is None
    assert memo.find(other) is not None
    kept = [_user(5)]
    memo.put(kept, "kept", None)
    assert len(memo) == 1 and memo.find(kept) is not None


def test_an_equal_but_distinct_first_item_is_not_found_in_the_transient_slot() -> None:
    memo: PrefixMemo[str] = PrefixMemo(1 << 20)
    memo.put([_user(1)], "state", None, keep=False)
    assert memo.find([_user(1)]) is None  # equal value, another object: a new request's item
    memo2: PrefixMemo[str] = PrefixMemo(0)  # off: nothing anywhere
    items = [_user(1)]
    memo2.put(items, "state", None, keep=False)
    assert memo2.find(items) is None


def test_chat_translation_keeps_only_continuable_contexts() -> None:
    memo: PrefixMemo[ChatMessages] = PrefixMemo(1 << 20)
    fresh = ModelCall("m", [_user(1)], continuable=False)
    first = chat_messages(fresh, PROFILES["generic"], memo)
    assert len(memo) == 0
    assert chat_messages(fresh, PROFILES["generic"], memo) == first  # found again, same messages
    chained = ModelCall("m", [_user(2)])
    chat_messages(chained, PROFILES["generic"], memo)
    assert len(memo) == 1


def test_measures_of_a_fresh_context_are_found_again_but_not_kept() -> None:
    measures = ContextMeasures(1 << 20)
    items = [_user(1), {"id": "msg_f", "type": "message", "role": "user",
                        "content": [{"type": "input_file", "file_id": "file_1"}]}]
    first = measures.of(items, keep=False)
    assert first.file_parts and len(measures.memo) == 0
    assert measures.of(items, keep=False) == first
    assert measures.of(items) == first and len(measures.memo) == 1
