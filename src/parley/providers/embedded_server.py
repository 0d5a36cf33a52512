"""The embedded model's server, run in its child process: llama-cpp-python's OpenAI server, with forced tool
calls and structured output decoded under a grammar (embedded_grammar.py).

    python -m parley.providers.embedded_server --config_file PATH   (llama-cpp-python's ConfigFileSettings)

llama-cpp-python's own chat handler forces a named function only (not "required"), converts its schema on
every request, lets strings hold raw control characters, falls back to any JSON when the converter fails,
and reports a call cut by max_tokens as finished. This module registers a chat handler of its own (chat
format `parley-grammar`, set on every model of the config) that:

- decodes a named `tool_choice` as that function's arguments, `"required"` as
  `{"name": <a function>, "arguments": <its arguments>}` (streamed as a tool call once the name is written),
  and `response_format` `json_object` (with or without `schema`) as the message text, each under the
  grammar of its schema, built once per distinct schema (GrammarCache);
- adds nothing to the prompt: SmolLM2's chat template has no place for tools, and the functions written into
  a system message made its arguments worse (it copied the schema into them); the grammar's keys and
  function names guide it;
- ends a call cut by max_tokens with finish_reason `length`, not `tool_calls`.

A schema the grammar cannot hold the output to is refused before anything is generated: `GrammarGate` reads
each chat request first and answers 400 (code `unsupported_schema`, `param` naming the request field). A
streamed request's errors would otherwise come after its 200. The gate also answers `POST GRAMMAR_CHECK_PATH`
(the same fields, nothing generated: 200 or that 400), which Parley asks before it queues a background response.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn
from llama_cpp import Llama, llama_chat_format
from llama_cpp.server.app import create_app
from llama_cpp.server.settings import ConfigFileSettings, ServerSettings

from parley.providers.embedded_grammar import Constraint, GrammarCache, Refusal, choice_head
from parley.providers.embedded_launch import GRAMMAR_CHECK_PATH

CHAT_FORMAT = "parley-grammar"
_CHAT_PATH = "/v1/chat/completions"

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]
Chunk = dict[str, Any]


def _template_handler(llama: Llama) -> Any:
    """The chat handler llama-cpp-python would have chosen for this model (Llama.__init__): a known format its
    GGUF template matches, else the template itself, else llama-2."""
    guessed = llama_chat_format.guess_chat_format_from_gguf_metadata(llama.metadata)
    if guessed is not None:
        return llama_chat_format.get_chat_completion_handler(guessed)
    handler = llama._chat_handlers.get("chat_template.default")
    return handler or llama_chat_format.get_chat_completion_handler("llama-2")


def grammar_handler(cache: GrammarCache) -> Callable[..., Any]:
    """The chat handler of format CHAT_FORMAT (see the module's docstring)."""

    def handle(*, llama: Llama, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
               tool_choice: Any = None, response_format: Any = None, stream: bool = False, **rest: Any) -> Any:
        base = _template_handler(llama)
        found = cache.constraint(tools, tool_choice, response_format)
        if found is None:
            return base(llama=llama, messages=messages, tools=tools, tool_choice=tool_choice,
                        response_format=response_format, stream=stream, **rest)
        if isinstance(found, Refusal):  # GrammarGate refused the request before; this only guards
            raise ValueError(found.message)
        rest["grammar"] = found.grammar
        result = base(llama=llama, messages=messages, tools=tools, tool_choice=None, response_format=None,
                      stream=stream, **rest)
        if found.kind == "text":
            return result
        if stream:
            return _call_chunks(found, result)
        return _call_completion(found, result)

    return handle


def _head(text: str, names: tuple[str, ...]) -> tuple[str, int] | None:
    """The chosen function's name and where its arguments start, once the model wrote the whole head."""
    for name in names:
        head = choice_head(name)
        if text.startswith(head):
            return name, len(head)
    return None


def _chunk(base: Chunk, delta: dict[str, Any], finish: str | None = None) -> Chunk:
    return {"id": base["id"], "object": "chat.completion.chunk", "created": base["created"],
            "model": base["model"], "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                 "finish_reason": finish}]}


def _call_chunks(constraint: Constraint, chunks: Iterator[Chunk]) -> Iterator[Chunk]:
    """The template handler's text chunks as one streamed tool call. A choice's closing brace is held back (it
    ends the `{"name", "arguments"}` wrapper, not the arguments)."""
    call_id = "call_" + secrets.token_hex(12)
    text, sent, start = "", 0, 0
    name: str | None = None
    hold = 0 if constraint.kind == "arguments" else 2  # `}` and the arguments' optional trailing space
    for chunk in chunks:
        choice = chunk["choices"][0]
        text += (choice.get("delta") or {}).get("content") or ""
        finish = choice["finish_reason"]
        if name is None:
            found = ((constraint.function or "", 0) if constraint.kind == "arguments"
                     else _head(text, constraint.functions))
            if found is None:  # a choice whose name is not written yet
                if finish is not None:  # cut inside it: nothing was called
                    yield _chunk(chunk, {}, finish)
                    return
                continue
            name, start = found
            yield _chunk(chunk, {"role": "assistant", "content": None, "tool_calls": [
                {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}]})
        arguments = text[start:]
        if finish == "stop" and hold:
            arguments = arguments.rstrip().removesuffix("}")
        end = len(arguments) if finish is not None else max(len(arguments) - hold, sent)
        if end > sent:
            yield _chunk(chunk, {"tool_calls": [{"index": 0, "function": {"arguments": arguments[sent:end]}}]})
            sent = end
        if finish is not None:
            yield _chunk(chunk, {}, "tool_calls" if finish == "stop" else finish)
            return


def _call_completion(constraint: Constraint, completion: dict[str, Any]) -> dict[str, Any]:
    """The template handler's whole text answer as a chat completion with its tool call (the chunks above,
    folded)."""
    choice = completion["choices"][0]
    whole = {**completion, "choices": [{"delta": {"content": choice["message"].get("content") or ""},
                                        "finish_reason": choice["finish_reason"] or "stop"}]}
    name, call_id, arguments, finish = None, "", "", "stop"
    for chunk in _call_chunks(constraint, iter([whole])):
        choice = chunk["choices"][0]
        for call in choice["delta"].get("tool_calls") or ():
            name, call_id = call.get("function", {}).get("name") or name, call.get("id") or call_id
            arguments += call["function"].get("arguments") or ""
        finish = choice["finish_reason"] or finish
    message: dict[str, Any] = {"role": "assistant", "content": None}
    if name is not None:
        message["tool_calls"] = [{"id": call_id, "type": "function",
                                  "function": {"name": name, "arguments": arguments}}]
    return {"id": completion["id"], "object": "chat.completion", "created": completion["created"],
            "model": completion["model"], "usage": completion.get("usage"),
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}]}


