"""Chat Completions to the embedded child: the model's own defaults, always streamed, crashes told as 503s.

- A request that leaves `max_output_tokens`, `temperature` or `top_p` unset gets the configured defaults
  (a 135M model rambles for minutes at the server's temperature 1.0 and no cap).
- The child is always asked to stream; a non-streaming response folds the same events. llama-cpp-python
  stops a *streamed* generation when its client goes away, while a non-streamed one runs to the end in a
  worker thread (server/app.py `create_chat_completion`), holding the one model: closing the connection on
  a client disconnect or a background cancel only frees the model when the child streams.
- `logprobs` requests go to the child's second alias, loaded with logits for every token
  (embedded_launch.py); the others never pay that memory.
- A forced call (a named `tool_choice` or "required") and `text.format` are decoded under a grammar in the
  child (embedded_server.py); a schema it cannot express comes back as the child's 400 `unsupported_schema`,
  told here in the request's own terms (`text.format.schema`, the function by name). `check` asks the child the
  same without generating (its grammar check), so a background response's create is that 400 too, before
  anything is queued: the refusal needs llama.cpp (its grammar parser), which only the child loads.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson

from parley.config import EmbeddedConfig
from parley.errors import ParleyError, UnsupportedSchema, UpstreamError
from parley.providers.base import Finish, ModelCall, ModelEvent, ModelStream, TokenCount
from parley.providers.chat_completions import ChatCompletionsProvider, ReplyLimits
from parley.providers.chat_request import chat_body
from parley.providers.embedded import Child, EmbeddedServer
from parley.providers.embedded_launch import GRAMMAR_CHECK_PATH, LOGPROBS_ALIAS_SUFFIX
from parley.providers.http1 import Endpoint, Http1Pool, HttpError
from parley.providers.profiles import PROFILES
from parley.providers.redact import SecretMasker
from parley.providers.tokens import Encodings
from parley.providers.upstream_http import status_error, transport_error


def child_call(call: ModelCall, cfg: EmbeddedConfig) -> ModelCall:
    """The call as the child gets it: defaults where the request set none, streamed, the right alias."""
    return dataclasses.replace(
        call,
        upstream_model=call.upstream_model + (LOGPROBS_ALIAS_SUFFIX if call.logprobs else ""),
        max_output_tokens=call.max_output_tokens or cfg.max_output_tokens,
        temperature=cfg.temperature if call.temperature is None else call.temperature,
        top_p=cfg.top_p if call.top_p is None else call.top_p,
        stream=True,
    )


# llama.cpp built without its vision library (LLAVA_BUILD=OFF) and a text-only model: an image is a 400 here.
# The child forces "required" too (embedded_server.py: a grammar choosing among the functions).
EMBEDDED_PROFILE = dataclasses.replace(PROFILES["llamacpp"], vision=False, tool_choice_required=True)
_TOOL_PARAM = re.compile(r"tools\[(\d+)\]")
_DECODING_FIELDS = ("tools", "tool_choice", "response_format")
_CHECK_TIMEOUT_S = 30.0  # the child answers a check from its event loop, never behind a generation


def grammar_fields(call: ModelCall) -> dict[str, Any] | None:
    """The fields of the child's chat request that decide its grammar, as `open` sends them; None when the call
    is decoded freely or under a grammar that always exists (`json_object`), so there is nothing to check."""
    forced = bool(call.tools) and (call.tool_choice == "required" or isinstance(call.tool_choice, dict))
    if not forced and (call.text_format or {}).get("type") != "json_schema":
        return None
    body = chat_body(dataclasses.replace(call, items=[], instructions=None), EMBEDDED_PROFILE)
    return {name: body[name] for name in _DECODING_FIELDS if name in body}


def unsupported_schema(err: ParleyError, call: ModelCall) -> ParleyError:
    """The child's 400 for a schema its grammar cannot express, naming the Responses parameter."""
    if not isinstance(err, UpstreamError) or err.code != "unsupported_schema":
        return err
    try:
        said = orjson.loads(err.upstream_text or "")["error"]
        message, param = str(said["message"]), str(said.get("param") or "")
    except (orjson.JSONDecodeError, KeyError, TypeError):
        message, param = err.message, err.param or ""
    if param.startswith("response_format"):
        return UnsupportedSchema(message, "text.format.schema")
    tool = _TOOL_PARAM.match(param)
    if tool is not None and int(tool.group(1)) < len(call.tools):
        function = str(call.tools[int(tool.group(1))]["name"])
        return UnsupportedSchema(f"Function '{function}', its parameters: {message}", "tools", function)
    return UnsupportedSchema(message, "tool_choice" if param == "tool_choice" else "tools")


