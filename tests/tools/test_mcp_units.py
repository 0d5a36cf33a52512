"""The pure parts of the `mcp` tool: function names, allowed_tools / require_approval, the replay rules, the
structured errors and how failures of the SDK client are classified."""

from __future__ import annotations

import re
from typing import Any

import httpx2
import pytest
from mcp.shared.exceptions import MCPError

from parley.config import McpServerConfig, Settings, redacted
from parley.schema.builtin_tools import McpParams
from parley.tools.mcp.client import classify, transport_for
from parley.tools.mcp.items import call_text, content_text, error_text
from parley.tools.mcp.names import function_name, unique_name
from parley.tools.mcp.policy import ListedTool, McpPolicy
from parley.tools.mcp.replay import replay
from parley.tools.mcp.tool import parse_arguments
from parley.tools.replay import replay_items

NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def test_function_names_are_valid_stable_and_distinct() -> None:
    assert function_name("deepwiki", "ask_question") == "deepwiki__ask_question"
    odd = [("my server", "do.it"), ("x" * 60, "y" * 60), ("srv", "tool/with:colons"), ("é", "ü")]
    names = {function_name(label, tool) for label, tool in odd}
    assert len(names) == len(odd) and all(NAME.match(name) for name in names)
    assert function_name("my server", "do.it") == function_name("my server", "do.it")
    assert function_name("my server", "do.it") != function_name("my_server", "do_it")
    # Two pairs that join alike: the second gets a hashed name.
    first = unique_name("a__b", "c", set())
    second = unique_name("a", "b__c", {first})
    assert first == "a__b__c" and second != first and NAME.match(second)


def _tool(name: str, read_only: bool | None = None) -> ListedTool:
    return ListedTool(name, {"type": "object"}, annotations=None if read_only is None else {"readOnlyHint": read_only})


def _policy(**fields: Any) -> McpPolicy:
    params = McpParams.model_validate({"type": "mcp", "server_label": "s", **fields})
    return McpPolicy.of(params.allowed_tools, params.require_approval)


def test_allowed_tools_by_list_and_by_filter() -> None:
    read, write, plain = _tool("read", True), _tool("write", False), _tool("plain")
    assert all(_policy().allows(t) for t in (read, write, plain))
    assert [t.name for t in (read, write, plain) if _policy(allowed_tools=["write"]).allows(t)] == ["write"]
    only_read = _policy(allowed_tools={"read_only": True})
    assert [t.name for t in (read, write, plain) if only_read.allows(t)] == ["read"]
    both = _policy(allowed_tools={"tool_names": ["read", "write"], "read_only": False})
    assert [t.name for t in (read, write, plain) if both.allows(t)] == ["write"]


def test_require_approval() -> None:
    read, write = _tool("read", True), _tool("write", False)
    assert _policy().needs_approval(read)  # "always" is the default, as in OpenAI
    assert not _policy(require_approval="never").needs_approval(write)
    never_read = _policy(require_approval={"never": {"read_only": True}})
    assert not never_read.needs_approval(read) and never_read.needs_approval(write)
    always_write = _policy(require_approval={"always": {"tool_names": ["write"]}})
    assert always_write.needs_approval(write) and not always_write.needs_approval(read)
    mixed = _policy(require_approval={"always": {"tool_names": ["x"]}, "never": {"tool_names": ["write"]}})
    assert not mixed.needs_approval(write) and not mixed.needs_approval(read)


def _request(request_id: str, name: str = "add") -> dict[str, Any]:
    return {"type": "mcp_approval_request", "id": request_id, "server_label": "srv", "name": name,
            "arguments": '{"a": 1}'}


def _types(items: list[dict[str, Any]]) -> list[str]:
    return [item["type"] for item in items]


