"""What the native fake upstreams answer, decided once for all wire formats from what a request asked.

Each fake (`fake_responses_upstream`, `fake_anthropic`, `fake_gemini`) reads its own wire format into a
`RequestView`, asks `plan()` what to answer, and writes the plan in its wire format. The behaviour is chosen by
the requested model name, with the vocabulary of `fake_upstream` (the Chat Completions fake):

  echo          "echo: <last user text>" in word-sized pieces (default)
  fixed         a fixed 32-token text (benchmarks)
  slow          like echo, 0.2 s between pieces
  length        a cut-off text, stopped by the output limit
  reasoning     thinks "Let me think about it." (with the upstream's own state: a signature, encrypted content)
                and then acts like `tools` when tools are offered, else like echo. A later request answering its
                tool call must send that state back unchanged, or it is refused with a 400 as the real API does
  tools         calls the forced tool, else the first offered one (two calls when the prompt says "twice");
                after a tool result it answers "done: <result>"; arguments are {"input": ...} when the tool's
                schema has an `input` property, else {"location": "Paris"}
  json-valid    answers {"name": "Ada", "age": 36}; json-invalid answers {"name": 5}
  error-<n>     answers HTTP <n> with the wire format's error body (429 says when to retry; 529 is overloaded)
  drop          a few events (non-streaming: half the body), then the connection is dropped
  hang          headers, then nothing (non-streaming: nothing at all)
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

FIXED_TEXT = " ".join(["token"] * 32)
THINKING = "Let me think about it."


@dataclass
class RequestView:
    """What a fake needs to know about a request, whatever its wire format."""

    last_user_text: str = ""
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> its parameters schema
    forced: str | None = None  # the tool tool_choice names
    tool_result: str | None = None  # the output of the call this request answers (the last input)
    states: list[str] = field(default_factory=list)  # the upstream states sent back (signatures, ...)
    max_tokens: int | None = None


@dataclass
class PlannedCall:
    call_id: str
    name: str
    arguments: str


@dataclass
class Plan:
    text: str = ""
    reasoning: str | None = None
    calls: list[PlannedCall] = field(default_factory=list)
    finish: str = "stop"  # stop, length, tool_calls
    input_tokens: int = 0
    output_tokens: int = 0
    error: str | None = None  # a 400 the request deserves (its state did not come back)


def signature_of(text: str) -> str:
    """The fakes' stand-in for an upstream's signature over its reasoning (base64, as real signatures are)."""
    return base64.b64encode(b"signed:" + hashlib.sha256(text.encode()).digest()[:18]).decode()


def words(text: str) -> list[str]:
    parts = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(parts)]


def _arguments(schema: dict[str, Any]) -> str:
    properties = (schema or {}).get("properties") or {}
    return '{"input": "print(42)"}' if "input" in properties else '{"location": "Paris"}'


def _calls(view: RequestView) -> list[PlannedCall]:
    name = view.forced if view.forced in view.tools else next(iter(view.tools))
    count = 2 if "twice" in view.last_user_text else 1
    return [PlannedCall(f"call_fake{i}", name, _arguments(view.tools[name])) for i in range(count)]


def plan(model: str, view: RequestView) -> Plan:
    out = Plan(text="echo: " + view.last_user_text)
    if model == "fixed":
        out.text = FIXED_TEXT
    elif model == "json-valid":
        out.text = '{"name": "Ada", "age": 36}'
    elif model == "json-invalid":
        out.text = '{"name": 5}'
    elif model == "length":
        out.finish = "length"
    if model == "reasoning":
        out.reasoning = THINKING
        if view.tool_result is not None and signature_of(THINKING) not in view.states:
            out.error = "the thinking that preceded the tool call was not sent back with its signature"
    if model in ("tools", "reasoning") and view.tool_result is not None:
        out.text = "done: " + view.tool_result
    elif model in ("tools", "reasoning") and view.tools:
        out.calls = _calls(view)
        out.text = ""
        out.finish = "tool_calls"
    if view.max_tokens is not None and len(out.text.split()) > view.max_tokens:
        out.text = " ".join(out.text.split()[: view.max_tokens])
        out.finish = "length"
    out.input_tokens = len(orjson.dumps(view.last_user_text)) // 4 + 3
    out.output_tokens = len(out.text.split()) + (5 if out.reasoning else 0) + 10 * len(out.calls)
    return out
