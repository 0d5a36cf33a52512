"""The Chat Completions provider: one upstream call, its chunks (or single body) -> canonical model events."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import orjson

from parley.errors import UpstreamError
from parley.providers.base import (
    Finish,
    FinishReason,
    ModelCall,
    ModelEvent,
    ReasoningDelta,
    TextDelta,
    TokenCount,
    ToolCallDelta,
    Usage,
)
from parley.providers.chat_request import chat_body
from parley.providers.http1 import Endpoint, Http1Pool, HttpError, Response
from parley.providers.profiles import Profile
from parley.providers.tokens import Encodings, count_chat_tokens
from parley.providers.upstream_http import TRANSPORT_ERRORS, status_error, transport_error

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def _logprobs(choice: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Chat Completions logprobs.content[] -> Responses output_text logprobs (token, bytes, logprob, top)."""
    lp = choice.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if not content:
        return None
    return [
        {
            "token": entry["token"],
            "bytes": entry.get("bytes") or list(entry["token"].encode()),
            "logprob": entry["logprob"],
            "top_logprobs": [
                {"token": t["token"], "bytes": t.get("bytes") or list(t["token"].encode()), "logprob": t["logprob"]}
                for t in entry.get("top_logprobs") or ()
            ],
        }
        for entry in content
    ]


def _usage(data: dict[str, Any]) -> Usage:
    prompt_details = data.get("prompt_tokens_details") or {}
    completion_details = data.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=int(data.get("prompt_tokens") or 0),
        output_tokens=int(data.get("completion_tokens") or 0),
        cached_tokens=int(prompt_details.get("cached_tokens") or 0),
        reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
    )


class _ChunkParser:
    """Folds the fields of one choice's delta into canonical events."""

    def __init__(self, profile: Profile) -> None:
        self.reasoning_field = profile.reasoning_field
        self.finish: FinishReason | None = None
        self.usage: Usage | None = None
        self.deltas = 0

    def events(self, chunk: dict[str, Any]) -> list[ModelEvent]:
        out: list[ModelEvent] = []
        usage = chunk.get("usage")
        if usage:
            self.usage = _usage(usage)
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or choice.get("message") or {}
            self._delta(delta, choice, out)
            reason = choice.get("finish_reason")
            if reason:
                self.finish = _FINISH.get(reason, "stop")
        self.deltas += len(out)
        return out

    def _delta(self, delta: dict[str, Any], choice: dict[str, Any], out: list[ModelEvent]) -> None:
        if self.reasoning_field:
            reasoning = delta.get(self.reasoning_field)
            if reasoning:
                out.append(ReasoningDelta(reasoning))
        content = delta.get("content")
        if content:
            out.append(TextDelta(content, _logprobs(choice)))
        for position, call in enumerate(delta.get("tool_calls") or ()):
            function = call.get("function") or {}
            out.append(
                ToolCallDelta(
                    index=call.get("index", position),
                    arguments=function.get("arguments") or "",
                    call_id=call.get("id"),
                    name=function.get("name"),
                )
            )


class _UpstreamStream:
    """Iterates the events of one open upstream response; closing it releases the connection."""

    def __init__(self, resp: Response, call: ModelCall, profile: Profile, model: str) -> None:
        self._resp = resp
        self._call = call
        self._parser = _ChunkParser(profile)
        self._model = model

    async def aclose(self) -> None:
        self._resp.close()

    def __aiter__(self) -> AsyncIterator[list[ModelEvent]]:
        return self._events()

    async def _events(self) -> AsyncIterator[list[ModelEvent]]:
        try:
            if self._call.stream:
                async for batch in self._sse():
                    yield batch
            else:
                body = await self._resp.read()
                yield self._parser.events(orjson.loads(body))
        except TRANSPORT_ERRORS as exc:
            raise transport_error(self._model, exc) from None
        except orjson.JSONDecodeError:
            raise UpstreamError.bad_gateway(f"the upstream for model '{self._model}' sent invalid JSON.") from None
        finally:
            self._resp.release()
        parser = self._parser
        if parser.finish is None:
            raise UpstreamError.bad_gateway(f"the upstream for model '{self._model}' ended the stream early.")
        yield [parser.usage or self._estimated_usage(), Finish(parser.finish)]

    async def _sse(self) -> AsyncIterator[list[ModelEvent]]:
        """One batch of events per network read: chunks that arrive together are handled (and written to the
        client) together, instead of one line, one event and one socket write at a time."""
        parser = self._parser
        pending = b""
        async for data in self._resp.iter_chunks():
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
                if chunk.get("error"):
                    raise UpstreamError.bad_gateway(
                        f"the upstream for model '{self._model}' failed mid-stream: "
                        f"{str(chunk['error'].get('message', chunk['error']))[:300]}"
                    )
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

    async def _post(self, endpoint: Endpoint, body: bytes) -> Response:
        try:
            return await self._http.request(endpoint, "POST", self._headers, body,
                                            connect_timeout=self._connect_timeout, read_timeout=self._read_timeout)
        except HttpError as exc:
            raise transport_error(self._model_id, exc) from None

    async def _error_body(self, resp: Response) -> bytes:
        try:
            return await resp.read()
        except HttpError:
            return b""
        finally:
            resp.release()

    async def open(self, call: ModelCall) -> _UpstreamStream:
        resp = await self._post(self._endpoint, orjson.dumps(chat_body(call, self.profile)))
        if resp.status != 200:
            raise status_error(self._model_id, resp.status, await self._error_body(resp), resp.headers)
        return _UpstreamStream(resp, call, self.profile, self._model_id)

    async def count_tokens(self, call: ModelCall) -> TokenCount:
        body = chat_body(dataclasses.replace(call, stream=False), self.profile)
        return await count_chat_tokens(self.profile.tokenizer, body, encodings=self._encodings, post=self._post_json)

    async def _post_json(self, path: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """POST to the server root; None when the server has no such endpoint (404/405)."""
        resp = await self._post(Endpoint.parse(self._root + path), orjson.dumps(payload))
        body = await self._error_body(resp)
        if resp.status in (404, 405):
            return None
        if resp.status != 200:
            raise status_error(self._model_id, resp.status, body, resp.headers)
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("count"), int):
            raise UpstreamError.bad_gateway(f"the upstream for model '{self._model_id}' sent an invalid token count.")
        return answer
