"""uvicorn's httptools protocol with a deadline for a request's headers, and one write per response.

uvicorn arms no timer while a connection has not yet sent a whole request head (its keep-alive timer runs
only between requests), so a client trickling header bytes, or connecting and sending nothing, holds the
connection forever. Here every connection must deliver each request's headers within `header_timeout_s`
of connecting (or of the request's first byte); otherwise it gets a 408 and is closed. The body has its
own deadline, enforced where it is read (api/http.py `read_body`). Bytes the HTTP parser refuses get a 400 in
the OpenAI error shape (`invalid_http_request`), not uvicorn's text/plain one.

uvicorn writes a response's status line and headers and then its body as two socket writes: two `send`
system calls and two TCP segments for every JSON answer, and the client wakes up twice. Each request's
cycle here writes through `_HeadWithBody`, which holds the head back until the body's first write (or
the end of the current event-loop iteration, whichever comes first) and sends both at once: one write
per non-streamed response (measured in bench/README.md, "Parley's CPU per request").

Each request's scope also carries an `Exchange` (`exchange_of(scope)`): what the connection knows and ASGI
does not say without a task waiting on `receive()` — whether the whole body has arrived, and a callback for
when the client goes away. Handlers use it to skip the body deadline when there is nothing left to wait for
and to be cancelled on a disconnect without a watcher task per request (api/http.py); where there is none
(an app called in-process, as by httpx's ASGI transport) they fall back to waiting on `receive()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_TIMEOUT_BODY = (
    b'{"error": {"message": "The request headers were not received in time.", "type": "invalid_request_error", '
    b'"param": null, "code": "request_timeout"}}'
)
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY
)

_INVALID_BODY = (
    b'{"error": {"message": "The request is not valid HTTP/1.1 (its request line, a header, Content-Length, '
    b'Transfer-Encoding or a chunk size).", "type": "invalid_request_error", "param": null, '
    b'"code": "invalid_http_request"}}'
)
_INVALID_RESPONSE = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: " + str(len(_INVALID_BODY)).encode() + b"\r\n\r\n" + _INVALID_BODY
)

_LINGER_S = 2.0  # after a 408, how long a client may keep sending before the connection is closed anyway

EXCHANGE = "parley.exchange"  # the scope["extensions"] key


class Exchange:
    """One request as its connection sees it. `body_received`: the whole request body is in (reading it cannot
    block). `gone`: the connection was lost before the response completed; `on_gone` is then called once."""

    __slots__ = ("body_received", "gone", "on_gone")

    def __init__(self) -> None:
        self.body_received = False
        self.gone = False
        self.on_gone: Callable[[], object] | None = None

    def lost(self) -> None:
        self.gone = True
        callback, self.on_gone = self.on_gone, None
        if callback is not None:
            callback()


def exchange_of(scope: Mapping[str, Any]) -> Exchange | None:
    """The request's Exchange, when served by HeaderDeadlineProtocol."""
    extensions = scope.get("extensions")
    return extensions.get(EXCHANGE) if extensions else None


class _HeadWithBody:
    """The transport as one request's response cycle sees it: its first write (the response head) is held
    until the next write and goes out with it, or at the end of this event-loop iteration when no body
    follows at once (a stream's first event may be seconds away). Everything later passes straight
    through. Only `write`, `close` and `is_closing` are used by uvicorn's cycle."""

    __slots__ = ("_held", "_loop", "_started", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._started = False

    def write(self, data: bytes) -> None:
        if self._started:
            held, self._held = self._held, None
            self._transport.write(data if held is None else held + data)
            return
        self._started = True
        self._held = data
        self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._flush()
        self._transport.close()


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """Built by uvicorn per connection (through functools.partial, which carries the deadline)."""

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None
        self._exchange: Exchange | None = None
        self._lingering = False  # a 408 or 400 was sent: input is dropped until the connection closes

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self._header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        self._answer_and_close(_TIMEOUT_RESPONSE)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes its HTTP parser refuses (a bad Content-Length or chunk size, a header or URL
        past the parser's limits, not HTTP at all): the OpenAI error shape instead of its text/plain `msg`. In a
        request's head (or between requests) the answer goes out as a 408 does. In a request's body, whose
        handler is under way, the connection is closed at once as uvicorn does, which tells the handler its
        client is gone; the 400 goes first unless the handler's response has begun (nothing more can be said
        in the middle of it)."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self._answer_and_close(_INVALID_RESPONSE)
            return
        self._disarm()
        if not cycle.response_started:
            self.transport.write(_INVALID_RESPONSE)
        self.transport.close()

    def _answer_and_close(self, response: bytes) -> None:
        """Answer and close gracefully: closing a socket whose receive queue holds unread bytes (a trickling
        client's latest header lines, the rest of a refused request) makes the kernel send a reset, which can
        destroy the answer before the client reads it. So: the answer, then our end of the stream (FIN), then
        what the client still sends is read and dropped until it closes, or for `_LINGER_S` at most."""
        self._disarm()
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(response)
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._lingering = True
        self._header_timer = self.loop.call_later(_LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # after a 408 or 400: read and dropped, never parsed
        super().data_received(data)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        cycle = self.cycle
        # A new request's cycle (not after a WebSocket upgrade, which makes none).
        if cycle is not None and cycle.transport is self.transport:
            cycle.transport = _HeadWithBody(self.transport, self.loop)  # type: ignore[assignment]
            self._exchange = Exchange()
            cycle.scope["extensions"] = {EXCHANGE: self._exchange}  # type: ignore[dict-item]  # ASGI types want dicts

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self._exchange is not None:
            self._exchange.body_received = True

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        cycle = self.cycle
        super().connection_lost(exc)
        # As uvicorn tells the current cycle (its receive() answers http.disconnect) unless it has answered.
        if self._exchange is not None and cycle is not None and not cycle.response_complete:
            self._exchange.lost()
