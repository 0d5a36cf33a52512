"""The HTTP protocol's per-request helpers (api/http_protocol.py): one socket write per JSON answer, a streamed
answer's head sent without waiting for its first event, and what the connection tells a request (its body is in,
its client went away)."""

from __future__ import annotations

import asyncio
from typing import Any

from parley.api.http_protocol import EXCHANGE, Exchange, _HeadWithBody, exchange_of


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def _wrapped() -> tuple[_HeadWithBody, _Transport]:
    transport = _Transport()
    return _HeadWithBody(transport, asyncio.get_running_loop()), transport  # type: ignore[arg-type]


async def test_a_head_and_its_body_go_out_in_one_write() -> None:
    wrapped, transport = _wrapped()
    wrapped.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert transport.writes == []
    wrapped.write(b"{}")
    assert transport.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    await asyncio.sleep(0)  # the end-of-iteration flush finds nothing left
    assert len(transport.writes) == 1


async def test_a_head_without_a_body_yet_goes_out_at_the_end_of_the_iteration() -> None:
    wrapped, transport = _wrapped()
    wrapped.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    await asyncio.sleep(0)
    assert transport.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
    wrapped.write(b"5\r\nhello\r\n")  # later writes pass straight through
    wrapped.write(b"0\r\n\r\n")
    assert transport.writes[1:] == [b"5\r\nhello\r\n", b"0\r\n\r\n"]


async def test_close_sends_what_is_held_first_and_a_closed_transport_gets_nothing() -> None:
    wrapped, transport = _wrapped()
    wrapped.write(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
    wrapped.close()
    assert transport.writes == [b"HTTP/1.1 500 Internal Server Error\r\n\r\n"] and transport.closed
    held, gone = _wrapped()
    held.write(b"HTTP/1.1 200 OK\r\n\r\n")
    gone.closed = True  # the client went away before the end of the iteration
    await asyncio.sleep(0)
    assert gone.writes == []


def test_an_exchange_tells_its_callback_once_when_the_client_goes() -> None:
    exchange = Exchange()
    calls: list[Any] = []
    exchange.on_gone = lambda: calls.append(1)
    assert exchange_of({"extensions": {EXCHANGE: exchange}}) is exchange
    assert exchange_of({"type": "http"}) is None
    exchange.lost()
    exchange.lost()
    assert exchange.gone and calls == [1]
