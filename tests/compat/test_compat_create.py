"""Non-streaming create through the official SDK (sync and async): the Response validates and reads right."""

from __future__ import annotations

from typing import Any

import httpx
from compat_support import ParleyServer, check_response, create_checked, upstream_request
from openai import AsyncOpenAI, OpenAI

from parley.testing.fake_upstream import FakeUpstream


def test_create_sync(client: OpenAI) -> None:
    raw = client.responses.with_raw_response.create(model="echo", input="hello compat sync")
    assert raw.http_response.status_code == 200
    assert raw.http_response.headers["content-type"].startswith("application/json")
    assert raw.http_response.headers["x-request-id"]
    body: dict[str, Any] = raw.http_response.json()
    validated = check_response(body)
    response = raw.parse()
    assert response.id.startswith("resp_") and validated.id == response.id
    assert response.status == "completed"
    assert response.output_text == "echo: hello compat sync"
    assert response.completed_at is not None and response.completed_at >= response.created_at
    assert response.error is None and response.incomplete_details is None
    assert response.model == "echo"
    assert len(response.output) == 1
    message = response.output[0]
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    usage = response.usage
    assert usage is not None
    assert usage.input_tokens > 0 and usage.output_tokens == 4
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.output_tokens_details.reasoning_tokens == 0
    assert body["store"] is True and body["background"] is False


async def test_create_async(aclient: AsyncOpenAI) -> None:
    raw = await aclient.responses.with_raw_response.create(
        model="echo", input="hello compat async", temperature=0.5, metadata={"k": "v"}
    )
    check_response(raw.http_response.json())
    response = raw.parse()
    assert response.status == "completed"
    assert response.output_text == "echo: hello compat async"
    # Request values are echoed back.
    assert response.temperature == 0.5 and response.metadata == {"k": "v"}


def test_create_message_list_and_instructions(client: OpenAI, fake: FakeUpstream) -> None:
    _, response = create_checked(
        client,
        model="echo",
        instructions="Answer like a pirate.",
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "first marker-msglist"}]},
            {"role": "assistant", "content": "an earlier answer"},
            {"type": "message", "role": "user", "content": "second marker-msglist"},
        ],
    )
    assert response.output_text == "echo: second marker-msglist"
    assert response.instructions == "Answer like a pirate."
    sent = upstream_request(fake.requests, "marker-msglist")
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert sent["messages"][0]["content"] == "Answer like a pirate."
    assert sent["stream"] is False


def test_unknown_request_fields_are_ignored(client: OpenAI) -> None:
    response = client.responses.create(
        model="echo", input="extras", extra_body={"some_future_field": {"x": 1}, "verbosity": "low"}
    )
    assert response.status == "completed" and response.output_text == "echo: extras"


def test_create_over_plain_httpx_validates(server: ParleyServer) -> None:
    # A client that is not the SDK (no X-Stainless headers, no auth at all in local development mode).
    resp = httpx.post(server.base_url + "/responses", json={"model": "echo", "input": "plain http"}, timeout=30)
    assert resp.status_code == 200
    response = check_response(resp.json())
    assert response.output_text == "echo: plain http"


def test_models_list(client: OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"echo", "tools", "reasoning"} <= ids
    assert client.models.retrieve("echo").id == "echo"
