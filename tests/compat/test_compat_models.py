"""Model behaviours through the SDK: max-tokens truncation, reasoning items, function calling round trips."""

from __future__ import annotations

import json

from compat_support import ParleyServer, check_events, create_checked, fold_output, post_stream, upstream_request
from openai import AsyncOpenAI, OpenAI
from openai.types.responses import FunctionToolParam, ResponseFunctionToolCall, ResponseReasoningItem

from parley.testing.fake_upstream import FakeUpstream

WEATHER_TOOL: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
        "additionalProperties": False,
    },
    "strict": True,
}


# -- finish_reason length ----------------------------------------------------------------------------


def test_length_is_incomplete(client: OpenAI) -> None:
    body, response = create_checked(client, model="length", input="cut me short")
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert body["completed_at"] is None
    message = response.output[-1]
    assert message.type == "message" and message.status == "incomplete"
    assert response.output_text == "echo: cut me short"


def test_length_streamed_ends_with_incomplete(server: ParleyServer) -> None:
    events = post_stream(server.base_url, {"model": "length", "input": "cut me short"}).events()
    check_events(events)
    types = [e["type"] for e in events]
    assert types[-1] == "response.incomplete"
    assert "response.completed" not in types
    final = events[-1]["response"]
    assert final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    # The open part and item are closed before the terminal event, the item marked incomplete.
    assert types[-4:-1] == ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    assert events[-2]["item"]["status"] == "incomplete"
    assert fold_output(events) == final["output"]


def test_length_via_sdk_iterator(client: OpenAI) -> None:
    events = list(client.responses.create(model="length", input="short", stream=True))
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"


# -- reasoning ---------------------------------------------------------------------------------------


def test_reasoning_item_before_message(client: OpenAI) -> None:
    _, response = create_checked(client, model="reasoning", input="think first")
    assert response.status == "completed"
    assert [item.type for item in response.output] == ["reasoning", "message"]
    reasoning = response.output[0]
    assert isinstance(reasoning, ResponseReasoningItem)
    assert reasoning.id.startswith("rs_")
    assert reasoning.content is not None
    assert [(c.type, c.text) for c in reasoning.content] == [("reasoning_text", "Let me think about it.")]
    assert response.output_text == "echo: think first"
    assert response.usage is not None
    assert response.usage.output_tokens_details.reasoning_tokens > 0


def test_reasoning_streamed(server: ParleyServer) -> None:
    events = post_stream(server.base_url, {"model": "reasoning", "input": "think first"}).events()
    check_events(events)
    types = [e["type"] for e in events]
    first_message = next(i for i, e in enumerate(events)
                         if e["type"] == "response.output_item.added" and e["item"]["type"] == "message")
    reasoning_types = types[2:first_message]
    assert reasoning_types[0] == "response.output_item.added" and events[2]["item"]["type"] == "reasoning"
    assert reasoning_types[1] == "response.content_part.added"
    assert events[3]["part"]["type"] == "reasoning_text"
    deltas = [e for e in events[:first_message] if e["type"] == "response.reasoning_text.delta"]
    assert len(deltas) >= 2
    assert reasoning_types[-3:] == ["response.reasoning_text.done", "response.content_part.done",
                                    "response.output_item.done"]
    assert "".join(d["delta"] for d in deltas) == events[first_message - 3]["text"] == "Let me think about it."
    assert all(e["output_index"] == 0 for e in events[2:first_message])
    assert events[first_message]["output_index"] == 1
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["reasoning", "message"]
    assert final["usage"]["output_tokens_details"]["reasoning_tokens"] > 0
    assert fold_output(events) == final["output"]


async def test_reasoning_stream_helper_async(aclient: AsyncOpenAI) -> None:
    async with aclient.responses.stream(model="reasoning", input="helper thinks") as stream:
        reasoning = "".join([e.delta async for e in stream if e.type == "response.reasoning_text.delta"])
        final = await stream.get_final_response()
    assert reasoning == "Let me think about it."
    assert final.output_text == "echo: helper thinks"


