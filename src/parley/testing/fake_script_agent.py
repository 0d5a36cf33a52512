"""A scripted agent model for the fake Chat Completions upstream, for driving agent CLIs whose prompts carry more
than the user's words (Claude Code wraps them in system reminders): `ScriptUpstream` is
`fake_agent.AgentUpstream` with one more model.

  script-agent  finds the newest user message containing `SCRIPT:` followed by a JSON list of steps; a step is
                {"call": <function name>, "arguments": {...}} (one tool call; a list of such objects: calls made
                in parallel). Each assistant turn with tool calls after that message is a step done. Once every
                step is done it answers "done: <the last tool result>" (or "done" without one); without a script
                it answers "echo: <the last user text>". A step whose function is not offered ends the script.
  script-thinker  the same, each turn streaming `reasoning_content` ("Thinking about step <n>.") first, as
                reasoning models served by vLLM or DeepSeek do.

Requests are recorded in `requests` (inherited), so tests can read what the model was shown.
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
from aiohttp import web

from parley.testing.fake_agent import AgentUpstream
from parley.testing.fake_server import Threaded

SCRIPT_MODELS = frozenset({"script-agent", "script-thinker"})
_SCRIPT = re.compile(r"SCRIPT:\s*(\[.*\])", re.DOTALL)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content or () if isinstance(p, dict))


def _steps(text: str) -> list[list[dict[str, Any]]] | None:
    found = _SCRIPT.search(text)
    if found is None:
        return None
    try:
        steps = orjson.loads(found.group(1))
    except orjson.JSONDecodeError:
        return None
    return [step if isinstance(step, list) else [step] for step in steps] if isinstance(steps, list) else None


def plan(body: dict[str, Any]) -> tuple[str, list[dict[str, str]]]:
    """(answer text, tool calls) for one request."""
    messages = body.get("messages") or []
    offered = {(t.get("function") or {}).get("name") for t in body.get("tools") or ()}
    for at in range(len(messages) - 1, -1, -1):
        if messages[at].get("role") != "user":
            continue
        steps = _steps(_text(messages[at].get("content")))
        if steps is None:
            continue
        rounds = sum(1 for m in messages[at + 1:] if m.get("role") == "assistant" and m.get("tool_calls"))
        if rounds < len(steps) and all(call.get("call") in offered for call in steps[rounds]):
            return "", [{"name": str(call["call"]), "arguments": orjson.dumps(call.get("arguments") or {}).decode()}
                        for call in steps[rounds]]
        results = [_text(m.get("content")) for m in messages[at + 1:] if m.get("role") == "tool"]
        return ("done: " + results[-1]) if results else "done", []
    users = [m for m in messages if m.get("role") == "user"]
    return "echo: " + (_text(users[-1].get("content")) if users else ""), []


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    chunk = {"id": "chatcmpl-script", "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


class ScriptUpstream(AgentUpstream):
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json(loads=orjson.loads)
        model = str(body.get("model", ""))
        if model not in SCRIPT_MODELS:
            return await super()._chat(request)
        self.requests.append(body)
        text, calls = plan(body)
        finish = "tool_calls" if calls else "stop"
        tool_calls = [{"id": f"call_script{len(self.requests)}_{i}", "type": "function",
                       "function": {"name": c["name"], "arguments": c["arguments"]}} for i, c in enumerate(calls)]
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if model == "script-thinker":
                message["reasoning_content"] = f"Thinking about step {len(self.requests)}."
            if tool_calls:
                message["tool_calls"] = tool_calls
            return web.json_response({
                "id": "chatcmpl-script", "object": "chat.completion", "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                "usage": usage})
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await resp.prepare(request)
        await resp.write(_chunk(model, {"role": "assistant", "content": ""}))
        if model == "script-thinker":
            await resp.write(_chunk(model, {"reasoning_content": f"Thinking about step {len(self.requests)}."}))
        for word in re.findall(r"\S+\s*", text):
            await resp.write(_chunk(model, {"content": word}))
        for index, call in enumerate(tool_calls):
            await resp.write(_chunk(model, {"tool_calls": [{"index": index, **call}]}))
        await resp.write(_chunk(model, {}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(b"data: " + orjson.dumps({"id": "chatcmpl-script", "object": "chat.completion.chunk",
                                                       "created": int(time.time()), "model": model, "choices": [],
                                                       "usage": usage}) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


class ThreadedScriptUpstream(Threaded[ScriptUpstream]):
    """`ScriptUpstream` on its own event loop in a daemon thread (for servers in other processes)."""

    def __init__(self) -> None:
        super().__init__(ScriptUpstream, "fake-script-agent")
