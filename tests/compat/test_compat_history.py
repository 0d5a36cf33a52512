"""Client-managed history: output items sent back as input (the SDK cookbook pattern; Codex with store=false)."""

from __future__ import annotations

from typing import Any

from compat_support import ParleyServer, check_events, create_checked, post_stream, upstream_request
from openai import OpenAI

from parley.testing.fake_upstream import FakeUpstream

TOOL: Any = {
    "type": "function", "name": "lookup", "description": "Look something up.",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}


def test_output_items_sent_back_as_input(client: OpenAI, fake: FakeUpstream) -> None:
    _, first = create_checked(client, model="echo", input="history-one")
    history: list[Any] = [{"role": "user", "content": "history-one"}]
    history += [item.to_dict() for item in first.output]  # ids, status, annotations, logprobs included
    history.append({"role": "user", "content": "history-two"})
    _, second = create_checked(client, model="echo", input=history)
    assert second.output_text == "echo: history-two"
    sent = upstream_request(fake.requests, "history-two")["messages"]
    assert [(m["role"], m["content"]) for m in sent] == [
        ("user", "history-one"), ("assistant", "echo: history-one"), ("user", "history-two"),
    ]
    # The same history again (same item ids) is still accepted: stored items are per response.
    _, third = create_checked(client, model="echo", input=history)
    assert third.output_text == "echo: history-two"


def test_manual_function_call_history(client: OpenAI, fake: FakeUpstream) -> None:
    _, first = create_checked(client, model="tools", input="manual-fc lookup", tools=[TOOL])
    call = first.output[0]
    assert call.type == "function_call"
    history: list[Any] = [{"role": "user", "content": "manual-fc lookup"}, call.to_dict(),
                          {"type": "function_call_output", "call_id": call.call_id, "output": "manual-result"}]
    _, second = create_checked(client, model="tools", input=history, tools=[TOOL])
    assert second.output_text == "done: manual-result"
    sent = upstream_request(fake.requests, "manual-result")["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]


def test_store_false_streaming_with_history(server: ParleyServer) -> None:
    # Codex's shape: store=false, stream=true, the whole history resent with its own item ids, extra fields.
    body = {
        "model": "echo", "store": False, "include": ["reasoning.encrypted_content"], "prompt_cache_key": "abc",
        "input": [
            {"type": "message", "role": "user", "id": "msg_client_1",
             "content": [{"type": "input_text", "text": "codex-one"}]},
            {"type": "message", "role": "assistant", "id": "msg_client_2",
             "content": [{"type": "output_text", "text": "an answer", "annotations": []}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "codex-two"}]},
        ],
    }
    events = post_stream(server.base_url, body).events()
    check_events(events)
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["store"] is False
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "echo: codex-two"


def test_unicode_round_trip(client: OpenAI, server: ParleyServer) -> None:
    text = "héllo 世界 🎉 \"quoted\" \\ back"
    _, response = create_checked(client, model="echo", input=text)
    assert response.output_text == "echo: " + text
    events = post_stream(server.base_url, {"model": "echo", "input": text}).events()
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "echo: " + text


def test_upstream_without_usage_still_reports_usage(client: OpenAI, server: ParleyServer) -> None:
    events = post_stream(server.base_url, {"model": "nousage", "input": "count these words please"}).events()
    usage = events[-1]["response"]["usage"]
    assert usage["output_tokens"] > 0 and usage["input_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
