"""An id with a NUL character (U+0000) in a request body is a 400 naming the parameter, on SQLite and PostgreSQL.

No id holds a NUL, and PostgreSQL refuses one in a query parameter (SQLSTATE 22021): before the schema refused
it, such an id was a 400 without `param` there (or a 500 before that), and a 404, or even stored, on SQLite."""

from __future__ import annotations

from typing import Any

import httpx

from parley.testing.in_process import InProcess

NUL = "a\u0000b"
ADMIN = {"authorization": "Bearer sk-admin"}


def _msg(**part: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [part]}]


# (path, body, the param the 400 names); {conv}, {vs}, {cntr}: objects created first. A response body is
# completed with `"model": "echo", "input": "hi"` where it has no input of its own.
CASES: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/responses", {"previous_response_id": "resp_" + NUL}, "previous_response_id"),
    ("/v1/responses", {"conversation": "conv_" + NUL}, "conversation"),
    ("/v1/responses", {"conversation": {"id": "conv_" + NUL}}, "conversation.id"),
    ("/v1/responses", {"prompt": {"id": "pmpt_" + NUL}}, "prompt.id"),
    ("/v1/responses", {"prompt_cache_options": {"comparison_response_id": "resp_" + NUL}},
     "prompt_cache_options.comparison_response_id"),
    ("/v1/responses", {"input": [{"type": "message", "role": "user", "content": "hi", "id": "msg_" + NUL}]},
     "input[0].id"),
    ("/v1/responses", {"input": [{"type": "item_reference", "id": "msg_" + NUL}]}, "input[0].id"),
    ("/v1/responses", {"input": [{"type": "function_call", "id": "fc_" + NUL, "call_id": "call_1", "name": "f",
                                  "arguments": "{}"}]}, "input[0].id"),
    ("/v1/responses", {"input": [{"type": "function_call", "call_id": "call_" + NUL, "name": "f",
                                  "arguments": "{}"}]}, "input[0].call_id"),
    ("/v1/responses", {"input": [{"type": "function_call_output", "call_id": "call_" + NUL, "output": "x"}]},
     "input[0].call_id"),
    ("/v1/responses", {"input": [{"type": "custom_tool_call_output", "call_id": "call_" + NUL, "output": "x"}]},
     "input[0].call_id"),
    ("/v1/responses", {"input": [{"type": "reasoning", "id": "rs_" + NUL, "summary": []}]}, "input[0].id"),
    ("/v1/responses", {"input": [{"type": "mcp_approval_response", "approval_request_id": "mcpr_" + NUL,
                                  "approve": True}]}, "input[0].approval_request_id"),
    ("/v1/responses", {"input": [{"type": "shell_call_output", "call_id": "call_" + NUL, "output": []}]},
     "input[0].call_id"),
    ("/v1/responses", {"input": [{"type": "compaction", "id": "cmp_" + NUL, "encrypted_content": "x"}]},
     "input[0].id"),
    ("/v1/responses", {"input": _msg(type="input_file", file_id="file-" + NUL)}, "input[0].content[0].file_id"),
    ("/v1/responses", {"input": _msg(type="input_image", file_id="file-" + NUL)}, "input[0].content[0].file_id"),
    ("/v1/responses", {"tools": [{"type": "file_search", "vector_store_ids": ["vs_1", "vs_" + NUL]}]},
     "tools[0].vector_store_ids[1]"),
    ("/v1/responses", {"tools": [{"type": "code_interpreter", "container": "cntr_" + NUL}]}, "tools[0].container"),
    ("/v1/responses", {"tools": [{"type": "code_interpreter", "container": {"type": "auto",
                                                                            "file_ids": ["file-" + NUL]}}]},
     "tools[0].container.file_ids[0]"),
    ("/v1/responses", {"tools": [{"type": "shell", "environment": {"type": "container_reference",
                                                                   "container_id": "cntr_" + NUL}}]},
     "tools[0].environment.container_id"),
    ("/v1/responses", {"tools": [{"type": "image_generation", "input_image_mask": {"file_id": "file-" + NUL}}]},
     "tools[0].input_image_mask.file_id"),
    ("/v1/responses/input_tokens", {"previous_response_id": "resp_" + NUL}, "previous_response_id"),
    ("/v1/responses/input_tokens", {"input": _msg(type="input_file", file_id="file-" + NUL)},
     "input[0].content[0].file_id"),
    ("/v1/responses/compact", {"previous_response_id": "resp_" + NUL}, "previous_response_id"),
    ("/v1/responses/compact", {"input": [{"type": "item_reference", "id": "msg_" + NUL}]}, "input[0].id"),
    ("/v1/conversations", {"items": [{"type": "message", "role": "user", "content": "hi", "id": "msg_" + NUL}]},
     "items[0].id"),
    ("/v1/conversations/{conv}/items", {"items": [{"type": "item_reference", "id": "msg_" + NUL}]}, "items[0].id"),
    ("/v1/vector_stores", {"file_ids": ["file-" + NUL]}, "file_ids[0]"),
    ("/v1/vector_stores/{vs}/files", {"file_id": "file-" + NUL}, "file_id"),
    ("/v1/vector_stores/{vs}/file_batches", {"file_ids": ["file-" + NUL]}, "file_ids[0]"),
    ("/v1/vector_stores/{vs}/file_batches", {"files": [{"file_id": "file-" + NUL}]}, "files[0].file_id"),
    ("/v1/containers", {"name": "c", "file_ids": ["file-" + NUL]}, "file_ids[0]"),
    ("/v1/containers/{cntr}/files", {"file_id": "file-" + NUL}, "file_id"),
    ("/v1/organization/keys", {"name": "k", "project_id": "proj_" + NUL}, "project_id"),
]


