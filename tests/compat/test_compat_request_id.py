"""`x-request-id` on every answer of a real `parley serve` — JSON, SSE, errors, the router's own 404 and 405,
/health — and in the server's log lines written for that request."""

from __future__ import annotations

import re

import httpx
from compat_support import ParleyServer, wait_for


def test_every_answer_has_a_request_id(server: ParleyServer) -> None:
    with httpx.Client(base_url=server.root, timeout=30) as http:
        answers = [
            http.post("/v1/responses", json={"model": "echo", "input": "hi"}),
            http.post("/v1/responses", json={"model": "echo", "input": "hi", "stream": True}),
            http.post("/v1/responses", json={"model": "nope", "input": "hi"}),  # 400
            http.post("/v1/responses", content=b"{not json"),  # 400 before validation
            http.get("/v1/responses/resp_missing"),  # 404 of an endpoint
            http.get("/v1/no/such/route"),  # the router's 404
            http.put("/v1/responses"),  # the router's 405
            http.get("/health"),
        ]
    assert [a.status_code for a in answers] == [200, 200, 400, 400, 404, 404, 405, 200]
    ids = [a.headers.get("x-request-id") for a in answers]
    assert all(re.fullmatch(r"req_[0-9a-f]{32}", str(rid)) for rid in ids), ids
    assert len(set(ids)) == len(ids)


def test_log_lines_name_their_request(server: ParleyServer) -> None:
    failed = httpx.post(server.base_url + "/responses", json={"model": "error-500", "input": "hi"}, timeout=30)
    rid = failed.headers["x-request-id"]
    assert failed.status_code == 502
    assert wait_for(lambda: f"[{rid}]" in server.log())
    line = next(line for line in server.log().splitlines() if f"[{rid}]" in line)
    assert "WARNING parley." in line and "500" in line