def test_replay_shows_each_call_once_with_its_result_or_denial() -> None:
    user = {"type": "message", "id": "m1", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    listing = {"type": "mcp_list_tools", "id": "l1", "server_label": "srv", "tools": []}
    call = {"type": "mcp_call", "id": "c1", "server_label": "srv", "name": "add", "arguments": '{"a": 1}',
            "output": "2", "status": "completed"}
    approved = [_request("r1"), {"type": "mcp_approval_response", "id": "a1", "approval_request_id": "r1",
                                 "approve": True},
                {**call, "id": "c2", "approval_request_id": "r1"}]
    denied = [_request("r2", "write"), {"type": "mcp_approval_response", "id": "a2", "approval_request_id": "r2",
                                        "approve": False, "reason": "not now"}]
    pending = [_request("r3", "echo")]
    out = replay([user, listing, call, *approved, *denied, *pending])
    assert _types(out) == ["message"] + ["function_call", "function_call_output"] * 4
    calls = [item for item in out if item["type"] == "function_call"]
    assert [c["name"] for c in calls] == ["srv__add", "srv__add", "srv__write", "srv__echo"]
    outputs = [item["output"] for item in out if item["type"] == "function_call_output"]
    assert outputs[:2] == ["2", "2"]
    assert "denied" in outputs[2] and "not now" in outputs[2]
    assert "not made" in outputs[3]
    # Approved but not run yet (the response that runs it is being built): nothing, the engine adds the call.
    assert replay([user, *approved[:2]]) == [user]
    # The shared replay goes through it too; lists alone leave nothing behind.
    assert replay_items([user, listing]) == [user]


def test_error_texts_and_outputs() -> None:
    assert content_text([{"type": "text", "text": "a"}, {"type": "image", "data": "x", "mimeType": "image/png"}]) \
        .startswith("a\n{")
    assert content_text([], {"result": 5}) == '{"result":5}'
    assert content_text([{"type": "text", "text": "x" * 50}], limit=10) == "x" * 10 + " [...]"
    assert "HTTP 401" in error_text({"type": "http_error", "code": 401, "message": "no"})
    assert "-32602" in error_text({"type": "mcp_protocol_error", "code": -32602, "message": "bad"})
    assert "boom" in error_text({"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": "boom"}]})
    failed = {"type": "mcp_call", "name": "add", "status": "failed",
              "error": {"type": "http_error", "code": 500, "message": "x"}}
    assert call_text(failed).startswith("The call of add failed")
    assert call_text({"type": "mcp_call", "name": "add", "status": "completed", "output": "3"}) == "3"


def test_arguments_and_transports() -> None:
    assert parse_arguments("") == {} and parse_arguments('{"a": 1}') == {"a": 1}
    assert parse_arguments("[1]") is None and parse_arguments("{nope") is None
    assert transport_for("https://x.example/sse") == "sse" and transport_for("https://x.example/sse/") == "sse"
    assert transport_for("https://x.example/mcp") == "streamable_http"


def test_failures_are_classified_into_the_sdk_error_shapes() -> None:
    request = httpx2.Request("POST", "http://x/mcp")
    status = httpx2.HTTPStatusError("no", request=request, response=httpx2.Response(403, request=request))
    assert classify(ExceptionGroup("g", [status]), [])["type"] == "http_error"
    generic = MCPError(-32603, "Server returned an error response")
    assert classify(generic, [401]) == {"type": "http_error", "code": 401,
                                        "message": "the MCP server answered HTTP 401"}
    assert classify(MCPError(-32602, "bad"), [400]) == {"type": "mcp_protocol_error", "code": -32602,
                                                         "message": "bad"}
    assert classify(httpx2.ConnectError("refused"), [])["code"] == -32000
    assert classify(TimeoutError(), [])["code"] == -32001
    assert classify(RuntimeError("x"), [])["code"] == -32603


@pytest.mark.parametrize("fields", [
    {"server_url": "ftp://x"}, {"headers": {"bad name": "x"}}, {"headers": {"Host": "x"}},
    {"headers": {"X-A": "a\r\nb"}}, {"require_approval": "sometimes"}, {"allowed_tools": {"read_only": "yes"}},
])
def test_invalid_params_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        McpParams.model_validate({"type": "mcp", "server_label": "s", **fields})


def test_declared_servers_are_validated_and_their_secrets_redacted() -> None:
    server = McpServerConfig(label="vault", url="https://vault.internal/mcp", headers={"Authorization": "Bearer s1"},
                             headers_env={"X-Key": "PARLEY_TEST_UNSET_VARIABLE"})
    shown = redacted(Settings(mcp_servers=[server, McpServerConfig(label="local", command=["srv"], env={"K": "s2"})]))
    assert "s1" not in str(shown) and "s2" not in str(shown)
    assert server.resolved_headers() == {"Authorization": "Bearer s1"}  # an unset variable adds nothing
    with pytest.raises(ValueError):
        McpServerConfig(label="both", url="http://x/mcp", command=["srv"])
    with pytest.raises(ValueError):
        Settings(mcp_servers=[McpServerConfig(label="a", command=["x"]), McpServerConfig(label="a", command=["y"])])
