"""Sealed reasoning: round trip, project binding, tampering, key rotation."""

from __future__ import annotations

import pytest

from parley.engine.sealing import ReasoningSealer, new_key
from parley.errors import InvalidRequest

ITEM = {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "step by step"}]}


def test_round_trip_and_rotation() -> None:
    old, new = new_key(), new_key()
    token = ReasoningSealer([old]).seal(ITEM, "proj")
    assert "step by step" not in token
    rotated = ReasoningSealer([new, old])  # new key seals, old key still opens
    assert rotated.open(token, "proj", "p")["content"] == ITEM["content"]
    assert rotated.open(rotated.seal(ITEM, "proj"), "proj", "p")["content"] == ITEM["content"]
    with pytest.raises(InvalidRequest):
        ReasoningSealer([new]).open(token, "proj", "p")  # retired key


@pytest.mark.parametrize("mutate", [
    lambda t: t[:-2] + ("A" if t[-2] != "A" else "B") + t[-1],
    lambda t: t.replace("prl1.", "xxx1."),
    lambda t: t[:20],
    lambda t: "prl1.!!!not-base64",
])
def test_tampered_tokens_are_rejected(mutate) -> None:  # type: ignore[no-untyped-def]
    sealer = ReasoningSealer([new_key()])
    token = sealer.seal(ITEM, "proj")
    with pytest.raises(InvalidRequest) as info:
        sealer.open(mutate(token), "proj", "input[0].encrypted_content")
    assert info.value.param == "input[0].encrypted_content"
    assert info.value.code == "invalid_encrypted_content"


def test_other_project_cannot_open() -> None:
    sealer = ReasoningSealer([new_key()])
    with pytest.raises(InvalidRequest):
        sealer.open(sealer.seal(ITEM, "proj-a"), "proj-b", "p")
