"""The provider for the native upstream kinds: one HTTP call, its SSE events (or whole body) -> canonical events.

What differs between Responses, Anthropic Messages and Gemini is the translation (a `Wire`: the request, and a
parser of the reply); everything else is shared here and behaves as the Chat Completions provider does: the
app's keep-alive pool, status -> ParleyError (upstream_http.py, credentials masked), the byte and output caps,
one batch of events per network read, one warning log line per failure.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from parley.errors import UpstreamError
from parley.providers.base import Finish, FinishReason, ModelCall, ModelEvent, TokenCount
from parley.providers.chat_chunks import MalformedReply, TooMuchOutput
from parley.providers.chat_completions import ReplyLimits
from parley.providers.chat_request import ChatMessages, chat_body
from parley.providers.http1 import BodyTooLarge, Endpoint, Http1Pool, HttpError, Response
from parley.providers.native_profiles import NativeProfile
from parley.providers.prefix_memo import PrefixMemo
from parley.providers.profiles import PROFILES
from parley.providers.redact import SecretMasker
from parley.providers.tokens import Encodings, MessagesCount, count_chat_tokens
from parley.providers.upstream_http import (
    TRANSPORT_ERRORS,
    UpstreamReport,
    coded_reply,
    log_failure,
    reply_too_large,
    reported_error,
    status_error,
    transport_error,
)

_ERROR_BODY_BYTES = 64 * 1024


class UpstreamReported(Exception):
    """The upstream reported an error inside a 200 reply (an `error` event, a failed response)."""

    def __init__(self, report: UpstreamReport) -> None:
        super().__init__(report.message)
        self.report = report


class StreamEnded(Exception):
    """Raised by a parser at its stream's terminal event (response.completed, message_stop): nothing after it is
    read, so an upstream that holds the stream open after it cannot turn a finished answer into a timeout. An
    exception, not a flag, so that the reads before it check nothing."""


class WireParser(Protocol):
    """Folds one upstream reply into canonical events, checking each field it reads (MalformedReply) and
    counting output characters (TooMuchOutput)."""

    finish: FinishReason | None

    def event(self, data: Any) -> list[ModelEvent]:
        """One SSE `data:` payload, parsed (StreamEnded at the terminal event, whose state it has kept)."""
        ...

    def body(self, data: Any) -> list[ModelEvent]:
        """A whole non-streamed reply, parsed."""
        ...

    def end(self) -> list[ModelEvent]:
        """What follows the last event: the turn's Usage (and anything held back)."""
        ...


@dataclass(frozen=True, slots=True)
class WireRequest:
    path: str  # appended to the base URL, with its query string
    body: dict[str, Any]


class Wire(Protocol):
    """One upstream wire format: how a call is sent and how its reply is read."""

    kind: str

    def request(self, call: ModelCall, profile: NativeProfile) -> WireRequest: ...

    def parser(self, call: ModelCall, max_output_chars: int) -> WireParser: ...

    def error_answer(self, status: int, body: bytes, headers: Mapping[str, str]) -> tuple[int, Mapping[str, str]]:
        """The status and headers an error answer is judged by (Gemini says a refused key with a 400 and its
        retry delay in the body)."""
        ...


@dataclass(frozen=True, slots=True)
class NativeUpstream:
    """Where and how one configured model is reached."""

    model_id: str
    base_url: str
    api_key: str | None
    profile: NativeProfile
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 600.0


class NativeStream:
    """Iterates the events of one open upstream reply; closing it releases the connection."""

    def __init__(self, resp: Response, call: ModelCall, parser: WireParser, provider: NativeProvider,
                 started: float) -> None:
        self._resp = resp
        self._call = call
        self._parser = parser
        self._provider = provider
        self._started = started

    async def aclose(self) -> None:
        self._resp.close()

    def __aiter__(self) -> AsyncIterator[list[ModelEvent]]:
        return self._events()

    async def _events(self) -> AsyncIterator[list[ModelEvent]]:
        parser, provider = self._parser, self._provider
        model = provider.model_id
        try:
            try:
                if self._call.stream:
                    async for batch in self._sse():
                        yield batch
                else:
                    yield parser.body(orjson.loads(await self._resp.read(provider.limits.max_bytes)))
            except TRANSPORT_ERRORS as exc:
                raise transport_error(model, exc) from None
            except orjson.JSONDecodeError:
                raise UpstreamError.bad_gateway(f"The upstream for model '{model}' sent invalid JSON.") from None
            except UpstreamReported as exc:
                raise reported_error(model, exc.report, provider.masker) from None
            except MalformedReply as exc:
                raise UpstreamError.bad_gateway(
                    f"The upstream for model '{model}' sent a reply of the wrong shape: {exc}.") from None
            except TooMuchOutput:
                limit = provider.limits.max_output_chars
                raise reply_too_large(model, f"more than {limit} characters of output (max_output_chars)") from None
            finally:
                self._resp.release()
            if parser.finish is None:
                raise UpstreamError.bad_gateway(f"The upstream for model '{model}' ended the stream early.")
        except UpstreamError as err:
            log_failure(model, err, self._started)
            raise
        yield [*parser.end(), Finish(parser.finish)]

    async def _sse(self) -> AsyncIterator[list[ModelEvent]]:
        """One batch per network read; `data:` lines only (the event name is in each payload's `type`, or there
        is none); at most `max_bytes` in all."""
        parser = self._parser
        pending = b""
        received = 0
        max_bytes = self._provider.limits.max_bytes
        async for data in self._resp.iter_event_stream():
            received += len(data)
            if received > max_bytes:
                raise BodyTooLarge(max_bytes)
            *lines, pending = (pending + data).split(b"\n")
            batch: list[ModelEvent] = []
            try:
                for raw in lines:
                    if not raw.startswith(b"data:"):
                        continue
                    payload = raw[5:].strip()
                    if payload == b"[DONE]":
                        break
                    batch.extend(parser.event(orjson.loads(payload)))
            except StreamEnded:
                if batch:
                    yield batch
                return
            if batch:
                yield batch
        if pending.startswith(b"data:") and pending[5:].strip() not in (b"", b"[DONE]"):
            try:
                batch = parser.event(orjson.loads(pending[5:].strip()))  # a last line without its newline
            except StreamEnded:
                return
            if batch:
                yield batch


