"""Chunking (token windows with character offsets), attribute filters, and the hybrid score fusion."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from parley.errors import InvalidRequest
from parley.providers.tokens import load_encoding
from parley.retrieval.chunking import AUTO, ChunkingStrategy, check_strategy, chunk_text
from parley.retrieval.filters import matches as filter_matches
from parley.retrieval.filters import parse_filter
from parley.retrieval.ranking import Weights, fuse

ENCODING = load_encoding("cl100k_base")


def test_auto_is_800_with_400_overlapping() -> None:
    text = " ".join(f"word{i}" for i in range(3000))
    chunks = chunk_text(ENCODING, text, AUTO)
    assert all(c.tokens == 800 for c in chunks[:-1]) and chunks[-1].end == len(text)
    assert chunks[0].start == 0
    for before, after in itertools.pairwise(chunks):
        assert after.start < before.end  # they overlap
        assert ENCODING.encode_ordinary(text[after.start:before.end]).__len__() == pytest.approx(400, abs=2)
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_offsets_are_exact_also_inside_multibyte_text() -> None:
    text = "Ünïcödé 漢字 🙂 emoji and ascii. " * 300
    for chunk in chunk_text(ENCODING, text, ChunkingStrategy(100, 50)):
        assert chunk.text == text[chunk.start:chunk.end]
        assert abs(len(ENCODING.encode_ordinary(chunk.text)) - chunk.tokens) <= 2
    assert chunk_text(ENCODING, "", AUTO) == []
    (only,) = chunk_text(ENCODING, "short", AUTO)
    assert (only.start, only.end, only.text) == (0, 5, "short")


@pytest.mark.parametrize(("size", "overlap", "ok"), [
    (100, 0, True), (4096, 2048, True), (99, 0, False), (4097, 0, False), (800, 401, False), (800, -1, False),
])
def test_static_strategy_rules(size: int, overlap: int, ok: bool) -> None:
    assert (check_strategy(size, overlap) is None) == ok


ATTRS: dict[str, Any] = {"author": "ada", "year": 2021, "draft": False, "score": 4.5}


@pytest.mark.parametrize(("condition", "expected"), [
    ({"type": "eq", "key": "author", "value": "ada"}, True),
    ({"type": "eq", "key": "year", "value": "2021"}, False),  # a string never equals a number
    ({"type": "ne", "key": "author", "value": "bob"}, True),
    ({"type": "ne", "key": "missing", "value": "x"}, True),
    ({"type": "eq", "key": "missing", "value": "x"}, False),
    ({"type": "gt", "key": "year", "value": 2020}, True),
    ({"type": "gte", "key": "score", "value": 4.5}, True),
    ({"type": "lt", "key": "year", "value": 2021}, False),
    ({"type": "lte", "key": "author", "value": "b"}, True),  # strings order lexicographically
    ({"type": "gt", "key": "author", "value": 1}, False),
    ({"type": "in", "key": "year", "value": [2020, 2021]}, True),
    ({"type": "nin", "key": "author", "value": ["ada", "bob"]}, False),
    ({"type": "eq", "key": "draft", "value": False}, True),
    ({"type": "eq", "key": "draft", "value": 0}, False),  # booleans are not numbers
    ({"type": "and", "filters": [{"type": "eq", "key": "author", "value": "ada"},
                                 {"type": "or", "filters": [{"type": "lt", "key": "year", "value": 2000},
                                                            {"type": "eq", "key": "draft", "value": False}]}]}, True),
    ({"type": "or", "filters": [{"type": "eq", "key": "author", "value": "bob"},
                                {"type": "gt", "key": "score", "value": 5}]}, False),
])
def test_filter_semantics(condition: dict[str, Any], expected: bool) -> None:
    assert filter_matches(parse_filter(condition), ATTRS) is expected


@pytest.mark.parametrize(("condition", "param"), [
    ("eq", "filters"),
    ({"type": "like", "key": "a", "value": 1}, "filters.type"),
    ({"type": "eq", "value": 1}, "filters.key"),
    ({"type": "eq", "key": "a"}, "filters.value"),
    ({"type": "in", "key": "a", "value": "x"}, "filters.value"),
    ({"type": "eq", "key": "a", "value": {"nested": 1}}, "filters.value"),
    ({"type": "gt", "key": "a", "value": True}, "filters.value"),
    ({"type": "and", "filters": []}, "filters.filters"),
    ({"type": "or", "filters": [{"type": "eq", "key": "a", "value": 1}, {"type": "eq", "key": "", "value": 1}]},
     "filters.filters[1].key"),
])
def test_bad_filters_name_their_part(condition: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as bad:
        parse_filter(condition)
    assert bad.value.param == param


def test_fusion() -> None:
    fused = fuse({1: 0.9, 2: 0.5}, {2: 10.0, 3: 5.0}, Weights(0.5, 0.5))
    assert fused == pytest.approx({1: 0.45, 2: 0.75, 3: 0.25})
    assert all(0 <= v <= 1 for v in fuse({1: -0.3, 2: 1.2}, {}, Weights()).values())
    assert Weights.of(3, 1) == Weights(0.75, 0.25) and Weights.of(None, 0.2) == pytest.approx(Weights(0.8, 0.2))
    with pytest.raises(ValueError):
        Weights.of(0, 0)
