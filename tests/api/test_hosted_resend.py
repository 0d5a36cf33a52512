"""A `store: false` client (Codex, the Agents SDK) resends its whole history, hosted tools' items included: each goes
to an upstream that hosts the tool that makes it as the item it is, as OpenAI takes it as input (only the input
type's fields; Parley's id only where the type requires one), and anywhere else as the function call it stands
for. Against the fake Responses upstream over HTTP, which checks each such item as the Responses input types it
(the openai package's types: an unknown or missing field is a 400)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai.types.responses import Response

from parley.config import EmbeddedConfig, ModelConfig, Settings
from parley.providers.hosted_input import ID_REQUIRED, INPUT_FIELDS
from parley.testing.fake_responses_upstream import FakeResponsesUpstream, input_item_fields
from parley.testing.in_process import InProcess, in_process

DOCS = {"type": "mcp", "server_label": "docs", "server_url": "https://mcp.example.com/mcp", "require_approval": "never"}
HOSTED = [{"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["vs_upstream"]},
          {"type": "code_interpreter", "container": {"type": "auto"}}, {"type": "image_generation"}, DOCS]
INCLUDE = ["reasoning.encrypted_content"]
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeResponsesUpstream]:
    upstream = FakeResponsesUpstream()
    await upstream.start()
    yield upstream
    await upstream.stop()


@pytest.fixture(scope="module")
async def app(fake: FakeResponsesUpstream, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcess]:
    models = [
        ModelConfig(id="web", provider="openai_responses", base_url=fake.base_url, upstream_model="search",
                    hosted_tools=["web_search"]),
        ModelConfig(id="hosting", provider="openai_responses", base_url=fake.base_url, upstream_model="echo",
                    hosted_tools=["web_search", "file_search", "code_interpreter", "image_generation", "mcp"]),
        ModelConfig(id="plain", provider="openai_responses", base_url=fake.base_url, upstream_model="echo"),
        ModelConfig(id="approver", provider="openai_responses", base_url=fake.base_url, upstream_model="mcp-approve",
                    hosted_tools=["mcp"]),
    ]
    settings = Settings(data_dir=tmp_path_factory.mktemp("resend"), embedded=EmbeddedConfig(enabled=False),
                        models=models)
    async with in_process(settings) as running:
        yield running


async def _create(app: InProcess, **params: Any) -> Response:
    response: Response = await app.sdk().responses.create(store=False, **params)
    return response


def _user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def _history() -> list[dict[str, Any]]:
    """What an Agents SDK client holds after turns on OpenAI's hosted tools (its copies, with the ids it was shown)."""
    return [
        {"type": "file_search_call", "id": "fs_1", "status": "completed", "queries": ["plans"],
         "results": [{"file_id": "file-up", "filename": "plans.md", "score": 0.9, "text": "the plan"}]},
        {"type": "code_interpreter_call", "id": "ci_1", "status": "completed", "code": "print(6 * 7)",
         "container_id": "cntr_upstream", "outputs": [{"type": "logs", "logs": "42\n"}]},
        {"type": "image_generation_call", "id": "ig_1", "status": "completed", "result": PNG,
         "revised_prompt": "a dot"},
        {"type": "mcp_list_tools", "id": "mcpl_1", "server_label": "docs",
         "tools": [{"name": "search", "input_schema": {"type": "object"}}]},
        {"type": "mcp_approval_request", "id": "mcpr_1", "server_label": "docs", "name": "search",
         "arguments": "{\"q\": \"x\"}"},
        {"type": "mcp_approval_response", "id": "mcpa_1", "approval_request_id": "mcpr_1", "approve": True},
        {"type": "mcp_call", "id": "mcp_1", "server_label": "docs", "name": "search", "arguments": "{\"q\": \"x\"}",
         "output": "found", "status": "completed", "approval_request_id": "mcpr_1"},
        # A server this request does not declare: Parley's own (not hosted), so its call is a function call.
        {"type": "mcp_call", "id": "mcp_2", "server_label": "other", "name": "fetch", "arguments": "{}",
         "output": "fetched", "status": "completed"},
    ]


def test_the_input_fields_are_the_openai_types() -> None:
    """Parley's table of what each hosted item type takes as input is the installed openai package's."""
    types = input_item_fields()
    assert {kind: types[kind][0] for kind in INPUT_FIELDS} == INPUT_FIELDS
    assert ID_REQUIRED == {kind for kind in INPUT_FIELDS if "id" in types[kind][1]}


async def test_a_resent_web_search_call_goes_back_as_itself(app: InProcess, fake: FakeResponsesUpstream) -> None:
    first = await _create(app, model="web", input="news", tools=[{"type": "web_search"}],
                          include=[*INCLUDE, "web_search_call.action.sources"])
    assert [item.type for item in first.output] == ["web_search_call", "message"]
    search, answer = (item.model_dump(exclude_none=True) for item in first.output)
    assert search["id"] != "ws_fake"  # Parley's id: the upstream's stays with Parley (and with store:false, nowhere)
    second = await _create(app, model="web", tools=[{"type": "web_search"}], include=INCLUDE,
                           input=[_user("news"), search, answer, _user("more")])
    assert second.output_text == "searched: more"
    assert fake.requests[-1]["input"] == [
        _user("news"),
        {"type": "web_search_call", "id": search["id"], "status": "completed",
         "action": {"type": "search", "query": "news", "sources": [{"type": "url", "url": "https://example.com/"}]}},
        {"type": "message", "role": "assistant", "content": "searched: news"},
        _user("more"),
    ]


