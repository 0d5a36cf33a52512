"""The Chat Completions provider: one upstream call, its chunks (or single body) -> canonical model events."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from parley.errors import UpstreamError
from parley.providers.base import Finish, ModelCall, ModelEvent, TokenCount, Usage
from parley.providers.chat_chunks import ChunkParser, MalformedReply, TooMuchOutput
from parley.providers.chat_request import ChatMessages, chat_body
from parley.providers.http1 import BodyTooLarge, Endpoint, Http1Pool, HttpError, Response
from parley.providers.prefix_memo import PrefixMemo
from parley.providers.profiles import Profile
from parley.providers.redact import SecretMasker
from parley.providers.tokens import Encodings, MessagesCount, count_chat_tokens
from parley.providers.upstream_http import (
    TRANSPORT_ERRORS,
    coded_reply,
    error_report,
    log_failure,
    reply_too_large,
    reported_error,
    status_error,
    transport_error,
)

_ERROR_BODY_BYTES = 64 * 1024  # of a non-200 answer: its start says what went wrong


@dataclass(frozen=True, slots=True)
class ReplyLimits:
    """How much of one upstream reply Parley takes (config: max_upstream_reply_bytes, max_output_chars).
    Past either, the reply is cut with a 502 / `response.failed`: memory stays bounded whatever the upstream
    sends (and the terminal events, which repeat the whole text by spec, stay bounded with it)."""

    max_bytes: int = 64 * 1024 * 1024  # read from the wire: a whole body, or a whole stream
    max_output_chars: int = 4_000_000  # of text, reasoning and tool-call arguments


@dataclass(frozen=True, slots=True)
class _CallContext:
    """What a stream needs to know about its call besides the response: for errors and the log."""

    model: str
    profile: Profile
    limits: ReplyLimits
    masker: SecretMasker
    started: float  # time.monotonic() when the request was sent


class _UpstreamStream:
    """Iterates the events of one open upstream response; closing it releases the connection."""

    def __init__(self, resp: Response, call: ModelCall, context: _CallContext) -> None:
        self._resp = resp
        self._call = call
        self._context = context
        self._parser = ChunkParser(context.profile, context.limits.max_output_chars)
        self._model = context.model

    async def aclose(self) -> None:
        self._resp.close()

    def __aiter__(self) -> AsyncIterator[list[ModelEvent]]:
        return self._events()

    async def _events(self) -> AsyncIterator[list[ModelEvent]]:
        parser = self._parser
        try:
            try:
                if self._call.stream:
                    async for batch in self._sse():
                        yield batch
                else:
                    body = orjson.loads(await self._resp.read(self._context.limits.max_bytes))
                    self._check_error(body)
                    yield parser.events(body)
            except TRANSPORT_ERRORS as exc:
                raise transport_error(self._model, exc) from None
            except orjson.JSONDecodeError:
                raise UpstreamError.bad_gateway(
                    f"The upstream for model '{self._model}' sent invalid JSON.") from None
            except MalformedReply as exc:
                err = UpstreamError.bad_gateway(
                    f"The upstream for model '{self._model}' sent a reply of the wrong shape: {exc}.")
                raise err from None
            except TooMuchOutput:
                limit = self._context.limits.max_output_chars
                raise reply_too_large(self._model, f"more than {limit} characters of output "
                                                   "(max_output_chars)") from None
            finally:
                self._resp.release()
            if parser.finish is None:
                raise UpstreamError.bad_gateway(
                    f"The upstream for model '{self._model}' ended the stream early.")
        except UpstreamError as err:
            log_failure(self._model, err, self._context.started)
            raise
        yield [parser.usage or self._estimated_usage(), Finish(parser.finish)]

    def _check_error(self, chunk: object) -> None:
        """An error the upstream reports in a 200 reply (mid-stream, or as the whole body)."""
        if isinstance(chunk, dict) and chunk.get("error") is not None:
            report = error_report(chunk)
            if report is not None:
                raise reported_error(self._model, report, self._context.masker)

    async def _sse(self) -> AsyncIterator[list[ModelEvent]]:
        """One batch of events per network read: chunks that arrive together are handled (and written to the
        client) together, instead of one line, one event and one socket write at a time. At most
        `max_bytes` are read in all (a stream that never ends, or a line that never does, is cut)."""
        parser = self._parser
        pending = b""
        received = 0
        max_bytes = self._context.limits.max_bytes
        async for data in self._resp.iter_event_stream():
            received += len(data)
            if received > max_bytes:
                raise BodyTooLarge(max_bytes)
            *lines, pending = (pending + data).split(b"\n")
            batch: list[ModelEvent] = []
            for raw in lines:
                if not raw.startswith(b"data:"):
                    continue
                payload = raw[5:].strip()
                if payload == b"[DONE]":
                    if batch:
                        yield batch
                    return
                chunk = orjson.loads(payload)
                if isinstance(chunk, dict) and "error" in chunk:
                    self._check_error(chunk)
                batch.extend(parser.events(chunk))
            if batch:
                yield batch

    def _estimated_usage(self) -> Usage:
        # Servers without a usage chunk (llama.cpp): one delta is one token; input estimated at ~4 chars/token.
        chars = sum(len(orjson.dumps(i.get("content", ""))) for i in self._call.items)
        chars += len(self._call.instructions or "")
        return Usage(input_tokens=max(1, chars // 4), output_tokens=self._parser.deltas)


class ChatCompletionsProvider:
    """An OpenAI-compatible Chat Completions endpoint described by a profile."""

    def __init__(
        self, *, model_id: str, base_url: str, api_key: str | None, profile: Profile, http: Http1Pool,
        connect_timeout_s: float = 10.0, read_timeout_s: float = 600.0, encodings: Encodings | None = None,
        limits: ReplyLimits | None = None, masker: SecretMasker | None = None, memo_bytes: int = 0,
    ) -> None:
        self._model_id = model_id
        self._endpoint = Endpoint.parse(base_url.rstrip("/") + "/chat/completions")
        # vLLM's /tokenize and llama-cpp-python's /extras/tokenize live at the server root, not under /v1.
        self._root = base_url.rstrip("/").removesuffix("/v1")
        self._headers = {"content-type": "application/json", "accept": "application/json"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self.profile = profile
        self._http = http
        self._connect_timeout = connect_timeout_s
        self._read_timeout = read_timeout_s
        # The app passes its shared cache; a provider built alone (tests, tools) gets its own.
        self._encodings = encodings or Encodings()
        self._limits = limits or ReplyLimits()
        # Masks what the upstream says before anyone sees it: every configured key, this one included.
        self._masker = (masker or SecretMasker()).with_secrets(api_key)
        # The translated messages of recent contexts: the next turn of a chain translates only its new items.
        self.memo: PrefixMemo[ChatMessages] = PrefixMemo(memo_bytes)
        # Their token counts, for truncation past its cheap bound: the next turn counts only its new messages.
        self.count_memo: PrefixMemo[MessagesCount] = PrefixMemo(memo_bytes)

    async def _post(self, endpoint: Endpoint, body: bytes) -> Response:
        try:
            return await self._http.request(endpoint, "POST", self._headers, body,
                                            connect_timeout=self._connect_timeout, read_timeout=self._read_timeout)
        except HttpError as exc:
            raise transport_error(self._model_id, exc) from None

    async def _error_body(self, resp: Response) -> bytes:
        try:
            return await resp.read_prefix(_ERROR_BODY_BYTES)
        except HttpError:
            return b""
        finally:
            resp.release()

    async def open(self, call: ModelCall) -> _UpstreamStream:
        body = orjson.dumps(chat_body(call, self.profile, self.memo))
        started = time.monotonic()
        try:
            resp = await self._post(self._endpoint, body)
            if resp.status != 200:
                raise status_error(self._model_id, resp.status, await self._error_body(resp), resp.headers,
                                   self._masker)
            if "content-encoding" in resp.headers and (coded := coded_reply(self._model_id, resp.headers)):
                resp.close()
                raise coded
        except UpstreamError as err:
            log_failure(self._model_id, err, started)
            raise
        context = _CallContext(self._model_id, self.profile, self._limits, self._masker, started)
        return _UpstreamStream(resp, call, context)

    async def count_tokens(self, call: ModelCall) -> TokenCount:
        body = chat_body(dataclasses.replace(call, stream=False), self.profile, self.memo)
        return await count_chat_tokens(self.profile.tokenizer, body, encodings=self._encodings, post=self._post_json,
                                       memo=self.count_memo, keep=call.continuable)

    async def _post_json(self, path: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """POST to the server root; None when the server has no such endpoint (404/405)."""
        started = time.monotonic()
        try:
            resp = await self._post(Endpoint.parse(self._root + path), orjson.dumps(payload))
            body = await self._error_body(resp)
            if resp.status in (404, 405):
                return None
            if resp.status != 200:
                raise status_error(self._model_id, resp.status, body, resp.headers, self._masker)
            try:
                answer = orjson.loads(body)
            except orjson.JSONDecodeError:
                answer = None
            if not isinstance(answer, dict) or type(answer.get("count")) is not int:
                raise UpstreamError.bad_gateway(
                    f"The upstream for model '{self._model_id}' sent an invalid token count.")
        except UpstreamError as err:
            log_failure(self._model_id, err, started)
            raise
        return answer