# -- function calling ------------------------------------------------------------------------------


def test_function_call_round_trip(client: OpenAI, fake: FakeUpstream) -> None:
    _, first = create_checked(client, model="tools", input="weather marker-fc", tools=[WEATHER_TOOL])
    assert first.status == "completed"  # stopping for a tool call is `completed`
    assert len(first.output) == 1
    call = first.output[0]
    assert isinstance(call, ResponseFunctionToolCall)
    assert call.name == "get_weather" and call.status == "completed"
    assert call.id is not None and call.id.startswith("fc_")
    assert json.loads(call.arguments) == {"location": "Paris"}
    assert first.tools[0].type == "function" and first.tools[0].name == "get_weather"
    sent = upstream_request(fake.requests, "marker-fc")
    assert sent["tools"][0]["function"]["name"] == "get_weather"

    _, second = create_checked(
        client, model="tools", previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"temp_c": 21}'}],
    )
    assert second.status == "completed"
    assert second.output_text == 'done: {"temp_c": 21}'
    messages = upstream_request(fake.requests, "temp_c")["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[1]["tool_calls"][0]["id"] == call.call_id
    assert messages[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert messages[2]["tool_call_id"] == call.call_id
    assert messages[2]["content"] == '{"temp_c": 21}'


def test_function_call_streamed(server: ParleyServer) -> None:
    body = {"model": "tools", "input": "call it twice", "tools": [WEATHER_TOOL]}
    events = post_stream(server.base_url, body).events()
    check_events(events)
    types = [e["type"] for e in events]
    assert types[-1] == "response.completed"
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["function_call", "function_call"]
    for index, item in enumerate(final["output"]):
        added = next(e for e in events if e["type"] == "response.output_item.added" and e["output_index"] == index)
        assert added["item"]["type"] == "function_call" and added["item"]["arguments"] == ""
        assert added["item"]["status"] == "in_progress" and added["item"]["name"] == "get_weather"
        deltas = [e["delta"] for e in events
                  if e["type"] == "response.function_call_arguments.delta" and e["output_index"] == index]
        done = next(e for e in events
                    if e["type"] == "response.function_call_arguments.done" and e["output_index"] == index)
        assert len(deltas) >= 2 and "".join(deltas) == done["arguments"] == item["arguments"]
        assert done["name"] == "get_weather" and done["item_id"] == item["id"]
        assert item["status"] == "completed"
        # delta... -> arguments.done -> output_item.done for each call
        i_done = events.index(done)
        assert events[i_done + 1]["type"] == "response.output_item.done"
        assert events[i_done + 1]["output_index"] == index
    assert final["output"][0]["call_id"] != final["output"][1]["call_id"]
    assert fold_output(events) == final["output"]


def test_function_call_stream_helper(client: OpenAI) -> None:
    with client.responses.stream(model="tools", input="weather", tools=[WEATHER_TOOL]) as stream:
        snapshots = [e.snapshot for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    call = final.output[0]
    assert call.type == "function_call"
    assert snapshots[-1] == call.arguments == '{"location": "Paris"}'
    # strict tool: the helper parses the arguments
    assert call.parsed_arguments == {"location": "Paris"}


async def test_function_call_follow_up_async_streaming(aclient: AsyncOpenAI, fake: FakeUpstream) -> None:
    first = await aclient.responses.create(model="tools", input="async weather", tools=[WEATHER_TOOL])
    call = first.output[0]
    assert call.type == "function_call"
    stream = await aclient.responses.create(
        model="tools", previous_response_id=first.id, stream=True, tools=[],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "async-sunny"}],
    )
    events = [e async for e in stream]
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "done: async-sunny"
    assert upstream_request(fake.requests, "async-sunny")["messages"][-1]["role"] == "tool"