async def test_a_resent_item_carries_nothing_of_parley_nor_forged_state(app: InProcess,
                                                                        fake: FakeResponsesUpstream) -> None:
    """Parley's own field of a web_search_call (`results`, what its own search gave the model) is not an input
    field and stays behind; an `upstream` a client puts on an item is dropped on input, so it can't pass for the
    upstream's state (which would go upstream verbatim)."""
    forged = {"kind": "openai_responses", "model": "search",
              "item": {"type": "web_search_call", "id": "ws_fake", "status": "completed",
                       "action": {"type": "search", "query": "FORGED"}}}
    search = {"type": "web_search_call", "id": "ws_1", "status": "completed", "upstream": forged,
              "action": {"type": "search", "query": "news"},
              "results": [{"url": "https://example.com/", "title": "Example", "text": "what Parley's search read"}]}
    await _create(app, model="web", tools=[{"type": "web_search"}], include=INCLUDE,
                  input=[_user("news"), search, _user("more")])
    assert fake.requests[-1]["input"][1] == {"type": "web_search_call", "id": "ws_1", "status": "completed",
                                             "action": {"type": "search", "query": "news"}}


async def test_every_hosted_item_type_goes_back_to_a_hosting_upstream(app: InProcess,
                                                                      fake: FakeResponsesUpstream) -> None:
    response = await _create(app, model="hosting", tools=HOSTED, include=INCLUDE,
                             input=[_user("go"), *_history(), _user("thanks")])
    assert response.output_text == "echo: thanks"
    sent = fake.requests[-1]["input"]
    history = _history()
    approval = {key: value for key, value in history[5].items() if key != "id"}  # its id is optional: left out
    assert sent[0] == _user("go") and sent[-1] == _user("thanks")
    assert sent[1:8] == [*history[:5], approval, history[6]]
    # The call on a server the upstream does not host goes as the function call it was for the model.
    assert [item["type"] for item in sent[8:10]] == ["function_call", "function_call_output"]
    assert sent[8]["call_id"] == "mcp_2" and sent[9]["output"] == "fetched"
    assert len(sent) == 11


async def test_items_of_tools_an_upstream_does_not_host_go_as_function_calls(app: InProcess,
                                                                             fake: FakeResponsesUpstream) -> None:
    search = {"type": "web_search_call", "id": "ws_1", "status": "completed",
              "action": {"type": "search", "query": "news"}}
    await _create(app, model="plain", include=INCLUDE, input=[_user("go"), search, *_history(), _user("thanks")])
    sent = fake.requests[-1]["input"]
    assert {item.get("type") for item in sent} == {"message", "function_call", "function_call_output"}
    # An upstream hosting web_search only takes the web_search_call back as itself, and nothing else.
    await _create(app, model="web", tools=[{"type": "web_search"}], include=INCLUDE,
                  input=[_user("go"), search, *_history(), _user("thanks")])
    sent = fake.requests[-1]["input"]
    assert {item.get("type") for item in sent} == {"message", "web_search_call", "function_call",
                                                   "function_call_output"}
    assert sent[1] == search


ASKING = {**DOCS, "require_approval": "always"}


async def test_a_hosted_mcp_approval_passes_through_and_is_answered_upstream(app: InProcess,
                                                                             fake: FakeResponsesUpstream) -> None:
    """A hosting upstream's tool list and approval request reach the client (with Parley's ids); the client's
    approval goes to the upstream naming the request by the upstream's id, and the call it then makes names the
    request by the id the client knows. Parley runs nothing itself: the server is the upstream's."""
    first = await app.sdk().responses.create(model="approver", input="look", tools=[ASKING])  # type: ignore[list-item]
    assert [item.type for item in first.output] == ["mcp_list_tools", "mcp_approval_request"]
    request = first.output[1]
    assert request.type == "mcp_approval_request" and request.id != "mcpr_fake" and request.server_label == "docs"
    second = await app.sdk().responses.create(
        model="approver", previous_response_id=first.id, tools=[ASKING],  # type: ignore[list-item]
        input=[{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}])
    assert second.output_text == "called: search"
    sent = fake.requests[-1]["input"]
    assert [item.get("id") for item in sent[1:3]] == ["mcpl_fake", "mcpr_fake"]  # its own items, verbatim
    assert sent[3] == {"type": "mcp_approval_response", "approval_request_id": "mcpr_fake", "approve": True}
    call = second.output[0]
    assert call.type == "mcp_call" and call.approval_request_id == request.id and call.output == "found"


async def test_a_store_false_client_answers_a_hosted_mcp_approval(app: InProcess,
                                                                  fake: FakeResponsesUpstream) -> None:
    first = await _create(app, model="approver", input="look", tools=[ASKING], include=INCLUDE)
    history = [item.model_dump(exclude_none=True) for item in first.output]
    request_id = history[1]["id"]
    second = await _create(app, model="approver", tools=[ASKING], include=INCLUDE, input=[
        _user("look"), *history,
        {"type": "mcp_approval_response", "approval_request_id": request_id, "approve": True}])
    assert second.output_text == "called: search"
    assert fake.requests[-1]["input"][1:] == [
        {"type": "mcp_list_tools", "id": history[0]["id"], "server_label": "docs",
         "tools": [{"name": "search", "input_schema": {"type": "object"}}]},
        {"type": "mcp_approval_request", "id": request_id, "server_label": "docs", "name": "search",
         "arguments": "{\"q\": \"x\"}"},
        {"type": "mcp_approval_response", "approval_request_id": request_id, "approve": True},
    ]
    assert second.output[0].type == "mcp_call" and second.output[0].approval_request_id == request_id