async def _check(http: httpx.AsyncClient, ids: dict[str, str], path: str, body: dict[str, Any]) -> dict[str, Any]:
    if path.startswith("/v1/responses"):
        body = {"model": "echo", "input": "hi", **body}
    resp = await http.post(path.format(**ids), json=body, headers=ADMIN)
    assert resp.status_code == 400, (path, body, resp.text)
    error: dict[str, Any] = resp.json()["error"]
    return error


async def test_a_nul_character_in_a_body_id_is_a_400_naming_it_on_either_database(echo_app: InProcess) -> None:
    http = echo_app.http
    ids = {"conv": (await http.post("/v1/conversations", json={})).json()["id"],
           "vs": (await http.post("/v1/vector_stores", json={"name": "v"})).json()["id"],
           "cntr": (await http.post("/v1/containers", json={"name": "c"})).json()["id"]}
    wrong: list[tuple[str, str, Any]] = []
    for path, body, param in CASES:
        error = await _check(http, ids, path, body)
        expected = {"type": "invalid_request_error", "code": "invalid_value", "param": param}
        if {k: error[k] for k in expected} != expected or "NUL" not in error["message"]:
            wrong.append((path, param, error))
    assert wrong == []

    # The Anthropic door (its error shape has no `param`: the message names the field).
    anthropic = {"x-api-key": "sk-local", "anthropic-version": "2023-06-01"}
    for messages, field in [
        ([{"role": "user", "content": [{"type": "document", "source": {"type": "file",
                                                                       "file_id": "file-" + NUL}}]}],
         "messages[0].content[0].source.file_id"),
        ([{"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_" + NUL, "name": "f",
                                             "input": {}}]}, {"role": "user", "content": "x"}],
         "messages[0].content[0].id"),
        ([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_" + NUL,
                                        "content": "x"}]}],
         "messages[0].content[0].tool_use_id"),
    ]:
        resp = await http.post("/v1/messages", headers=anthropic, json={
            "model": "echo", "max_tokens": 16, "messages": messages})
        assert resp.status_code == 400, resp.text
        assert field in resp.json()["error"]["message"] and "NUL" in resp.json()["error"]["message"]

    # Text is not an id: a NUL in a message's text is the client's to send (stored escaped in JSON).
    ok = await http.post("/v1/responses", json={"model": "echo", "input": "x\u0000y"})
    assert ok.status_code == 200 and ok.json()["output"][0]["content"][0]["text"] == "echo: x\u0000y"