class GrammarGate:
    """ASGI middleware: reads each chat request and refuses (400) one whose schema cannot become a grammar,
    before the server starts answering; the rest go on with the body replayed. Building the grammar here also
    puts it in the cache for the handler. `POST GRAMMAR_CHECK_PATH` is answered here alone: 200 or that 400."""

    def __init__(self, app: Asgi, cache: GrammarCache) -> None:
        self._app = app
        self._cache = cache

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        checking = scope["type"] == "http" and scope["path"] == GRAMMAR_CHECK_PATH and scope["method"] == "POST"
        if not checking and (scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != _CHAT_PATH):
            await self._app(scope, receive, send)
            return
        parts: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            parts.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(parts)
        refusal = self._refusal(body)
        if refusal is not None:
            error = {"error": {"message": refusal.message, "type": "invalid_request_error", "param": refusal.param,
                               "code": "unsupported_schema"}}
            await _answer(send, 400, error)
            return
        if checking:
            await _answer(send, 200, {"object": "grammar_check", "ok": True})
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # later: the client's disconnect
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self._app(scope, replay, send)

    def _refusal(self, body: bytes) -> Refusal | None:
        try:
            request = json.loads(body)
        except ValueError:
            return None  # the server answers it
        if not isinstance(request, dict):
            return None
        found = self._cache.constraint(request.get("tools"), request.get("tool_choice"),
                                       request.get("response_format"))
        return found if isinstance(found, Refusal) else None


async def _answer(send: Send, status: int, answer: dict[str, Any]) -> None:
    payload = json.dumps(answer).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m parley.providers.embedded_server")
    parser.add_argument("--config_file", required=True, help="llama-cpp-python's server config (JSON)")
    args = parser.parse_args(argv)
    try:
        config = ConfigFileSettings.model_validate_json(Path(args.config_file).read_bytes())
    except (OSError, ValueError) as exc:
        sys.exit(f"embedded_server: cannot read {args.config_file}: {exc}")
    server = ServerSettings.model_validate(config)
    models = [model.model_copy(update={"chat_format": CHAT_FORMAT}) for model in config.models]
    cache = GrammarCache()
    llama_chat_format.register_chat_completion_handler(CHAT_FORMAT)(grammar_handler(cache))
    app = create_app(server_settings=server, model_settings=models)
    uvicorn.run(GrammarGate(app, cache), host=server.host, port=server.port)


if __name__ == "__main__":
    main()
