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
from typing import Any

import orjson
from aiohttp import web

from parley.testing.chat_reply import ChatReply, message_text, send_chat_reply
from parley.testing.fake_agent import AgentUpstream
from parley.testing.fake_server import Threaded

CODER_MODELS = frozenset({"code-agent"})


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
    prompt = message_text(messages[at].get("content")) if at >= 0 else ""
    rounds = sum(1 for m in messages[at + 1:] if m.get("role") == "assistant" and m.get("tool_calls"))
    steps = steps_of(prompt)
    offered = any((t.get("function") or {}).get("name") == "python" for t in body.get("tools") or ())
    if rounds < len(steps) and offered:
        return "", [{"name": "python", "arguments": orjson.dumps({"code": code}).decode()} for code in steps[rounds]]
    last = message_text(messages[-1].get("content")) if messages and messages[-1].get("role") == "tool" else ""
    shown, _, files = last.partition("\n\nFiles written:")
    marker = re.search(r"^\[(\d+)\] /mnt/data/", files, re.MULTILINE)
    return "Result: " + shown + (f" See [{marker.group(1)}]." if marker else ""), []


_USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


class CoderUpstream(AgentUpstream):
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json(loads=orjson.loads)
        model = str(body.get("model", ""))
        if model not in CODER_MODELS:
            return await super()._chat(request)
        self.requests.append(body)
        text, calls = plan(body)
        return await send_chat_reply(request, body, ChatReply("coder", model, len(self.requests), text, calls, _USAGE))


class ThreadedCoderUpstream(Threaded[CoderUpstream]):
    """`CoderUpstream` on its own event loop in a daemon thread (for servers in other processes)."""

    def __init__(self) -> None:
        super().__init__(CoderUpstream, "fake-coder")
