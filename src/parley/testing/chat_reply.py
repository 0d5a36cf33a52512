"""What the scripted agent models of the fake Chat Completions upstream share: one answer (text and tool calls)
written as a `chat.completion`, or streamed as `chat.completion.chunk`s (a word a chunk, then the calls, the finish,
a usage chunk when `stream_options.include_usage` asks, and `data: [DONE]`)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web


def message_text(content: Any) -> str:
    """A Chat Completions message's text, whether its content is a string or a list of parts."""
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or () if isinstance(p, dict))


def word_usage(body: dict[str, Any], text: str) -> dict[str, int]:
    """Usage counted in words: the request's messages (+3) and the answer (+1)."""
    prompt = sum(len(message_text(m.get("content")).split()) for m in body.get("messages") or ()) + 3
    completion = len(text.split()) + 1
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


@dataclass(frozen=True, slots=True)
class ChatReply:
    """One scripted answer. `name` makes the ids (`chatcmpl-<name>`, `call_<name><number>_<i>`)."""

    name: str
    model: str
    number: int  # which request of the fake this answers
    text: str
    calls: list[dict[str, str]]  # {"name", "arguments"}
    usage: dict[str, int]
    reasoning: str | None = None  # as `reasoning_content`
    split_arguments: bool = False  # stream each call's arguments in a chunk of their own

    def tool_calls(self) -> list[dict[str, Any]]:
        return [{"id": f"call_{self.name}{self.number}_{i}", "type": "function",
                 "function": {"name": c["name"], "arguments": c["arguments"]}} for i, c in enumerate(self.calls)]

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {"id": f"chatcmpl-{self.name}", "object": "chat.completion.chunk", "created": int(time.time()),
                 "model": self.model,
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return b"data: " + orjson.dumps(chunk) + b"\n\n"


async def send_chat_reply(request: web.Request, body: dict[str, Any], reply: ChatReply) -> web.StreamResponse:
    """Answer `body` (already read) with `reply`, as JSON or as a stream as the request asks."""
    finish = "tool_calls" if reply.calls else "stop"
    tool_calls = reply.tool_calls()
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if reply.reasoning is not None:
            message["reasoning_content"] = reply.reasoning
        if tool_calls:
            message["tool_calls"] = tool_calls
        return web.json_response({
            "id": f"chatcmpl-{reply.name}", "object": "chat.completion", "created": int(time.time()),
            "model": reply.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": reply.usage})
    resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
    await resp.prepare(request)
    await resp.write(reply.chunk({"role": "assistant", "content": ""}))
    if reply.reasoning is not None:
        await resp.write(reply.chunk({"reasoning_content": reply.reasoning}))
    for word in re.findall(r"\S+\s*", reply.text):
        await resp.write(reply.chunk({"content": word}))
    for index, call in enumerate(tool_calls):
        if reply.split_arguments:
            head = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
            await resp.write(reply.chunk({"tool_calls": [{"index": index, **head}]}))
            await resp.write(reply.chunk({"tool_calls": [{"index": index,
                                                          "function": {"arguments": call["function"]["arguments"]}}]}))
        else:
            await resp.write(reply.chunk({"tool_calls": [{"index": index, **call}]}))
    await resp.write(reply.chunk({}, finish))
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {"id": f"chatcmpl-{reply.name}", "object": "chat.completion.chunk", "created": int(time.time()),
                 "model": reply.model, "choices": [], "usage": reply.usage}
        await resp.write(b"data: " + orjson.dumps(usage) + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp
