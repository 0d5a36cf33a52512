"""A multipart/form-data upload read as a stream with python-multipart's push parser: the small text fields are
collected (bounded in size and number) and one file field's bytes are handed on as they arrive, never held
whole. The body is bounded in time by an idle timeout (the longest gap between two reads) and a deadline for
the whole upload, not by `body_timeout_s`: a large upload legitimately takes minutes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from python_multipart.exceptions import FormParserError, MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from parley.api.body_coding import BodyLimit, body_decoder
from parley.api.http import ClientGoneError
from parley.errors import InvalidRequest, RequestTimeout

MAX_FIELD_BYTES = 64 * 1024  # one text field
MAX_PARTS = 64
# Boundaries, part headers and text fields around the file: what a body may have beyond the file's bytes.
FORM_OVERHEAD_BYTES = MAX_FIELD_BYTES * 4


@dataclass(frozen=True, slots=True)
class UploadDeadlines:
    idle_s: float
    total_s: float


@dataclass(frozen=True, slots=True)
class FilePart:
    filename: str
    content_type: str | None


FieldsCheck = Callable[[dict[str, str]], None]


def _bad_form(message: str) -> InvalidRequest:
    return InvalidRequest(message, code="invalid_multipart")


class MultipartUpload:
    """One upload: `file_chunks()` reads the whole body, yielding the bytes of the field named `file_field`;
    afterwards `fields` and `file` are complete. `check(fields)` runs when the file's part begins, on the fields
    seen so far, so that a bad field sent before a large file is refused before the file is read. A body sent
    with a `Content-Encoding` is decoded as it arrives, to at most `limit` (api/body_coding.py)."""

    def __init__(self, request: Request, file_field: str, deadlines: UploadDeadlines, limit: BodyLimit,
                 check: FieldsCheck | None = None) -> None:
        kind, options = parse_options_header(request.headers.get("content-type", ""))
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise _bad_form("The request body must be multipart/form-data (with a boundary).")
        coding = request.headers.get("content-encoding")
        self._decoder = None if coding is None else body_decoder(coding, limit)
        self._request = request
        self._file_field = file_field
        self._deadlines = deadlines
        self._check = check
        self.fields: dict[str, str] = {}
        self.file: FilePart | None = None
        self._pending: list[bytes] = []
        self._parts = 0
        self._ended = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._field: str | None = None  # the text field being read (None: the file, or an ignored part)
        self._in_file = False
        self._value = bytearray()
        try:
            self._parser = MultipartParser(boundary, {
                "on_part_begin": self._part_begin, "on_header_field": self._header_field_data,
                "on_header_value": self._header_value_data, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
                "on_part_end": self._part_end, "on_end": self._end,
            })
        except FormParserError as err:  # a boundary longer than the parser takes (RFC 2046 allows 70 characters)
            raise _bad_form(f"The multipart boundary is not usable: {err}.") from None

    async def file_chunks(self) -> AsyncIterator[bytes]:
        body = self._body() if self._decoder is None else self._decoder.decoded(self._body())
        try:
            async for data in body:
                self._parser.write(data)
                if self._pending:
                    pieces, self._pending = self._pending, []
                    yield b"".join(pieces)
            self._parser.finalize()
        except MultipartParseError as err:
            raise _bad_form(f"The multipart body is malformed: {err}.") from None
        if not self._ended:
            raise _bad_form("The multipart body ended before its closing boundary.")

    async def _body(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deadlines.total_s
        stream = self._request.stream()
        while True:
            remaining = deadline - loop.time()
            wait = min(self._deadlines.idle_s, remaining)
            try:
                async with asyncio.timeout(max(wait, 0)):
                    chunk = await anext(stream, None)
            except TimeoutError:
                if remaining <= self._deadlines.idle_s:
                    raise RequestTimeout(f"The upload did not finish within {self._deadlines.total_s:g} seconds.") \
                        from None
                raise RequestTimeout(
                    f"The upload stalled: no data for {self._deadlines.idle_s:g} seconds.") from None
            except ClientDisconnect:
                raise ClientGoneError from None
            if chunk is None:
                return
            if chunk:
                yield chunk

    # -- parser callbacks (synchronous; an exception raised here ends the upload) -------------------

    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise _bad_form(f"The form has more than {MAX_PARTS} parts.")
        self._headers = {}
        self._field = None
        self._in_file = False
        self._value = bytearray()

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[bytes(self._header_name).lower()] = bytes(self._header_value)
        self._header_name = bytearray()
        self._header_value = bytearray()

    def _headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        if disposition != b"form-data" or name is None:
            raise _bad_form("Each part of the form needs a Content-Disposition: form-data header with a name.")
        field = name.decode("utf-8", "replace")
        if field != self._file_field:
            if field in self.fields:  # which of the two was meant is unknown: neither is picked
                raise InvalidRequest(f"Send one '{field}' per request.", param=field)
            self._field = field
            return
        if self.file is not None:
            raise InvalidRequest(f"Send one '{field}' per request.", param=field)
        raw_type = self._headers.get(b"content-type")
        filename = _filename(options.get(b"filename"))
        if "\x00" in filename or (raw_type is not None and b"\x00" in raw_type):
            # Stored as sent, it would be a 200 on SQLite and a refused query on PostgreSQL.
            raise InvalidRequest(f"The '{field}' part's file name and Content-Type cannot contain a NUL character "
                                 "(U+0000).", param=field)
        self.file = FilePart(filename, raw_type.decode("latin-1") if raw_type else None)
        self._in_file = True
        if self._check is not None:
            self._check(self.fields)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._pending.append(data[start:end])
            return
        self._value += data[start:end]
        if len(self._value) > MAX_FIELD_BYTES:
            raise InvalidRequest(f"The form field '{self._field}' is longer than {MAX_FIELD_BYTES} bytes.",
                                 param=self._field)

    def _part_end(self) -> None:
        if self._field is None:
            return
        try:
            self.fields[self._field] = self._value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(f"The form field '{self._field}' is not UTF-8 text.", param=self._field) from None

    def _end(self) -> None:
        self._ended = True


def _filename(raw: bytes | None) -> str:
    """The part's file name. Browsers and httpx escape `"`, CR and LF as %22, %0D, %0A (the HTML standard's
    form encoding) and send the rest as raw UTF-8; only those three escapes are undone."""
    if not raw:
        return "upload"
    text = raw.decode("utf-8", "replace")
    for escaped, plain in (("%22", '"'), ("%0D", "\r"), ("%0A", "\n"), ("%0d", "\r"), ("%0a", "\n")):
        text = text.replace(escaped, plain)
    return text.rsplit("/", 1)[-1].rsplit("\\", 1)[-1] or "upload"