class NativeProvider:
    """A configured model on a native upstream kind, its wire format given by `wire`."""

    def __init__(
        self, upstream: NativeUpstream, wire: Wire, http: Http1Pool, *, encodings: Encodings | None = None,
        limits: ReplyLimits | None = None, masker: SecretMasker | None = None, memo_bytes: int = 0,
    ) -> None:
        self.model_id = upstream.model_id
        self.profile = upstream.profile
        self.wire = wire
        self._upstream = upstream
        self._base = upstream.base_url.rstrip("/")
        self._headers = {"content-type": "application/json", "accept": "application/json"}
        self._headers.update(upstream.profile.headers)
        key = upstream.api_key
        if key:
            header = upstream.profile.auth_header
            self._headers[header] = f"Bearer {key}" if header == "authorization" else key
        self._http = http
        # Parsed upstream URLs by request path: a wire's paths are few (Gemini's name the model and the mode), and
        # parsing one costs more than the rest of building the request head (~1.6 µs).
        self._endpoints: dict[str, Endpoint] = {}
        self._encodings = encodings or Encodings()
        self.limits = limits or ReplyLimits()
        self.masker = (masker or SecretMasker()).with_secrets(key)
        # For token counts (truncation past its cheap bound): the Chat Completions form of recent contexts and its
        # counts, so the next turn of a chain or conversation translates and counts only its new items.
        self._count_form: PrefixMemo[ChatMessages] = PrefixMemo(memo_bytes)
        self._counts: PrefixMemo[MessagesCount] = PrefixMemo(memo_bytes)

    async def open(self, call: ModelCall) -> NativeStream:
        request = self.wire.request(call, self.profile)
        endpoint = self._endpoints.get(request.path)
        if endpoint is None:
            endpoint = Endpoint.parse(self._base + request.path)
            if len(self._endpoints) < 64:
                self._endpoints[request.path] = endpoint
        body = orjson.dumps(request.body)
        started = time.monotonic()
        try:
            try:
                resp = await self._http.request(
                    endpoint, "POST", self._headers, body, connect_timeout=self._upstream.connect_timeout_s,
                    read_timeout=self._upstream.read_timeout_s)
            except HttpError as exc:
                raise transport_error(self.model_id, exc) from None
            if resp.status != 200:
                error_body = await self._error_body(resp)
                status, headers = self.wire.error_answer(resp.status, error_body, resp.headers)
                raise status_error(self.model_id, status, error_body, headers, self.masker)
            if "content-encoding" in resp.headers and (coded := coded_reply(self.model_id, resp.headers)):
                resp.close()
                raise coded
        except UpstreamError as err:
            log_failure(self.model_id, err, started)
            raise
        return NativeStream(resp, call, self.wire.parser(call, self.limits.max_output_chars), self, started)

    async def _error_body(self, resp: Response) -> bytes:
        try:
            return await resp.read_prefix(_ERROR_BODY_BYTES)
        except HttpError:
            return b""
        finally:
            resp.release()

    async def count_tokens(self, call: ModelCall) -> TokenCount:
        """Counted over the call's Chat Completions form with the profile's offline tokenizer (or the estimate):
        the same text, framed alike. The request is translated first, so untranslatable input is the same 400."""
        self.wire.request(call, self.profile)
        body = chat_body(dataclasses.replace(call, stream=False), PROFILES["generic"], self._count_form)
        return await count_chat_tokens(self.profile.tokenizer, body, encodings=self._encodings, post=_no_endpoint,
                                       memo=self._counts, keep=call.continuable)


async def _no_endpoint(path: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    return None  # the server tokenizers (vllm, llamacpp) are Chat Completions servers': fall back to the estimate
