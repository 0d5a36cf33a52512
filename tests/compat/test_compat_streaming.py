"""Streaming create: raw SSE framing and event order, the SDK iterator (sync/async), and `responses.stream()`."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from compat_support import (
    STREAM_EVENT,
    ParleyServer,
    check_events,
    check_response,
    fold_output,
    fold_text,
    post_stream,
)
from openai import AsyncOpenAI, OpenAI
from openai.types.responses import ResponseCompletedEvent, ResponseTextDeltaEvent

PLAIN_TEXT_ORDER_HEAD = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
PLAIN_TEXT_ORDER_TAIL = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def _assert_plain_text_order(types: list[str], deltas: int) -> None:
    assert types[:4] == PLAIN_TEXT_ORDER_HEAD, types
    assert types[4:-4] == ["response.output_text.delta"] * deltas, types
    assert types[-4:] == PLAIN_TEXT_ORDER_TAIL, types


def _sdk_event_dict(event: Any) -> dict[str, Any]:
    # The SDK builds events leniently; re-validate what it parsed against the strict union.
    data: dict[str, Any] = event.to_dict(mode="json")
    return data


def test_raw_sse_wire_format(server: ParleyServer) -> None:
    stream = post_stream(server.base_url, {"model": "echo", "input": "one two three four"})
    assert stream.status == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers["cache-control"] == "no-cache"
    assert stream.headers["x-request-id"]
    # Each event is written in one piece (the Open Responses parser drops events split across reads).
    assert all(chunk.endswith(b"\n\n") for chunk in stream.chunks), stream.chunks
    assert b"\nid:" not in stream.body and not stream.body.startswith(b"id:")
    events = stream.events()
    check_events(events)
    types = [e["type"] for e in events]
    _assert_plain_text_order(types, deltas=5)  # "echo:", " one", " two", " three", " four"

    created, in_progress, completed = events[0], events[1], events[-1]
    assert created["response"]["status"] == "in_progress"
    assert created["response"]["output"] == [] and created["response"]["usage"] is None
    assert in_progress["response"]["status"] == "in_progress"
    final = completed["response"]
    assert final["status"] == "completed" and final["usage"] is not None and final["completed_at"] is not None
    assert {e["response"]["id"] for e in (created, in_progress, completed)} == {final["id"]}

    # Folding the deltas gives the completed text; folding the item events gives the completed output.
    text = final["output"][0]["content"][0]["text"]
    assert fold_text(events) == text == "echo: one two three four"
    assert fold_output(events) == final["output"]

    added, part_added = events[2], events[3]
    assert added["output_index"] == 0 and added["item"]["status"] == "in_progress"
    assert added["item"]["content"] == []
    assert part_added["part"] == {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    item_id = added["item"]["id"]
    for event in events[3:-1]:
        assert event.get("item_id", event.get("item", {}).get("id")) == item_id
        assert event["output_index"] == 0
    for event in events:
        if event["type"] == "response.output_text.delta":
            assert event["logprobs"] == [] and event["content_index"] == 0
    done = events[-4]
    assert done["text"] == text and done["logprobs"] == []


def test_obfuscation_toggle(server: ParleyServer) -> None:
    default = post_stream(server.base_url, {"model": "echo", "input": "pad me"}).events()
    deltas = [e for e in default if e["type"] == "response.output_text.delta"]
    assert deltas and all(isinstance(e.get("obfuscation"), str) for e in deltas)
    off = post_stream(
        server.base_url,
        {"model": "echo", "input": "pad me", "stream_options": {"include_obfuscation": False}},
    ).events()
    deltas = [e for e in off if e["type"] == "response.output_text.delta"]
    assert deltas and all("obfuscation" not in e for e in deltas)


def test_stored_streamed_response_equals_final_event(server: ParleyServer, client: OpenAI) -> None:
    events = post_stream(server.base_url, {"model": "echo", "input": "stored after stream"}).events()
    final = events[-1]["response"]
    retrieved = client.responses.with_raw_response.retrieve(final["id"]).http_response.json()
    check_response(retrieved)
    assert retrieved == final


def test_sdk_stream_iterator_sync(client: OpenAI) -> None:
    stream = client.responses.create(model="echo", input="sync iterator test", stream=True)
    events = list(stream)
    dicts = [_sdk_event_dict(e) for e in events]
    for data in dicts:
        STREAM_EVENT.validate_python(data)
    _assert_plain_text_order([e.type for e in events], deltas=4)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert all(isinstance(e, ResponseTextDeltaEvent) for e in events if e.type == "response.output_text.delta")
    last = events[-1]
    assert isinstance(last, ResponseCompletedEvent)
    assert last.response.output_text == "echo: sync iterator test"
    assert "".join(e.delta for e in events if isinstance(e, ResponseTextDeltaEvent)) == last.response.output_text


async def test_sdk_stream_iterator_async(aclient: AsyncOpenAI) -> None:
    stream = await aclient.responses.create(model="echo", input="async iterator test", stream=True)
    events = [event async for event in stream]
    for event in events:
        STREAM_EVENT.validate_python(_sdk_event_dict(event))
    _assert_plain_text_order([e.type for e in events], deltas=4)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    last = events[-1]
    assert isinstance(last, ResponseCompletedEvent)
    assert last.response.output_text == "echo: async iterator test"
    assert "".join(e.delta for e in events if isinstance(e, ResponseTextDeltaEvent)) == last.response.output_text


def test_stream_helper_sync(client: OpenAI) -> None:
    with client.responses.stream(model="echo", input="helper sync") as stream:
        snapshots: list[str] = []
        types: list[str] = []
        for event in stream:
            types.append(event.type)
            if event.type == "response.output_text.delta":
                snapshots.append(event.snapshot)
        final = stream.get_final_response()
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert snapshots[-1] == "echo: helper sync"
    assert all(b.startswith(a) for a, b in itertools.pairwise(snapshots))
    assert final.status == "completed"
    assert final.output_text == "echo: helper sync"
    assert final.usage is not None and final.usage.output_tokens > 0


async def test_stream_helper_async(aclient: AsyncOpenAI) -> None:
    async with aclient.responses.stream(model="echo", input="helper async") as stream:
        text = ""
        async for event in stream:
            if event.type == "response.output_text.delta":
                text += event.delta
        final = await stream.get_final_response()
    assert text == final.output_text == "echo: helper async"
    assert final.status == "completed"
    assert final.id.startswith("resp_")


async def test_concurrent_streams_do_not_mix(aclient: AsyncOpenAI) -> None:
    async def one(n: int) -> tuple[int, str, str, list[int]]:
        stream = await aclient.responses.create(model="echo", input=f"stream number {n}", stream=True)
        events = [event async for event in stream]
        text = "".join(e.delta for e in events if isinstance(e, ResponseTextDeltaEvent))
        last = events[-1]
        assert isinstance(last, ResponseCompletedEvent)
        return n, text, last.response.output_text, [e.sequence_number for e in events]

    results = await asyncio.gather(*(one(n) for n in range(12)))
    for n, text, final_text, seqs in results:
        assert text == final_text == f"echo: stream number {n}"
        assert seqs == list(range(len(seqs)))
