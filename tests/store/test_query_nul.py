"""A NUL character (U+0000) in a query parameter or a path id, on SQLite and PostgreSQL alike.

PostgreSQL refuses a NUL in a text parameter (SQLSTATE 22021): a cursor (`after=`), a filter (`purpose=`,
`metadata[k]=`) holding one was a 400 without `param` there (the engine's net for that refusal cannot name it),
while SQLite answered something else (a 400 naming the parameter for an unknown cursor, an empty list for a
filter). A query parameter holding a NUL is now a 400 `invalid_value` naming it, before any endpoint reads it; a
path id holding one is a 404 naming its path parameter, like any id no object has."""

from __future__ import annotations

from typing import Any

import httpx

from parley.testing.in_process import InProcess

ADMIN = {"authorization": "Bearer sk-admin"}
NUL = "a\u0000b"

# (path, query, the param the 400 names); {resp}, {conv}, {vs}, {cntr}: objects created first.
QUERIES: list[tuple[str, dict[str, str], str]] = [
    ("/v1/responses/list", {"after": "resp_" + NUL}, "after"),
    ("/v1/responses/list", {"before": "resp_" + NUL}, "before"),
    ("/v1/responses/list", {"order": NUL}, "order"),
    ("/v1/responses/list", {"limit": NUL}, "limit"),
    ("/v1/responses/list", {"model": NUL}, "model"),
    ("/v1/responses/list", {"status": NUL}, "status"),
    ("/v1/responses/list", {"metadata[topic]": NUL}, "metadata[topic]"),
    ("/v1/responses/list", {"metadata[" + NUL + "]": "x"}, "metadata[" + NUL + "]"),
    ("/v1/responses/list", {"created_after": NUL}, "created_after"),
    ("/v1/responses/{resp}", {"include[]": NUL}, "include"),
    ("/v1/responses/{resp}", {"include": NUL}, "include"),
    ("/v1/responses/{resp}", {"stream": "true", "starting_after": NUL}, "starting_after"),
    ("/v1/responses/{resp}/input_items", {"after": "msg_" + NUL}, "after"),
    ("/v1/responses/{resp}/input_items", {"before": "msg_" + NUL}, "before"),
    ("/v1/responses/{resp}/input_items", {"include[]": NUL}, "include"),
    ("/v1/conversations/{conv}/items", {"after": "msg_" + NUL}, "after"),
    ("/v1/conversations/{conv}/items", {"before": "msg_" + NUL}, "before"),
    ("/v1/conversations/{conv}/items", {"order": "asc" + NUL}, "order"),
    ("/v1/conversations/{conv}/items", {"include[]": NUL}, "include"),
    ("/v1/files", {"after": "file-" + NUL}, "after"),
    ("/v1/files", {"purpose": NUL}, "purpose"),
    ("/v1/vector_stores", {"after": "vs_" + NUL}, "after"),
    ("/v1/vector_stores", {"before": "vs_" + NUL}, "before"),
    ("/v1/vector_stores/{vs}/files", {"after": "file-" + NUL}, "after"),
    ("/v1/vector_stores/{vs}/files", {"filter": NUL}, "filter"),
    ("/v1/containers", {"after": "cntr_" + NUL}, "after"),
    ("/v1/containers", {"name": NUL}, "name"),
    ("/v1/containers/{cntr}/files", {"after": "cfile_" + NUL}, "after"),
    ("/v1/prompts", {"after": "pmpt_" + NUL}, "after"),
    ("/v1/organization/keys", {"after": "key_" + NUL}, "after"),
    ("/v1/organization/keys", {"project_id": "proj_" + NUL}, "project_id"),
    ("/v1/organization/usage/completions", {"start_time": "0", "models": NUL}, "models"),
    ("/v1/organization/usage/completions", {"start_time": "0", "project_ids": NUL}, "project_ids"),
    ("/v1/organization/usage/completions", {"start_time": "0", "api_key_ids": NUL}, "api_key_ids"),
    ("/v1/organization/usage/completions", {"start_time": "0", "group_by": NUL}, "group_by"),
    ("/v1/organization/usage/completions", {"start_time": "0", "page": NUL}, "page"),
    ("/v1/organization/costs", {"start_time": "0", "page": NUL}, "page"),
    ("/v1/models", {"after_id": NUL}, "after_id"),
]

# (path, the param the 404 names).
PATHS: list[tuple[str, str]] = [
    ("/v1/responses/resp_a%00b", "response_id"),
    ("/v1/responses/resp_a%00b/input_items", "response_id"),
    ("/v1/conversations/{conv}/items/msg_%00", "item_id"),
    ("/v1/vector_stores/{vs}/files/file-%00", "file_id"),
    ("/v1/containers/{cntr}/files/cfile_%00", "file_id"),
    ("/v1/prompts/pmpt_%00/versions/1", "prompt_id"),
    ("/v1/organization/keys/key_%00", "key_id"),
    ("/v1/models/m%00", "model"),
]


async def test_a_nul_character_in_a_query_parameter_is_a_400_naming_it_on_either_database(
        echo_app: InProcess) -> None:
    http: httpx.AsyncClient = echo_app.http
    ids = {"resp": (await http.post("/v1/responses", json={"model": "echo", "input": "hi"})).json()["id"],
           "conv": (await http.post("/v1/conversations", json={})).json()["id"],
           "vs": (await http.post("/v1/vector_stores", json={"name": "v"})).json()["id"],
           "cntr": (await http.post("/v1/containers", json={"name": "c"})).json()["id"]}
    wrong: list[tuple[str, Any, int, Any]] = []
    for path, query, param in QUERIES:
        resp = await http.get(path.format(**ids), params=query, headers=ADMIN)
        error = resp.json().get("error") or {}
        expected = {"type": "invalid_request_error", "code": "invalid_value", "param": param}
        if (resp.status_code != 400 or {k: error.get(k) for k in expected} != expected
                or "NUL" not in error.get("message", "")):
            wrong.append((path, query, resp.status_code, error))
    for path, param in PATHS:
        resp = await http.get(path.format(**ids), headers=ADMIN)
        error = resp.json().get("error") or {}
        if resp.status_code != 404 or (error.get("code"), error.get("param")) != ("not_found", param):
            wrong.append((path, None, resp.status_code, error))
    assert wrong == []

    # The Anthropic door answers in its own error shape (no `param`: the message names it).
    resp = await http.get("/v1/models", params={"after_id": NUL},
                          headers={"x-api-key": "sk-local", "anthropic-version": "2023-06-01"})
    body = resp.json()
    assert resp.status_code == 400 and body["type"] == "error", resp.text
    assert body["error"]["type"] == "invalid_request_error"
    assert "'after_id'" in body["error"]["message"] and "NUL" in body["error"]["message"]

    # Without the NUL the same parameters work (`%00` is what was refused, not the parameter).
    listed = await http.get("/v1/responses/list", params={"model": "echo", "metadata[topic]": "x"})
    assert listed.status_code == 200 and listed.json()["data"] == []
    named = await http.get("/v1/containers", params={"name": "c"})
    assert [c["id"] for c in named.json()["data"]] == [ids["cntr"]]
    items = await http.get(f"/v1/responses/{ids['resp']}/input_items", params={"include[]": "a%00b"})
    assert items.status_code == 400 and "%00" in items.json()["error"]["message"]  # an unknown value
