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
from typing import Any

import orjson
from aiohttp import web

from parley.testing.chat_reply import ChatReply, message_text, send_chat_reply
from parley.testing.fake_agent import AgentUpstream
from parley.testing.fake_server import Threaded

SCRIPT_MODELS = frozenset({"script-agent", "script-thinker"})
_SCRIPT = re.compile(r"SCRIPT:\s*(\[.*\])", re.DOTALL)


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
        steps = _steps(message_text(messages[at].get("content")))
        if steps is None:
            continue
        rounds = sum(1 for m in messages[at + 1:] if m.get("role") == "assistant" and m.get("tool_calls"))
        if rounds < len(steps) and all(call.get("call") in offered for call in steps[rounds]):
            return "", [{"name": str(call["call"]), "arguments": orjson.dumps(call.get("arguments") or {}).decode()}
                        for call in steps[rounds]]
        results = [message_text(m.get("content")) for m in messages[at + 1:] if m.get("role") == "tool"]
        return ("done: " + results[-1]) if results else "done", []
    users = [m for m in messages if m.get("role") == "user"]
    return "echo: " + (message_text(users[-1].get("content")) if users else ""), []


_USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


class ScriptUpstream(AgentUpstream):
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json(loads=orjson.loads)
        model = str(body.get("model", ""))
        if model not in SCRIPT_MODELS:
            return await super()._chat(request)
        self.requests.append(body)
        text, calls = plan(body)
        number = len(self.requests)
        thought = f"Thinking about step {number}." if model == "script-thinker" else None
        reply = ChatReply("script", model, number, text, calls, _USAGE, reasoning=thought)
        return await send_chat_reply(request, body, reply)


class ThreadedScriptUpstream(Threaded[ScriptUpstream]):
    """`ScriptUpstream` on its own event loop in a daemon thread (for servers in other processes)."""

    def __init__(self) -> None:
        super().__init__(ScriptUpstream, "fake-script-agent")
