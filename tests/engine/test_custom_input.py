"""A custom tool call's input decoded as its `{"input": "..."}` arguments stream (engine/custom_input.py)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from parley.engine.custom_input import CustomInput

inputs = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


def _chunks(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(c, len(text)) for c in cuts})
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]


@settings(max_examples=300, deadline=None)
@given(value=inputs, cuts=st.lists(st.integers(0, 200), max_size=8), ascii_only=st.booleans(),
       spaced=st.booleans())
def test_the_input_streams_as_it_is_decoded_whatever_the_chunks(value: str, cuts: list[int], ascii_only: bool,
                                                                spaced: bool) -> None:
    separators = (", ", ": ") if spaced else (",", ":")
    arguments = json.dumps({"input": value}, ensure_ascii=ascii_only, separators=separators)
    if spaced:
        arguments = " " + arguments.replace("{", "{ \n", 1)
    decoder = CustomInput()
    streamed = ""
    for chunk in _chunks(arguments, cuts):
        streamed += decoder.feed(chunk)
        assert value.startswith(streamed)  # what streamed so far is always the input's start, never more
    assert streamed == value and decoder.finish(arguments) == value


@given(value=inputs, cut=st.integers(0, 200))
def test_arguments_cut_short_give_what_was_decoded(value: str, cut: int) -> None:
    arguments = json.dumps({"input": value})[:cut]
    decoder = CustomInput()
    streamed = decoder.feed(arguments)
    assert value.startswith(streamed) and decoder.finish(arguments) == streamed


def test_arguments_that_are_not_the_envelope_are_taken_whole_at_the_end() -> None:
    for arguments, expected in (('{"other": 1, "input": "x"}', "x"), ("print(1)", "print(1)"),
                                ('{"input": 5}', '{"input": 5}')):
        decoder = CustomInput()
        assert decoder.feed(arguments) == "" and decoder.finish(arguments) == expected


def test_an_escape_json_does_not_have_keeps_the_rest_as_written() -> None:
    decoder = CustomInput()
    assert decoder.feed('{"input": "a\\qb') == "a\\q"
    assert decoder.feed('c"}') == ""
    assert decoder.finish('{"input": "a\\qbc"}') == 'a\\qbc"}'


def test_a_resumed_input_is_what_its_deltas_carried() -> None:
    assert CustomInput.resumed(["pri", "nt("]).finish("") == "print("
