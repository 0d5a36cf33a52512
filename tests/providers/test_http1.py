"""The lean upstream HTTP/1.1 client against raw asyncio servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from parley.providers.http1 import (
    MAX_HEAD_BYTES,
    ConnectFailed,
    Disconnected,
    Endpoint,
    Http1Pool,
    InvalidResponse,
    ReadTimeout,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return await reader.readexactly(length)


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1/x"


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Server]]]:
    servers: list[Server] = []

    async def start(handler: Handler) -> Server:
        server = Server(handler)
        server.server = await asyncio.start_server(server._serve, "127.0.0.1", 0)
        servers.append(server)
        return server

    yield start
    for server in servers:
        assert server.server is not None
        server.server.close()


async def _post(pool: Http1Pool, url: str, read_timeout: float = 2.0) -> tuple[int, bytes]:
    resp = await pool.request(Endpoint.parse(url), "POST", {"content-type": "application/json"}, b"{}",
                              connect_timeout=1, read_timeout=read_timeout)
    body = await resp.read()
    resp.release()
    return resp.status, body


async def test_keep_alive_reuse_and_stale_connection_retry(serve) -> None:  # type: ignore[no-untyped-def]
    async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):  # two requests per connection, then the server closes it while idle
            body = await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()

    server = await serve(keep_alive)
    pool = Http1Pool()
    results = [await _post(pool, server.url) for _ in range(5)]
    assert results == [(200, b"{}")] * 5
    # 2 + 2 + 1 requests: each closed idle connection is noticed and replaced transparently.
    assert server.connections == 3
    await pool.close()


async def test_chunked_stream_arrives_in_parts(serve) -> None:  # type: ignore[no-untyped-def]
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nX-Thing: 7\r\n\r\n")
        for part in (b"data: 1\n\n", b"data: 2\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await _read_request(reader)  # the next request on the same (kept-alive) connection
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        await reader.read()

    server = await serve(chunked)
    pool = Http1Pool()
    resp = await pool.request(Endpoint.parse(server.url), "POST", {}, b"", connect_timeout=1, read_timeout=2)
    assert resp.status == 200 and resp.headers["x-thing"] == "7"
    assert [chunk async for chunk in resp.iter_chunks()] == [b"data: 1\n\n", b"data: 2\n\n"]
    resp.release()
    assert await _post(pool, server.url) == (200, b"")
    assert server.connections == 1  # the chunked response was read to its end: the connection is reused
    await pool.close()


async def test_chunks_that_arrive_together_come_out_together(serve) -> None:  # type: ignore[no-untyped-def]
    # A server writing many small HTTP chunks at once (one per SSE event, like vLLM): the client gets
    # what one read brought as one piece, so Parley relays a burst of tokens in one socket write.
    parts = [b"data: %d\n\n" % i for i in range(20)]

    async def burst(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                     + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    server = await serve(burst)
    pool = Http1Pool()
    resp = await pool.request(Endpoint.parse(server.url), "POST", {}, b"", connect_timeout=1, read_timeout=2)
    pieces = [chunk async for chunk in resp.iter_chunks()]
    resp.release()
    assert b"".join(pieces) == b"".join(parts)
    assert len(pieces) == 1
    await pool.close()


async def test_timeouts(serve) -> None:  # type: ignore[no-untyped-def]
    async def stall_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(5)

    async def stall_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    pool = Http1Pool()
    with pytest.raises(ReadTimeout):
        await _post(pool, (await serve(stall_body)).url, read_timeout=0.2)
    with pytest.raises(ReadTimeout):
        await _post(pool, (await serve(stall_head)).url, read_timeout=0.2)
    await pool.close()


async def test_broken_servers(serve) -> None:  # type: ignore[no-untyped-def]
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        await writer.drain()

    pool = Http1Pool()
    with pytest.raises(Disconnected):
        await _post(pool, (await serve(garbage)).url)
    with pytest.raises(Disconnected):
        await _post(pool, (await serve(cut)).url)
    closed = await serve(cut)
    port = closed.url.split(":")[2].split("/")[0]
    assert closed.server is not None
    closed.server.close()
    await closed.server.wait_closed()
    with pytest.raises(ConnectFailed):
        await _post(pool, f"http://127.0.0.1:{port}/v1/x")
    await pool.close()


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_https_with_verified_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            body = await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    trusted = ssl.create_default_context(cafile=str(cert))
    pool = Http1Pool(ssl_context=trusted)
    url = f"https://localhost:{port}/v1/x"
    assert await _post(pool, url) == (200, b"{}")
    assert await _post(pool, url) == (200, b"{}")  # over the same TLS connection
    await pool.close()
    untrusted = Http1Pool()  # the system CAs do not know this certificate: refused, never sent in clear
    with pytest.raises(ConnectFailed):
        await _post(untrusted, url)
    await untrusted.close()
    server.close()


async def test_a_body_delimited_by_the_close_is_whole(serve) -> None:  # type: ignore[no-untyped-def]
    """Without content-length or chunked framing a response's body ends when the server closes the connection
    (RFC 9112 §6.3; HTTP/1.0 servers, streaming servers that close when done): a clean close ends it, a reset
    does not."""
    async def http10(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b'HTTP/1.0 200 OK\r\ncontent-type: application/json\r\n\r\n{"a": ')
        await writer.drain()
        writer.write(b"1}")
        await writer.drain()

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-type: text/event-stream\r\n\r\n"
                     b"data: one\n\ndata: two\n\n")
        await writer.drain()

    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\ndata: one\n\n")
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close() sends a RST
        writer.transport.abort()

    pool = Http1Pool()
    assert await _post(pool, (await serve(http10)).url) == (200, b'{"a": 1}')
    assert await _post(pool, (await serve(until_close)).url) == (200, b"data: one\n\ndata: two\n\n")
    with pytest.raises(Disconnected):
        await _post(pool, (await serve(reset)).url)
    await pool.close()


async def test_informational_responses_are_skipped(serve) -> None:  # type: ignore[no-untyped-def]
    """A 103 Early Hints (or any 1xx) before the response is not the response."""
    async def hints(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            await _read_request(reader)
            writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </x>; rel=preload\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)  # so that the final response comes in a read of its own
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"{}")
            await writer.drain()

    server = await serve(hints)
    pool = Http1Pool()
    assert await _post(pool, server.url) == (200, b"{}")
    assert await _post(pool, server.url) == (200, b"{}")  # the connection was kept
    assert server.connections == 1
    await pool.close()


async def test_bodies_are_asked_for_uncompressed(serve) -> None:  # type: ignore[no-untyped-def]
    """A request without accept-encoding takes any content coding (RFC 9110 §12.5.3), which this client cannot
    read: it asks for `identity`, and a server honouring that sends the body as it is."""
    async def compressing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        body, coding = b'{"plain": true}', b""
        if b"\r\naccept-encoding: identity\r\n" not in head.lower():
            body, coding = gzip.compress(body), b"content-encoding: gzip\r\n"
        writer.write(b"HTTP/1.1 200 OK\r\n%scontent-length: %d\r\n\r\n%s" % (coding, len(body), body))
        await writer.drain()

    pool = Http1Pool()
    assert await _post(pool, (await serve(compressing)).url) == (200, b'{"plain": true}')
    await pool.close()


async def test_endless_response_headers_are_refused(serve) -> None:  # type: ignore[no-untyped-def]
    # The parser keeps a header it has not seen the end of: one that never ends held the process's memory growing
    # (~300 MB for a 300 MB header) until the read timeout. Past MAX_HEAD_BYTES the response is refused.
    sent = 0

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-endless: ")
        while sent < 100 * MAX_HEAD_BYTES:  # bounded, so the test ends either way
            writer.write(b"a" * 65536)
            sent += 65536
            await writer.drain()

    pool = Http1Pool()
    with pytest.raises(InvalidResponse, match="headers exceed"):
        await _post(pool, (await serve(endless)).url, read_timeout=30)
    assert sent < 100 * MAX_HEAD_BYTES  # the connection was closed long before the server finished
    await pool.close()


@pytest.mark.parametrize(("pieces", "read"), [
    ([b"\xef\xbb\xbfdata: 1\n\n"], b"data: 1\n\n"),
    ([b"\xef", b"\xbb", b"\xbfdata: 1\n\n", b"data: 2\n\n"], b"data: 1\n\ndata: 2\n\n"),  # the BOM split
    ([b"\xef\xbb\xbf", b"data: 1\n\n"], b"data: 1\n\n"),  # the BOM alone in its first chunk
    ([b"data: \xef\xbb\xbf1\n\n", b"\xef\xbb\xbf"], b"data: \xef\xbb\xbf1\n\n\xef\xbb\xbf"),  # not at the start
    ([b"\xef\xbb"], b"\xef\xbb"),  # the start of a BOM that is not one: left as it came
    ([b"d", b"ata: 1\n\n"], b"data: 1\n\n"),
    ([], b""),
], ids=["whole", "split", "alone", "later", "partial", "none", "empty"])
async def test_an_event_streams_leading_bom_is_dropped(serve, pieces: list[bytes],  # type: ignore[no-untyped-def]
                                                       read: bytes) -> None:
    """The SSE spec ignores one U+FEFF at the very start of a stream (WHATWG HTML, "Interpreting an event
    stream"), however the reads split its three bytes; anywhere else it is data."""
    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for piece in pieces:
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.02)  # (read apart or together: the same bytes either way)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    pool = Http1Pool()
    resp = await pool.request(Endpoint.parse((await serve(stream)).url), "POST", {}, b"", connect_timeout=1,
                              read_timeout=2)
    assert b"".join([chunk async for chunk in resp.iter_event_stream()]) == read
    resp.release()
    await pool.close()
