"""Request bodies sent with a `Content-Encoding` (RFC 9110 §8.4): gzip and deflate are decoded as they arrive,
never past the body's size limit (a compression bomb is cut at the limit, as an over-large plain body is);
`identity` is the body as it is; any other coding is a 415 naming it."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from parley.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType

# zlib's window bits per coding: gzip's header and trailer (RFC 1952); deflate is the zlib format (RFC 1950, as
# RFC 9110 §8.4.1.2 defines it). x-gzip is gzip (RFC 9110 §8.4.1.3).
_GZIP = 16 + zlib.MAX_WBITS
_WBITS = {"gzip": _GZIP, "x-gzip": _GZIP, "deflate": zlib.MAX_WBITS}


@dataclass(frozen=True, slots=True)
class BodyLimit:
    """The most bytes a body may have once decoded, and the 413's message past it (the plain body's own)."""

    max_bytes: int
    message: str


class BodyDecoder:
    """Decodes one body, piece by piece: each piece inflates to at most what the limit has room for (zlib's
    `max_length`), so memory stays within the limit whatever the compression ratio."""

    def __init__(self, coding: str, limit: BodyLimit) -> None:
        self._coding = coding
        self._wbits = _WBITS[coding]
        self._inflater = zlib.decompressobj(self._wbits)
        self._limit = limit
        self._size = 0

    def decode(self, data: bytes) -> bytes:
        pieces: list[bytes] = []
        while data:
            if self._inflater.eof:  # a gzip body may hold several members (RFC 1952 §2.2), read one after another
                if self._wbits != _GZIP:
                    raise self._corrupt("data after its end")
                self._inflater = zlib.decompressobj(self._wbits)
            try:
                # (room >= 1: a size past the limit has raised already; 0 would mean "no limit" to zlib)
                piece = self._inflater.decompress(data, self._limit.max_bytes + 1 - self._size)
            except zlib.error as err:
                raise self._corrupt(str(err)) from None
            self._size += len(piece)
            if self._size > self._limit.max_bytes:
                raise PayloadTooLarge(self._limit.message)
            pieces.append(piece)
            data = self._inflater.unused_data  # (no unconsumed tail: that needs a full output, past the limit)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def end(self) -> None:
        """The body has arrived whole: its coded data must have ended too (not cut short)."""
        if not self._inflater.eof:
            raise self._corrupt("it ends before its compressed data does")

    def _corrupt(self, reason: str) -> InvalidRequest:
        return InvalidRequest(f"The request body is not valid {self._coding} data (Content-Encoding: "
                              f"{self._coding}): {reason}.", code="invalid_content_encoding")

    async def decoded(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """`chunks` (a body as it arrives) decoded."""
        async for chunk in chunks:
            piece = self.decode(chunk)
            if piece:
                yield piece
        self.end()


def body_decoder(content_encoding: str | None, limit: BodyLimit) -> BodyDecoder | None:
    """The decoder for a request's `Content-Encoding` header; None for a body to take as it is (no header,
    `identity`). A coding Parley does not decode, or more than one, is a 415 naming it."""
    if content_encoding is None:
        return None
    # (empty list elements are ignored: RFC 9110 §5.6.1)
    codings = [c for c in (part.strip().lower() for part in content_encoding.split(",")) if c not in ("", "identity")]
    if not codings:
        return None
    if len(codings) > 1 or codings[0] not in _WBITS:
        shown = content_encoding.strip()
        shown = shown if len(shown) <= 100 else shown[:100] + "..."
        raise UnsupportedMediaType(f"Content-Encoding '{shown}' is not supported: send the request body as gzip, "
                                   "deflate or identity (uncompressed).", "unsupported_content_encoding")
    return BodyDecoder(codings[0], limit)
