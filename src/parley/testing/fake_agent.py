"""Agent-like models for the fake Chat Completions upstream: they call the tools a client offers and answer
from the results (for the web_search tool loop and for driving agent CLIs such as Codex).

`AgentUpstream` is `fake_upstream.FakeUpstream` with these models added (every other model behaves as there):

  web-agent    calls `web_search`. The last user text is either plain text (one search for it) or a JSON list
               of steps, each a list of argument objects (one call each, made in parallel), e.g.
               [[{"query": "paris"}], [{"action": "open_page", "url": "..."}]]. After the last step it answers
               "The answer is here [n]." citing the first marker of the last tool result (or "Nothing to cite.").
  shell-agent  calls `exec_command` (Codex's shell tool) with {"cmd": <the text after "run:" in the last user
               text>}; after the tool result it answers "done: <result>". Without such a tool it echoes.
  call-agent   the last user text is {"call": <function name>, "arguments": {...}}: it calls that function (if
               offered) with those arguments; once a tool result came back it answers "done: <result>", adding
               " (with an image)" when an image follows the result (a computer-use screenshot).
               A JSON list of such objects is a plan, one step per turn (the next one once the last turn's results
               came back; a step that is a list makes those calls in parallel; "no such tool: <name>" if one is not
               offered then), then "done: <last result>".
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
from aiohttp import web

from parley.testing.chat_reply import ChatReply, message_text, send_chat_reply, word_usage
from parley.testing.fake_server import Threaded
from parley.testing.fake_upstream import FakeUpstream

AGENT_MODELS = frozenset({"web-agent", "shell-agent", "call-agent"})


def _last_user(messages: list[dict[str, Any]]) -> tuple[int, str]:
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "user":
            return index, message_text(messages[index].get("content"))
    return -1, ""


def _offered(body: dict[str, Any], name: str) -> bool:
    return any((t.get("function") or {}).get("name") == name for t in body.get("tools") or ())


def _steps(prompt: str) -> list[list[dict[str, Any]]]:
    try:
        steps = orjson.loads(prompt)
    except orjson.JSONDecodeError:
        return [[{"query": prompt}]]
    if isinstance(steps, list) and all(isinstance(step, list) for step in steps):
        return steps
    return [[{"query": prompt}]]


def plan(model: str, body: dict[str, Any]) -> tuple[str, list[dict[str, str]]]:
    """(answer text, tool calls) for one request to an agent model."""
    messages = body.get("messages") or []
    at, prompt = _last_user(messages)
    rounds = sum(1 for m in messages[at + 1:] if m.get("role") == "assistant" and m.get("tool_calls"))
    last_tool = message_text(messages[-1].get("content")) if messages and messages[-1].get("role") == "tool" else None
    if model == "call-agent":
        return _call_agent(body, messages, at, prompt)
    if model == "shell-agent":
        if last_tool is not None:
            return "done: " + last_tool, []
        if _offered(body, "exec_command") and "run:" in prompt:
            command = prompt.split("run:", 1)[1].strip()
            return "", [{"name": "exec_command", "arguments": orjson.dumps({"cmd": command}).decode()}]
        return "echo: " + prompt, []
    steps = _steps(prompt)
    if rounds < len(steps) and _offered(body, "web_search"):
        return "", [{"name": "web_search", "arguments": orjson.dumps(args).decode()} for args in steps[rounds]]
    marker = re.search(r"\[(\d+)\]", last_tool or "")
    return (f"The answer is here [{marker.group(1)}]." if marker else "Nothing to cite."), []


def _call_agent(body: dict[str, Any], messages: list[dict[str, Any]], at: int,
                prompt: str) -> tuple[str, list[dict[str, str]]]:
    # The screenshot after a computer call is a user message without text: the request is the last one with text.
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") == "user" and message_text(messages[index].get("content")).strip():
            at, prompt = index, message_text(messages[index].get("content"))
            break
    results = [m for m in messages[at + 1:] if m.get("role") == "tool"]
    try:
        steps = orjson.loads(prompt)
    except orjson.JSONDecodeError:
        steps = None
    if isinstance(steps, list) and all(isinstance(step, dict | list) for step in steps):  # one step per turn
        turns = sum(1 for m in messages[at + 1:] if m.get("role") == "assistant" and m.get("tool_calls"))
        if turns < len(steps):
            step = steps[turns]
            calls = step if isinstance(step, list) else [step]  # a list: parallel calls in one turn
            for one in calls:
                if not _offered(body, str(one.get("call"))):
                    return f"no such tool: {one.get('call')}", []
            return "", [{"name": str(one["call"]), "arguments": orjson.dumps(one.get("arguments") or {}).decode()}
                        for one in calls]
        return "done: " + message_text(results[-1].get("content")), []
    if results:
        image = any(isinstance(p, dict) and p.get("type") == "image_url"
                    for m in messages[at + 1:] if m.get("role") == "user" for p in m.get("content") or ())
        return "done: " + message_text(results[-1].get("content")) + (" (with an image)" if image else ""), []
    try:
        ask = orjson.loads(prompt)
    except orjson.JSONDecodeError:
        return "echo: " + prompt, []
    if not isinstance(ask, dict) or not _offered(body, str(ask.get("call"))):
        return "no such tool", []
    return "", [{"name": str(ask["call"]), "arguments": orjson.dumps(ask.get("arguments") or {}).decode()}]


class AgentUpstream(FakeUpstream):
    def __init__(self) -> None:
        super().__init__()
        # When `hold` is set to an event, an agent turn that follows tool results is recorded, sets `held`, then
        # waits for `hold`: a test can act while a response's model turn after its tools is running.
        self.hold: asyncio.Event | None = None
        self.held = asyncio.Event()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json(loads=orjson.loads)
        model = str(body.get("model", ""))
        if model not in AGENT_MODELS:
            return await super()._chat(request)  # aiohttp keeps the body: it can be read again
        self.requests.append(body)
        messages = body.get("messages") or []
        if self.hold is not None and messages and messages[-1].get("role") == "tool":
            self.held.set()
            await self.hold.wait()
        text, calls = plan(model, body)
        reply = ChatReply("agent", model, len(self.requests), text, calls, word_usage(body, text))
        return await send_chat_reply(request, body, reply)


class ThreadedAgentUpstream(Threaded[AgentUpstream]):
    """`AgentUpstream` on its own event loop in a daemon thread (for servers in other processes)."""

    def __init__(self) -> None:
        super().__init__(AgentUpstream, "fake-agent")
