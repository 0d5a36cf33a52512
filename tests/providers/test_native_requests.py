"""Canonical calls -> the native request bodies (Responses, Anthropic Messages, Gemini): every body is checked
against the provider's own SDK request types, and the mapping of each feature is asserted."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import pytest
import wire_oracles as oracle

from parley.config import ProfileOverrides
from parley.errors import InvalidRequest
from parley.providers.anthropic_request import anthropic_body
from parley.providers.base import HostedTool, ModelCall
from parley.providers.gemini_request import gemini_body, gemini_path
from parley.providers.native_profiles import NATIVE_PROFILES, resolve_native_profile
from parley.providers.responses_request import responses_body

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"0" * 16).decode()
PDF = "data:application/pdf;base64," + base64.b64encode(b"%PDF-1.4 fake").decode()
WEATHER = {"name": "get_weather", "description": "Weather", "strict": None,
           "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}
ANTHROPIC = NATIVE_PROFILES[("anthropic", "anthropic")]
GEMINI = NATIVE_PROFILES[("gemini", "gemini")]
RESPONSES = NATIVE_PROFILES[("openai_responses", "openai")]


def _msg(role: str, *parts: dict[str, Any]) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": role, "content": list(parts)}


def _text(text: str, kind: str = "input_text") -> dict[str, Any]:
    return {"type": kind, "text": text} if kind == "input_text" else {"type": kind, "text": text, "annotations": []}


def _history(kind: str, model: str) -> list[dict[str, Any]]:
    """A conversation with every item kind: a developer note, media, reasoning with the upstream's state,
    parallel calls and their outputs, a custom tool call."""
    states = {
        "anthropic": {"kind": "anthropic", "model": model, "signature": "c2lnbmVk"},
        "gemini": {"kind": "gemini", "model": model, "signature": "c2lnbmVk", "on": "call", "call_id": "call_1"},
        "openai_responses": {"kind": "openai_responses", "model": model,
                             "item": {"id": "rs_up", "type": "reasoning", "summary": [], "encrypted_content": "gAAAA"}},
    }
    return [
        _msg("developer", _text("Be brief.")),
        _msg("user", _text("What is in these?"), {"type": "input_image", "image_url": PNG, "detail": "auto"},
             {"type": "input_image", "image_url": "https://example.com/cat.jpg", "detail": "low"},
             {"type": "input_file", "filename": "report.pdf", "file_data": PDF, "text": "the report"}),
        {"id": "rs_1", "type": "reasoning", "summary": [],
         "content": [{"type": "reasoning_text", "text": "Let me look."}], "upstream": states[kind]},
        {"id": "rs_2", "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "foreign"}],
         "upstream": {"kind": "elsewhere", "model": model, "signature": "x"}},
        {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"location": "Paris"}'},
        {"id": "fc_2", "type": "function_call", "call_id": "call_2", "name": "get_weather",
         "arguments": '{"location": "Rome"}'},
        {"id": "fo_1", "type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"id": "fo_2", "type": "function_call_output", "call_id": "call_2",
         "output": [{"type": "input_text", "text": "rainy"}]},
        {"id": "ct_1", "type": "custom_tool_call", "call_id": "call_3", "name": "run", "input": "print(1)"},
        {"id": "co_1", "type": "custom_tool_call_output", "call_id": "call_3", "output": "1"},
        _msg("assistant", _text("It is sunny in Paris.", "output_text")),
        _msg("user", _text("And tomorrow?")),
    ]


def _call(kind: str, **changes: Any) -> ModelCall:
    call = ModelCall("model-x", _history(kind, "model-x"), instructions="You are helpful.", tools=[WEATHER],
                     tool_choice="auto", max_output_tokens=2000, temperature=0.5, stream=True)
    return dataclasses.replace(call, **changes)


# -- Anthropic -------------------------------------------------------------------------------------------------


def test_anthropic_body_maps_every_item() -> None:
    body = anthropic_body(_call("anthropic"), ANTHROPIC)
    oracle.anthropic_request(body)
    assert [b["text"] for b in body["system"]] == ["You are helpful.", "Be brief."]
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user", "assistant", "user", "assistant", "user", "assistant", "user"]
    user = body["messages"][0]["content"]
    assert [b["type"] for b in user] == ["text", "image", "image", "document"]
    assert user[1]["source"]["type"] == "base64" and user[2]["source"] == {"type": "url",
                                                                            "url": "https://example.com/cat.jpg"}
    assert user[3]["source"]["media_type"] == "application/pdf" and user[3]["title"] == "report.pdf"
    turn = body["messages"][1]["content"]
    # our own thinking goes back signed, first; the other upstream's reasoning does not
    assert turn[0] == {"type": "thinking", "thinking": "Let me look.", "signature": "c2lnbmVk"}
    assert [b["type"] for b in turn] == ["thinking", "tool_use", "tool_use"]
    assert turn[1]["input"] == {"location": "Paris"}
    results = body["messages"][2]["content"]
    assert [(b["tool_use_id"], b["content"]) for b in results] == [
        ("call_1", "sunny"), ("call_2", [{"type": "text", "text": "rainy"}])]
    assert body["messages"][3]["content"][0]["input"] == {"input": "print(1)"}  # custom tools are functions
    assert body["tools"][0]["input_schema"] == WEATHER["parameters"] and body["tool_choice"] == {"type": "auto"}
    assert body["max_tokens"] == 2000 and "temperature" not in body and "thinking" not in body  # the API has none
    older = anthropic_body(_call("anthropic"), NATIVE_PROFILES[("anthropic", "generic")])
    assert older["temperature"] == 0.5


@pytest.mark.parametrize(("choice", "parallel", "expected"), [
    ("auto", None, {"type": "auto"}),
    ("required", None, {"type": "any"}),
    ("none", None, {"type": "none"}),
    ({"type": "function", "name": "get_weather"}, False,
     {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}),
    ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
])
def test_anthropic_tool_choice(choice: Any, parallel: bool | None, expected: dict[str, Any]) -> None:
    body = anthropic_body(_call("anthropic", tool_choice=choice, parallel_tool_calls=parallel), ANTHROPIC)
    oracle.anthropic_request(body)
    assert body["tool_choice"] == expected


def test_anthropic_thinking_from_effort() -> None:
    body = anthropic_body(_call("anthropic", reasoning_effort="medium", tool_choice="required", top_p=0.5), ANTHROPIC)
    oracle.anthropic_request(body)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1999}  # below max_output_tokens
    assert body["tool_choice"] == {"type": "auto"}  # a forced tool is refused with thinking: the engine checks
    assert "temperature" not in body and "top_p" not in body
    unset = anthropic_body(_call("anthropic", reasoning_effort="high", max_output_tokens=None), ANTHROPIC)
    assert unset["thinking"]["budget_tokens"] == 16384 and unset["max_tokens"] == 4096 + 16384
    tiny = anthropic_body(_call("anthropic", reasoning_effort="high", max_output_tokens=500), ANTHROPIC)
    assert "thinking" not in tiny and tiny["max_tokens"] == 500
    custom = resolve_native_profile("anthropic", "anthropic", ProfileOverrides(default_max_tokens=1000))
    assert anthropic_body(_call("anthropic", max_output_tokens=None), custom)["max_tokens"] == 1000


def test_anthropic_turn_resent_without_its_signature_does_not_think() -> None:
    items = [i for i in _history("anthropic", "model-x") if i["type"] != "reasoning"][:6]  # ends in tool results
    body = anthropic_body(_call("anthropic", items=items, reasoning_effort="low"), ANTHROPIC)
    assert "thinking" not in body  # the tool_use turn has no thinking block: thinking here would be a 400


def test_anthropic_redacted_thinking_goes_back_as_it_came() -> None:
    items = [_msg("user", _text("hi")),
             {"id": "rs", "type": "reasoning", "summary": [],
              "upstream": {"kind": "anthropic", "model": "model-x", "redacted": "EncryptedBlob"}},
             _msg("assistant", _text("hello", "output_text")), _msg("user", _text("again"))]
    body = anthropic_body(ModelCall("model-x", items), ANTHROPIC)
    oracle.anthropic_request(body)
    assert body["messages"][1]["content"] == [{"type": "redacted_thinking", "data": "EncryptedBlob"},
                                              {"type": "text", "text": "hello"}]
    other_model = anthropic_body(ModelCall("model-y", items), ANTHROPIC)
    assert other_model["messages"][1]["content"] == [{"type": "text", "text": "hello"}]


def test_anthropic_cache_breakpoints() -> None:
    plain = anthropic_body(_call("anthropic"), ANTHROPIC)
    assert "cache_control" not in str(plain)
    keyed = anthropic_body(_call("anthropic", prompt_cache_key="tenant-1"), ANTHROPIC)
    oracle.anthropic_request(keyed)
    assert keyed["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert keyed["system"][-1]["cache_control"] == {"type": "ephemeral"}
    assert keyed["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    long = _call("anthropic", instructions="x " * 3000)
    assert anthropic_body(long, ANTHROPIC)["system"][-1]["cache_control"] == {"type": "ephemeral"}


def test_anthropic_structured_output_is_a_tool() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    fmt = {"type": "json_schema", "name": "person", "schema": schema, "strict": True}
    alone = anthropic_body(_call("anthropic", tools=[], tool_choice=None, text_format=fmt), ANTHROPIC)
    oracle.anthropic_request(alone)
    assert alone["tools"] == [{"name": "json_response", "input_schema": schema, "description": alone["tools"][0]
                               ["description"]}]
    assert alone["tool_choice"] == {"type": "tool", "name": "json_response"}
    with_tools = anthropic_body(_call("anthropic", text_format=fmt), ANTHROPIC)
    assert with_tools["tool_choice"] == {"type": "any"} and len(with_tools["tools"]) == 2
    thinking = anthropic_body(_call("anthropic", text_format=fmt, reasoning_effort="low"), ANTHROPIC)
    assert thinking["tool_choice"] == {"type": "auto"} and "json_response" in thinking["system"][-1]["text"]
    array = anthropic_body(_call("anthropic", text_format={**fmt, "schema": {"type": "array"}}), ANTHROPIC)
    assert len(array["tools"]) == 1 and "JSON schema" in array["system"][-1]["text"]


def test_anthropic_without_files_or_images() -> None:
    text_only = resolve_native_profile("anthropic", "generic", ProfileOverrides(files=False))
    body = anthropic_body(_call("anthropic"), text_only)
    as_text = "[Contents of the file report.pdf]\nthe report"
    assert body["messages"][0]["content"][3] == {"type": "text", "text": as_text}
    blind = resolve_native_profile("anthropic", "generic", ProfileOverrides(vision=False))
    with pytest.raises(InvalidRequest) as info:
        anthropic_body(_call("anthropic"), blind)
    assert info.value.param == "input[1].content[1]"


# -- Gemini ------------------------------------------------------------------------------------------------------


def test_gemini_body_maps_every_item() -> None:
    call = _call("gemini")
    body = gemini_body(call, GEMINI)
    oracle.gemini_request(body)
    assert gemini_path(call) == "/models/model-x:streamGenerateContent?alt=sse"
    assert gemini_path(dataclasses.replace(call, stream=False)) == "/models/model-x:generateContent"
    assert body["systemInstruction"] == {"parts": [{"text": "You are helpful."}, {"text": "Be brief."}]}
    roles = [c["role"] for c in body["contents"]]
    assert roles == ["user", "model", "user", "model", "user", "model", "user"]
    user = body["contents"][0]["parts"]
    assert user[1] == {"inlineData": {"mimeType": "image/png", "data": PNG.split(",", 1)[1]}}
    assert user[2] == {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.jpg"}}
    assert user[3]["inlineData"]["mimeType"] == "application/pdf"
    calls = body["contents"][1]["parts"]
    # the signature goes back on the function call part it came on; the foreign reasoning is left out
    assert calls[0] == {"functionCall": {"id": "call_1", "name": "get_weather", "args": {"location": "Paris"}},
                        "thoughtSignature": "c2lnbmVk"}
    assert "thoughtSignature" not in calls[1]  # only the first call of a turn carries one
    responses = body["contents"][2]["parts"]
    assert responses[0] == {"functionResponse": {"id": "call_1", "name": "get_weather",
                                                 "response": {"result": "sunny"}}}
    assert responses[1]["functionResponse"]["response"] == {"result": "rainy"}
    assert body["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"] == WEATHER["parameters"]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    assert body["generationConfig"] == {"maxOutputTokens": 2000, "temperature": 0.5}


def test_gemini_text_signatures_and_lone_signatures() -> None:
    items = [_msg("user", _text("hi")), _msg("assistant", _text("hello", "output_text")),
             {"id": "rs", "type": "reasoning", "summary": [],
              "upstream": {"kind": "gemini", "model": "model-x", "signature": "dGV4dA==", "on": "text"}},
             {"id": "rs2", "type": "reasoning", "summary": [],
              "upstream": {"kind": "gemini", "model": "model-x", "signature": "bG9uZQ==", "on": "part"}},
             _msg("user", _text("again"))]
    body = gemini_body(ModelCall("model-x", items), GEMINI)
    oracle.gemini_request(body)
    assert body["contents"][1] == {"role": "model", "parts": [{"text": "hello", "thoughtSignature": "dGV4dA=="},
                                                              {"text": "", "thoughtSignature": "bG9uZQ=="}]}


def test_gemini_calls_without_a_signature_get_the_documented_skip_value() -> None:
    items = [_msg("user", _text("hi")),
             {"id": "fc", "type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
             {"id": "fo", "type": "function_call_output", "call_id": "c1", "output": "ok"}]
    body = gemini_body(ModelCall("model-x", items), GEMINI)
    oracle.gemini_request(body)
    assert body["contents"][1]["parts"][0]["thoughtSignature"] == "skip_thought_signature_validator"


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", {"mode": "AUTO"}), ("required", {"mode": "ANY"}), ("none", {"mode": "NONE"}),
    ({"type": "function", "name": "get_weather"}, {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
])
def test_gemini_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    body = gemini_body(_call("gemini", tool_choice=choice), GEMINI)
    oracle.gemini_request(body)
    assert body["toolConfig"] == {"functionCallingConfig": expected}


def test_gemini_structured_output_and_thinking() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    body = gemini_body(_call("gemini", reasoning_effort="low",
                             text_format={"type": "json_schema", "name": "p", "schema": schema}), GEMINI)
    oracle.gemini_request(body)
    config = body["generationConfig"]
    assert config["responseMimeType"] == "application/json" and config["responseJsonSchema"] == schema
    assert config["thinkingConfig"] == {"thinkingBudget": 1024, "includeThoughts": True}
    off = gemini_body(_call("gemini", reasoning_effort="none"), GEMINI)["generationConfig"]["thinkingConfig"]
    assert off == {"thinkingBudget": 0, "includeThoughts": False}


# -- Responses ---------------------------------------------------------------------------------------------------


def test_responses_body_keeps_state_in_parley() -> None:
    call = _call("openai_responses", reasoning_effort="low", reasoning_summary="auto", logprobs=True, top_logprobs=2,
                 prompt_cache_key="k", safety_identifier="u1", text_format={"type": "json_object"})
    body = responses_body(call, RESPONSES)
    oracle.responses_request(body)
    assert body["store"] is False and "previous_response_id" not in body and "background" not in body
    assert body["include"] == ["reasoning.encrypted_content", "message.output_text.logprobs"]
    assert body["instructions"] == "You are helpful." and body["reasoning"] == {"effort": "low", "summary": "auto"}
    assert body["text"] == {"format": {"type": "json_object"}} and body["top_logprobs"] == 2
    items = body["input"]
    assert all("id" not in item for item in items if item["type"] != "reasoning")  # Parley's ids stay here
    reasoning = [item for item in items if item["type"] == "reasoning"]
    assert reasoning == [{"id": "rs_up", "type": "reasoning", "summary": [], "encrypted_content": "gAAAA"}]
    custom = next(item for item in items if item.get("call_id") == "call_3")
    assert custom == {"type": "function_call", "call_id": "call_3", "name": "run",
                      "arguments": '{"input":"print(1)"}'}
    assert items[1]["content"][3] == {"type": "input_file", "filename": "report.pdf", "file_data": PDF}
    assert items[-2] == {"type": "message", "role": "assistant", "content": "It is sunny in Paris."}
    assert body["tools"] == [{"type": "function", "name": "get_weather", "description": "Weather",
                              "parameters": WEATHER["parameters"], "strict": None}]


def test_responses_hosted_tools_and_azure() -> None:
    hosted = HostedTool("web_search", {"type": "web_search", "search_context_size": "low"})
    call = _call("openai_responses", hosted_tools=[hosted], tool_choice={"type": "function", "name": "web_search"})
    body = responses_body(call, RESPONSES)
    oracle.responses_request(body)
    assert body["tools"][-1] == {"type": "web_search", "search_context_size": "low"}
    assert body["tool_choice"] == {"type": "allowed_tools", "mode": "required", "tools": [{"type": "web_search"}]}
    assert "web_search_call.action.sources" in body["include"]
    own = {**WEATHER}
    own.pop("strict")  # Parley's own tool functions (built-in tools run here) are never strict upstream
    assert responses_body(_call("openai_responses", tools=[own]), RESPONSES)["tools"][0]["strict"] is False
    azure = resolve_native_profile("openai_responses", "azure", ProfileOverrides())
    assert (azure.auth_header, azure.api_version) == ("api-key", "preview")
    dated = resolve_native_profile("openai_responses", "azure", ProfileOverrides(api_version="2025-04-01-preview"))
    assert dated.api_version == "2025-04-01-preview"


def test_config_tables_are_in_step_with_the_profiles() -> None:
    from parley.config import KIND_PROFILES, NATIVE_QUIRKS, ProfileOverrides
    from parley.providers.profiles import PROFILES

    assert KIND_PROFILES["chat_completions"] == set(PROFILES)
    for kind in ("openai_responses", "anthropic", "gemini"):
        assert KIND_PROFILES[kind] == {name for k, name in NATIVE_PROFILES if k == kind}
        fields = {f.name for f in dataclasses.fields(NATIVE_PROFILES[(kind, "generic")])}
        assert NATIVE_QUIRKS[kind] <= fields & set(ProfileOverrides.model_fields)
