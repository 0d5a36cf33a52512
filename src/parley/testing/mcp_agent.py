"""A fake model for the `mcp` tool loop: `McpAgentUpstream` is `fake_agent.AgentUpstream` (so every model of
`fake_upstream` too) with one model added:

  mcp-agent  the last user text is a JSON list of steps, each a list of calls made together in one turn:
             [[{"call": "<function>", "arguments": {...}}, ...], ...]. Step n is made once n turns with tool
             calls followed that user message (MCP calls replayed from earlier responses count, so a response
             that continues after an approval goes on with the next step). A call of a function that is not
             offered is left out. After the last step it answers "done: " + the tool results after that user
             message, joined by " | ". Plain text is echoed ("echo: <text>").

Streaming and non-streaming replies, as a Chat Completions server sends them; requests are recorded in
`requests` as by the fake upstream. `ThreadedMcpAgentUpstream` runs it in a thread (for servers in other processes).
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
from aiohttp import web

from parley.testing.fake_agent import AgentUpstream
from parley.testing.fake_server import Threaded

MODEL = "mcp-agent"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or () if isinstance(p, dict))


def plan(body: dict[str, Any]) -> tuple[str, list[dict[str, str]]]:
    """(answer text, tool calls) for one request to `mcp-agent`."""
    messages = body.get("messages") or []
    at = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    prompt = _text(messages[at].get("content")) if at >= 0 else ""
    after = messages[at + 1:]
    rounds = sum(1 for m in after if m.get("role") == "assistant" and m.get("tool_calls"))
    try:
        steps = orjson.loads(prompt)
    except orjson.JSONDecodeError:
        return "echo: " + prompt, []
    if not isinstance(steps, list) or not all(isinstance(step, list) for step in steps):
        return "echo: " + prompt, []
    offered = {(t.get("function") or {}).get("name") for t in body.get("tools") or ()}
    if rounds < len(steps):
        calls = [{"name": str(c["call"]), "arguments": orjson.dumps(c.get("arguments") or {}).decode()}
                 for c in steps[rounds] if isinstance(c, dict) and c.get("call") in offered]
        if calls:
            return "", calls
    results = [_text(m.get("content")) for m in after if m.get("role") == "tool"]
    return "done: " + " | ".join(results), []


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {"id": "chatcmpl-mcp", "object": "chat.completion.chunk", "created": int(time.time()), "model": MODEL,
             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _usage(body: dict[str, Any], text: str) -> dict[str, int]:
    prompt = sum(len(_text(m.get("content")).split()) for m in body.get("messages") or ()) + 3
    completion = len(text.split()) + 1
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class McpAgentUpstream(AgentUpstream):
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json(loads=orjson.loads)
        if body.get("model") != MODEL:
            return await super()._chat(request)
        self.requests.append(body)
        text, calls = plan(body)
        finish = "tool_calls" if calls else "stop"
        tool_calls: list[dict[str, Any]] = [
            {"id": f"call_mcp{len(self.requests)}_{i}", "type": "function",
             "function": {"name": c["name"], "arguments": c["arguments"]}} for i, c in enumerate(calls)]
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if tool_calls:
                message["tool_calls"] = tool_calls
            return web.json_response({
                "id": "chatcmpl-mcp", "object": "chat.completion", "created": int(time.time()), "model": MODEL,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                "usage": _usage(body, text)})
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await resp.prepare(request)
        await resp.write(_chunk({"role": "assistant", "content": ""}))
        for word in re.findall(r"\S+\s*", text):
            await resp.write(_chunk({"content": word}))
        for index, call in enumerate(tool_calls):
            arguments = call["function"]["arguments"]
            head = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
            await resp.write(_chunk({"tool_calls": [{"index": index, **head}]}))
            await resp.write(_chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}))
        await resp.write(_chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"id": "chatcmpl-mcp", "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": MODEL, "choices": [], "usage": _usage(body, text)}
            await resp.write(b"data: " + orjson.dumps(usage) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


class ThreadedMcpAgentUpstream(Threaded[McpAgentUpstream]):
    """`McpAgentUpstream` on its own event loop in a daemon thread (for servers in other processes)."""

    def __init__(self) -> None:
        super().__init__(McpAgentUpstream, "fake-mcp-agent")
