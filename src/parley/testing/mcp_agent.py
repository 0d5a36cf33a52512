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

from typing import Any

import orjson
from aiohttp import web

from parley.testing.chat_reply import ChatReply, message_text, send_chat_reply, word_usage
from parley.testing.fake_agent import AgentUpstream
from parley.testing.fake_server import Threaded

MODEL = "mcp-agent"


def plan(body: dict[str, Any]) -> tuple[str, list[dict[str, str]]]:
    """(answer text, tool calls) for one request to `mcp-agent`."""
    messages = body.get("messages") or []
    at = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    prompt = message_text(messages[at].get("content")) if at >= 0 else ""
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
    results = [message_text(m.get("content")) for m in after if m.get("role") == "tool"]
    return "done: " + " | ".join(results), []


class McpAgentUpstream(AgentUpstream):
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json(loads=orjson.loads)
        if body.get("model") != MODEL:
            return await super()._chat(request)
        self.requests.append(body)
        text, calls = plan(body)
        reply = ChatReply("mcp", MODEL, len(self.requests), text, calls, word_usage(body, text), split_arguments=True)
        return await send_chat_reply(request, body, reply)


class ThreadedMcpAgentUpstream(Threaded[McpAgentUpstream]):
    """`McpAgentUpstream` on its own event loop in a daemon thread (for servers in other processes)."""

    def __init__(self) -> None:
        super().__init__(McpAgentUpstream, "fake-mcp-agent")
