"""The compaction rule and its sealed items, without HTTP: expansion, project binding, compaction_trigger."""

from __future__ import annotations

from typing import Any

import pytest

from parley.engine.sealing import ReasoningSealer, new_key
from parley.errors import InvalidRequest
from parley.services.compaction import SUMMARY_PREFIX, Compactor, check_compaction_trigger, transcript

Item = dict[str, Any]


def message(role: str, text: str) -> Item:
    kind = "output_text" if role == "assistant" else "input_text"
    return {"id": f"msg_{text}", "type": "message", "role": role, "status": "completed",
            "content": [{"type": kind, "text": text}]}


@pytest.fixture
def compactor() -> Compactor:
    return Compactor(ReasoningSealer([new_key()]))


def test_expand_keeps_user_messages_and_replaces_the_last_compaction(compactor: Compactor) -> None:
    old = compactor.item("proj", "old summary")
    new = compactor.item("proj", "new summary")
    items = [message("user", "a"), message("assistant", "b"), old, message("user", "c"),
             {"id": "fc_1", "type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
             new, message("assistant", "d"), message("user", "e")]
    expanded = compactor.expand("proj", items)
    assert [i["id"] for i in expanded] == ["msg_a", "msg_c", new["id"], "msg_d", "msg_e"]
    summary = expanded[2]
    assert summary["role"] == "developer" and summary["content"][0]["text"] == SUMMARY_PREFIX + "new summary"
    assert compactor.expand("proj", items[:2]) == items[:2]  # nothing to expand


def test_sealed_summaries_are_bound_to_the_project_and_purpose(compactor: Compactor) -> None:
    item = compactor.item("proj", "the secret plan")
    assert "secret" not in item["encrypted_content"] and item["id"].startswith("cmp_")
    assert compactor.open("proj", item, "p") == "the secret plan"
    with pytest.raises(InvalidRequest) as err:
        compactor.open("other", item, "input[3].encrypted_content")
    assert err.value.param == "input[3].encrypted_content" and err.value.code == "invalid_encrypted_content"
    with pytest.raises(InvalidRequest):
        compactor.check_input("proj", [message("user", "x"), {**item, "encrypted_content": "prl1.xyz"}], "items")
    with pytest.raises(InvalidRequest):
        compactor.check_input("proj", [{"id": "cmp_x", "type": "compaction"}], "input")


def test_compaction_trigger_must_be_last_and_is_unsupported() -> None:
    with pytest.raises(InvalidRequest) as not_last:
        check_compaction_trigger([{"type": "compaction_trigger"}, {"role": "user", "content": "x"}], "input")
    assert not_last.value.param == "input[0]" and "last" in not_last.value.message
    with pytest.raises(InvalidRequest) as last:
        check_compaction_trigger([{"role": "user", "content": "x"}, {"type": "compaction_trigger"}], "input")
    assert last.value.param == "input[1].type" and last.value.code == "unsupported_value"
    check_compaction_trigger("plain text", "input")
    check_compaction_trigger([{"role": "user", "content": "compaction_trigger"}], "input")


def test_transcript_renders_messages_and_tool_calls() -> None:
    text = transcript([
        message("user", "weather?"),
        {"id": "fc_1", "type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"c": 1}'},
        {"id": "fco_1", "type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"id": "rs_1", "type": "reasoning", "summary": []},
        message("assistant", "It is sunny."),
    ])
    assert text.split("\n\n") == [
        "user: weather?", 'assistant called tool get_weather: {"c": 1}', "tool result: sunny",
        "assistant: It is sunny.",
    ]
