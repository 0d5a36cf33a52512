"""A lean HTTP/1.1 client for upstream model calls: keep-alive pool, httptools response parser.

Why not aiohttp here: on the request hot path its client machinery (sessions, tracing, cookies,
redirects, multidicts) cost ~100 µs of CPU per upstream call, a quarter of all of Parley's per-request
CPU (bench/README.md). Upstream model APIs need little of it: POST a JSON body, read a JSON body or an
SSE stream, reuse connections. This client does exactly that over asyncio, with httptools (the C
parser uvicorn uses) for responses, TLS through the standard ssl module, and per-read timeouts.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools


class HttpError(Exception):
    """Base of the transport failures below (mapped to ParleyError by providers/upstream_http.py)."""


class ConnectFailed(HttpError):
    pass


class ReadTimeout(HttpError):
    pass


class Disconnected(HttpError):
    """The server closed the connection (or sent something unparseable) before the response ended."""


class InvalidResponse(Disconnected):
    """What the server sent is not an HTTP response (no status code, two lengths, a broken chunk size)."""


class BodyTooLarge(HttpError):
    """The response body passed the size the caller would read (an upstream reply past its cap)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the response body is larger than {limit} bytes")
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Endpoint:
    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme, parts.hostname, port, path)

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


MAX_HEAD_BYTES = 256 * 1024  # a response's status line and headers (an API's are a few KiB)
_BOM = b"\xef\xbb\xbf"  # U+FEFF in UTF-8


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses one response at a time."""

    def __init__(self, key: tuple[str, str, int]) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._headers_done: asyncio.Future[None] | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self.loop = asyncio.get_running_loop()  # kept: asyncio.get_running_loop() makes a system call (getpid)
        self._last_data = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self.complete = False
        self._keep_alive = False
        self._until_close = False  # the body ends when the server closes the connection
        self._interim = False  # the message being parsed is an informational (1xx) response
        self.error: HttpError | None = None
        self.status = 0
        self.headers: dict[str, str] = {}
        self._head_bytes: int | None = None  # bytes read while a response's headers are incomplete

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses, but have the same interface)
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(InvalidResponse("the upstream sent an invalid HTTP response"))
            self.close()
            return
        if self._head_bytes is not None:  # the headers are still incomplete after this read
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:  # the parser would buffer them for as long as they come
                self._fail(InvalidResponse(f"the upstream's response headers exceed {MAX_HEAD_BYTES} bytes"))
                self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete:
            return
        if exc is None and self._until_close:
            self.complete = True  # a clean close ends a body framed by neither content-length nor chunks
            self._wake()
        else:
            self._fail(Disconnected("the upstream closed the connection"))

    # -- httptools callbacks -----------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # an informational response (103 Early Hints): the response follows
            self._interim = True
            self.headers = {}
            return
        self.status = status
        self._head_bytes = None
        # Read now: once the message is complete the parser no longer answers for it.
        self._keep_alive = self._parser.should_keep_alive()
        # Neither a length nor chunks: the body is what arrives until the server closes (RFC 9112 §6.3).
        headers = self.headers
        self._until_close = "content-length" not in headers and "chunked" not in headers.get(
            "transfer-encoding", "").lower()
        if self._headers_done is not None and not self._headers_done.done():
            self._headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._last_data = self.loop.time()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.complete = True
        self._wake()

    # -- use ---------------------------------------------------------------------------------------

    def _fail(self, error: HttpError) -> None:
        if self.error is None:
            self.error = error
        if self._headers_done is not None and not self._headers_done.done():
            self._headers_done.set_exception(error)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def start(self, request: bytes) -> asyncio.Future[None]:
        """Send a request; the returned future resolves when the response headers are in."""
        assert self.transport is not None
        self._parser = httptools.HttpResponseParser(self)
        self._chunks.clear()
        self.complete, self._keep_alive, self.error, self.status, self.headers = False, False, None, 0, {}
        self._until_close = self._interim = False
        self._head_bytes = 0
        self._headers_done = self.loop.create_future()
        self.transport.write(request)
        return self._headers_done

    async def next_chunk(self, wait_s: float) -> bytes | None:
        """All body bytes received so far (joined: a server's HTTP chunks that arrived in one read come out
        as one piece, so a stream is handled and relayed one read at a time, not one chunk at a time);
        None at the end of the response; ReadTimeout after `wait_s` without data. One watchdog timer
        per response, re-armed lazily, rather than a timer (or, with asyncio.wait_for, a task) for
        every chunk of a stream."""
        while not self._chunks:
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            waiter = self._waiter = self.loop.create_future()
            if self._watchdog is None:
                self._last_data = max(self._last_data, self.loop.time())
                self._watchdog = self.loop.call_at(self._last_data + wait_s, self._check_idle, wait_s)
            try:
                await waiter
            finally:
                self._waiter = None
        chunks = self._chunks
        if len(chunks) == 1:
            return chunks.popleft()
        data = b"".join(chunks)
        chunks.clear()
        return data

    def _check_idle(self, wait_s: float) -> None:
        self._watchdog = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        deadline = self._last_data + wait_s
        if self.loop.time() >= deadline:
            waiter.set_exception(ReadTimeout("the upstream did not send data in time"))
        else:
            self._watchdog = self.loop.call_at(deadline, self._check_idle, wait_s)

    def stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    @property
    def reusable(self) -> bool:
        return self.complete and not self.closed and self.error is None and self._keep_alive

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _expire(headers_in: asyncio.Future[None]) -> None:
    if not headers_in.done():
        headers_in.set_exception(ReadTimeout("the upstream did not answer in time"))


class Response:
    """An upstream response whose body is read (or streamed) afterwards; release() returns the connection."""

    def __init__(self, pool: Http1Pool, conn: _Connection, read_timeout: float) -> None:
        self._pool = pool
        self._conn = conn
        self._timeout = read_timeout
        self._released = False
        self.status = conn.status
        self.headers = conn.headers

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body: at most `limit` bytes (BodyTooLarge past it, also when the declared length says
        so), and within the read timeout as a whole, not only between reads (ReadTimeout: a body trickling
        in forever must end too)."""
        if limit is not None:
            declared = self.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise BodyTooLarge(limit)
        body = await self._collect(limit)
        if limit is not None and len(body) > limit:
            raise BodyTooLarge(limit)
        return body

    async def read_prefix(self, limit: int) -> bytes:
        """At most the first `limit` bytes of the body (an error body: its start says what went wrong);
        the rest is left unread, so release() closes the connection."""
        return (await self._collect(limit))[:limit]

    async def _collect(self, limit: int | None) -> bytes:
        """Body bytes until the end, or until more than `limit` arrived, within the read timeout overall."""
        loop = self._conn.loop
        deadline = loop.time() + self._timeout
        parts: list[bytes] = []
        size = 0
        while (chunk := await self._conn.next_chunk(self._timeout)) is not None:
            parts.append(chunk)
            size += len(chunk)
            if limit is not None and size > limit:
                break
            if loop.time() > deadline:
                raise ReadTimeout("the upstream did not send its whole body in time")
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self._conn.next_chunk(self._timeout)) is not None:
            yield chunk

    async def iter_event_stream(self) -> AsyncIterator[bytes]:
        """The body of an SSE stream, as iter_chunks but without a leading UTF-8 BOM, which the SSE spec drops
        (WHATWG HTML, "Interpreting an event stream": "One leading U+FEFF BYTE ORDER MARK character must be
        ignored"); kept, it hid the first `data:` line and its event. Checked once, on the stream's first bytes
        (however the reads split them); the reads after them are yielded untouched."""
        head = b""
        while _BOM.startswith(head) and len(head) < 3:  # the first bytes may still be the start of a BOM
            chunk = await self._conn.next_chunk(self._timeout)
            if chunk is None:
                break
            head += chunk
        if head.startswith(_BOM):
            head = head[3:]
        if head:
            yield head
        while (chunk := await self._conn.next_chunk(self._timeout)) is not None:
            yield chunk

    def release(self) -> None:
        """Give the connection back if the response was read to the end; otherwise close it."""
        if self._released:
            return
        self._released = True
        self._conn.stop_watchdog()
        if self._conn.reusable:
            self._pool.put_back(self._conn)
        else:
            self._conn.close()

    def close(self) -> None:
        """Abandon the response (the client went away): the connection is closed, never reused.
        A no-op once the response was released (the connection may already serve another request)."""
        if self._released:
            return
        self._released = True
        self._conn.stop_watchdog()
        self._conn.close()


