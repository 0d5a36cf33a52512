"""A model that writes code, for the code_interpreter tool: `CoderUpstream` is the fake Chat Completions upstream
(testing/fake_agent.py, testing/fake_upstream.py) with one more model.

  code-agent  calls the offered `python` function with scripted code. The last user text is a JSON list of
              steps; a step is a code string (one call) or a list of code strings (calls made in parallel), e.g.
              ["x = 41", ["x + 1", "print('hi')"]]. Text that is not such a list is one step of code. Once the
              steps are done it answers "Result: <the last tool output, up to its list of files>", and when
              files were written ("[n] /mnt/data/...") it adds " See [n]." so the answer cites the first one.

Each request's tool results are also what tests read to see what the model was shown (`requests`).
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
from aiohttp import web

from parley.testing.fake_agent import AgentUpstream
from parley.testing.fake_server import Threaded

CODER_MODELS = frozenset({"code-agent"})


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or () if isinstance(p, dict))


def steps_of(prompt: str) -> list[list[str]]:
    try:
        data = orjson.loads(prompt)
    except orjson.JSONDecodeError:
        return [[prompt]]
    if not isinstance(data, list):
        return [[prompt]]
    return [[step] if isinstance(step, str) else [str(code) for code in step] for step in data]


def plan(body: dict[str, Any]) -> tuple[str, list[dict[str, str]]]:
    """(answer text, tool calls) for one request."""
    messages = body.get("messages") or []
    at = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    prompt = _text(messages[at].get("content")) if at >= 0 else ""
    rounds = sum(1 for m in messages[at + 1:] if m.get("role") == "assistant" and m.get("tool_calls"))
    steps = steps_of(prompt)
    offered = any((t.get("function") or {}).get("name") == "python" for t in body.get("tools") or ())
    if rounds < len(steps) and offered:
        return "", [{"name": "python", "arguments": orjson.dumps({"code": code}).decode()} for code in steps[rounds]]
    last = _text(messages[-1].get("content")) if messages and messages[-1].get("role") == "tool" else ""
    shown, _, files = last.partition("\n\nFiles written:")
    marker = re.search(r"^\[(\d+)\] /mnt/data/", files, re.MULTILINE)
    return "Result: " + shown + (f" See [{marker.group(1)}]." if marker else ""), []


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {"id": "chatcmpl-coder", "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


class CoderUpstream(AgentUpstream):
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json(loads=orjson.loads)
        model = str(body.get("model", ""))
        if model not in CODER_MODELS:
            return await super()._chat(request)
        self.requests.append(body)
        text, calls = plan(body)
        finish = "tool_calls" if calls else "stop"
        tool_calls = [{"id": f"call_coder{len(self.requests)}_{i}", "type": "function",
                       "function": {"name": c["name"], "arguments": c["arguments"]}} for i, c in enumerate(calls)]
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if tool_calls:
                message["tool_calls"] = tool_calls
            return web.json_response({
                "id": "chatcmpl-coder", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                "usage": usage})
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await resp.prepare(request)
        await resp.write(_chunk(model, {"role": "assistant", "content": ""}))
        for word in re.findall(r"\S+\s*", text):
            await resp.write(_chunk(model, {"content": word}))
        for index, call in enumerate(tool_calls):
            await resp.write(_chunk(model, {"tool_calls": [{"index": index, **call}]}))
        await resp.write(_chunk(model, {}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(b"data: " + orjson.dumps({"id": "chatcmpl-coder", "object": "chat.completion.chunk",
                                                       "created": int(time.time()), "model": model, "choices": [],
                                                       "usage": usage}) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


class ThreadedCoderUpstream(Threaded[CoderUpstream]):
    """`CoderUpstream` on its own event loop in a daemon thread (for servers in other processes)."""

    def __init__(self) -> None:
        super().__init__(CoderUpstream, "fake-coder")