class _ChildStream:
    """The delegate's stream; tells the server when the child answered to the end, and explains a crash."""

    def __init__(self, stream: ModelStream, server: EmbeddedServer, child: Child) -> None:
        self._stream = stream
        self._server = server
        self._child = child

    def __aiter__(self) -> AsyncIterator[list[ModelEvent]]:
        return self._events()

    async def _events(self) -> AsyncIterator[list[ModelEvent]]:
        try:
            async for batch in self._stream:
                if any(isinstance(event, Finish) for event in batch):
                    self._server.note_served(self._child)
                yield batch
        except ParleyError as err:
            raise await self._server.explain(err, self._child) from None

    async def aclose(self) -> None:
        await self._stream.aclose()


class EmbeddedProvider:
    """The embedded model as a provider: the Chat Completions provider (profile `llamacpp`) on the child."""

    def __init__(
        self, server: EmbeddedServer, http: Http1Pool, cfg: EmbeddedConfig, encodings: Encodings | None = None,
        limits: ReplyLimits | None = None,
    ) -> None:
        self._server = server
        self._http = http
        self._cfg = cfg
        self._encodings = encodings
        self._limits = limits
        self._delegate: ChatCompletionsProvider | None = None
        self._delegate_url = ""

    async def open(self, call: ModelCall) -> ModelStream:
        child = await self._server.ready()
        try:
            stream = await self._provider(child, call).open(child_call(call, self._cfg))
        except ParleyError as err:
            raise await self._server.explain(unsupported_schema(err, call), child) from None
        return _ChildStream(stream, self._server, child)

    async def check(self, call: ModelCall) -> None:
        """Whether the child can decode `call` under its grammar, asked without generating: raises the
        UnsupportedSchema `open` would. For a background response's create, whose run opens the call only after
        it is queued. Free for a call with no schema to hold the output to; a child with no grammar check (a
        configured `server_command` of another server) is not asked."""
        fields = grammar_fields(call)
        if fields is None:
            return
        child = await self._server.ready()
        endpoint = Endpoint.parse(child.base_url.removesuffix("/v1") + GRAMMAR_CHECK_PATH)
        model = self._cfg.model_id
        try:
            resp = await self._http.request(endpoint, "POST", {"content-type": "application/json"},
                                            orjson.dumps(fields), connect_timeout=5, read_timeout=_CHECK_TIMEOUT_S)
            try:
                status, body = resp.status, await resp.read_prefix(65536)
            finally:
                resp.release()
        except HttpError as exc:
            raise await self._server.explain(transport_error(model, exc), child) from None
        if status == 200 or status in (404, 405):
            return
        err = status_error(model, status, body, resp.headers, SecretMasker())
        raise await self._server.explain(unsupported_schema(err, call), child)

    async def count_tokens(self, call: ModelCall) -> TokenCount:
        """The child's own tokenizer (llama-cpp-python's /extras/tokenize/count), see providers/tokens.py."""
        child = await self._server.ready()
        return await self._provider(child, call).count_tokens(call)

    def _provider(self, child: Child, call: ModelCall) -> ChatCompletionsProvider:
        if self._delegate is None or self._delegate_url != child.base_url:
            self._delegate = ChatCompletionsProvider(
                model_id=self._cfg.model_id, base_url=child.base_url, api_key=None, profile=EMBEDDED_PROFILE,
                http=self._http, connect_timeout_s=5, read_timeout_s=600, encodings=self._encodings,
                limits=self._limits,
            )
            self._delegate_url = child.base_url
        return self._delegate