class Http1Pool:
    """Keep-alive connections per (scheme, host, port). Owned by the app; closed at shutdown.

    `header_hook`: headers added to every request when it is sent (tracing's `traceparent`, telemetry/otel.py).
    `retries` counts, by host, requests sent again after a kept-alive connection turned out closed (/metrics)."""

    def __init__(self, idle_per_host: int = 256, ssl_context: ssl.SSLContext | None = None,
                 header_hook: Callable[[], Mapping[str, str]] | None = None) -> None:
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._idle_per_host = idle_per_host
        self._ssl = ssl_context  # default: the system's trusted CAs, hostname checked
        self._header_hook = header_hook
        self.retries: dict[str, int] = {}

    async def request(
        self, endpoint: Endpoint, method: str, headers: dict[str, str], body: bytes, *,
        connect_timeout: float, read_timeout: float,
    ) -> Response:
        # accept-encoding: without it any content coding is acceptable (RFC 9110 §12.5.3), and none is read here.
        head = [f"{method} {endpoint.path} HTTP/1.1\r\nhost: {endpoint.host_header}\r\n"
                f"content-length: {len(body)}\r\naccept-encoding: identity\r\n"]
        head.extend(f"{name}: {value}\r\n" for name, value in headers.items())
        if self._header_hook is not None:
            head.extend(f"{name}: {value}\r\n" for name, value in self._header_hook().items())
        request = "".join(head).encode("latin-1") + b"\r\n" + body
        for attempt in range(2):
            conn, reused = await self._connection(endpoint, connect_timeout)
            headers_in = conn.start(request)
            timer = conn.loop.call_later(read_timeout, _expire, headers_in)
            try:
                await headers_in
            except Disconnected:
                conn.close()
                if reused and attempt == 0:
                    # A kept-alive connection the server had closed meanwhile: retry once, fresh.
                    self.retries[endpoint.host_header] = self.retries.get(endpoint.host_header, 0) + 1
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            finally:
                timer.cancel()
            return Response(self, conn, read_timeout)
        raise AssertionError("unreachable")

    async def _connection(self, endpoint: Endpoint, connect_s: float) -> tuple[_Connection, bool]:
        key = (endpoint.scheme, endpoint.host, endpoint.port)
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn, True
        loop = asyncio.get_running_loop()
        context = self._ssl_context() if endpoint.scheme == "https" else None
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(key), endpoint.host, endpoint.port, ssl=context),
                connect_s,
            )
        except TimeoutError:
            raise ConnectFailed(f"connecting to {endpoint.host}:{endpoint.port} timed out") from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {endpoint.host}:{endpoint.port}: {exc.strerror}") from None
        return conn, False

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def put_back(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) < self._idle_per_host:
            idle.append(conn)
        else:
            conn.close()

    async def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
