"""Slow and vanishing clients against a real `parley serve` (issue 16 §1 and §4): request headers and bodies
have deadlines, and a client that disconnects mid-body is not an error with a traceback in the log."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from compat_support import ParleyServer, metric, model_toml, wait_for

from parley.testing.fake_upstream import FakeUpstream


@pytest.fixture(scope="module")
def slow_server(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ParleyServer]:
    config = "body_timeout_s = 1.0\nheader_timeout_s = 1.0\n" + model_toml("echo", fake.base_url, "echo")
    config += "[embedded]\nenabled = false\n"
    server = ParleyServer(tmp_path_factory.mktemp("parley-slow"), config)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _connect(server: ParleyServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_body_trickled_slowly_gets_a_408(slow_server: ParleyServer) -> None:
    # Valid JSON padded to 400 bytes, one byte every 0.3 s: two minutes for the whole body, so a 408 while it is
    # still incomplete can only come from the 1 s body deadline (a server without one answers 200 at the end).
    body = b'{"model": "echo", "input": "hello there"}'.ljust(400)
    sent = 0
    with _connect(slow_server) as sock:
        sock.sendall(b"POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: " + str(len(body)).encode() + b"\r\n\r\n")
        answer = b""
        for byte in body:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sent += 1
            sock.settimeout(0.3)
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            if answer:
                break
        sock.settimeout(30)
        answer += _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"code":"request_timeout"' in answer
    assert sent < len(body)  # answered before the body was complete


def test_headers_trickled_slowly_are_cut(slow_server: ParleyServer) -> None:
    # A header line every 0.25 s and never the blank line that ends them: only the 1 s header deadline can answer
    # (the loop's bound, a minute, fails a server that never does; it times nothing).
    with _connect(slow_server) as sock:
        sock.sendall(b"POST /v1/responses HTTP/1.1\r\nhost: x\r\n")
        for _ in range(240):
            try:
                sock.sendall(b"x-slow: 1\r\n")
            except OSError:
                break
            time.sleep(0.25)  # the trickle itself (the thing under test), not a wait for the server
            if _readable(sock):
                break
        sock.settimeout(30)
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


def test_a_client_still_sending_after_the_408_reads_it_whole(slow_server: ParleyServer) -> None:
    # Closing a socket with unread input makes the kernel reset the connection, which destroyed the 408 the client
    # had not read yet: the server now ends its side and drops what still comes until the client closes.
    with _connect(slow_server) as sock:
        sock.sendall(b"POST /v1/responses HTTP/1.1\r\nhost: x\r\n")
        for _ in range(1200):  # until the 408 is there (the header deadline is 1 s; a minute at most here)
            if _readable(sock):
                break
            time.sleep(0.05)
        for _ in range(3):  # more header lines after the answer: read and dropped by the server
            sock.sendall(b"x-late: 1\r\n")
            time.sleep(0.1)
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408") and answer.endswith(b'"code": "request_timeout"}}'), answer[:200]


def test_an_idle_connection_is_cut(slow_server: ParleyServer) -> None:
    with _connect(slow_server) as sock:
        answer = _read_all(sock)  # sends nothing at all
    assert answer.startswith(b"HTTP/1.1 408")


def _readable(sock: socket.socket) -> bool:
    import select

    return bool(select.select([sock], [], [], 0)[0])


def test_a_client_leaving_mid_body_is_not_an_error(slow_server: ParleyServer) -> None:
    def gone() -> float:  # requests whose client went away before the answer (499), as the server counts them
        return metric(slow_server, "parley_http_requests_total", method="POST", route="/v1/responses", status="499")

    for _ in range(3):
        before = gone()
        with _connect(slow_server) as sock:
            sock.sendall(b"POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                         b"content-length: 1000\r\n\r\n{\"model\": \"echo\", ")
        # The server has taken the request and seen its client leave mid-body (instead of sleeping on it).
        assert wait_for(lambda before=before: gone() > before, timeout=60)
    # The server still answers, and logged no error (nor a traceback) for the clients that left.
    response = httpx.post(slow_server.base_url + "/responses", json={"model": "echo", "input": "hi"}, timeout=10)
    assert response.status_code == 200
    log = slow_server.log()
    assert "ERROR" not in log and "Traceback" not in log, log


@pytest.mark.parametrize("request_bytes", [
    b"POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n{}",
    b"POST /v1/responses HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\ncontent-length: 5\r\n\r\n{}",
    b"POST /v1/responses HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"GET /v1/files/" + b"x" * 100_000 + b" HTTP/1.1\r\nhost: x\r\n\r\n",  # past the parser's URL limit
    b"GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \x00\r\n\r\n",
    b"NOT-HTTP\r\n\r\n",
])
def test_a_request_the_http_parser_refuses_gets_a_400_in_the_openai_shape(slow_server: ParleyServer,
                                                                          request_bytes: bytes) -> None:
    """uvicorn answered these with a text/plain 'Invalid HTTP request received.': an SDK reading the body as an
    OpenAI error found nothing to show."""
    with _connect(slow_server) as sock:
        sock.sendall(request_bytes)
        answer = _read_all(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"content-type: application/json" in head.lower() and b"connection: close" in head.lower()
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_http_request")
