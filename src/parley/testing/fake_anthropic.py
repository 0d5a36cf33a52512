"""A fake Anthropic Messages API over real HTTP (`POST /v1/messages`), for tests and benchmarks.

It speaks the published wire format (https://docs.anthropic.com/en/api/messages,
https://docs.anthropic.com/en/docs/build-with-claude/streaming): a `Message` body, or the SSE events
`message_start`, `ping`, `content_block_start/delta/stop` (text, thinking with its `signature_delta`, tool input
as `input_json_delta`), `message_delta` (stop_reason, usage) and `message_stop`; errors as
`{"type": "error", "error": {"type", "message"}}` with the documented statuses (429 with `retry-after`, 529
`overloaded_error`). Behaviour by model name: see `fake_plan` (plus `error-midstream`: an `error` event after
`message_start`). Like the real API it refuses (400) what Parley must never send: no `max_tokens`, an empty
text block, a forced tool with thinking, a thinking budget not below max_tokens or under 1024, temperature with
thinking, a tool_result whose tool_use is not in the assistant turn before it, and a thinking block whose
signature does not match. A request with `cache_control` reports its prefix as written to the cache the first
time and as read from it afterwards. Requests are recorded in `requests`.

Run it standalone: `python -m parley.testing.fake_anthropic --port 9102` (base URL http://127.0.0.1:9102/v1).
"""

from __future__ import annotations

import argparse
import hashlib
from typing import Any

import orjson
from aiohttp import web

from parley.testing.fake_plan import Plan, PlannedCall, RequestView, plan, signature_of, words
from parley.testing.fake_server import FakeServer, data_frame

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                529: "overloaded_error"}
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def error_body(status: int, message: str) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_fake"}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(b.get("text", "") for b in content or () if b.get("type") == "text")


class _Invalid(Exception):
    pass


def _check(body: dict[str, Any]) -> None:
    """What the real API refuses with a 400."""
    if not isinstance(body.get("max_tokens"), int):
        raise _Invalid("max_tokens: Field required")
    thinking = body.get("thinking") or {}
    if thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens", 0)
        if budget < 1024 or budget >= body["max_tokens"]:
            raise _Invalid("thinking.budget_tokens must be >= 1024 and less than max_tokens")
        if (body.get("tool_choice") or {}).get("type") in ("any", "tool"):
            raise _Invalid("Thinking may not be enabled when tool_choice forces tool use.")
        if "temperature" in body:
            raise _Invalid("temperature may only be set to 1 when thinking is enabled")
    previous_uses: set[str] = set()
    for index, message in enumerate(body.get("messages") or ()):
        content = message.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        for block in blocks:
            if block.get("type") == "text" and not block.get("text"):
                raise _Invalid(f"messages.{index}: text content blocks must be non-empty")
            if block.get("type") == "tool_result" and block.get("tool_use_id") not in previous_uses:
                raise _Invalid(f"messages.{index}: unexpected tool_use_id found in tool_result blocks")
            if block.get("type") == "thinking" and block.get("signature") != signature_of(block.get("thinking", "")):
                raise _Invalid(f"messages.{index}: Invalid `signature` in `thinking` block")
        if message.get("role") == "assistant":
            previous_uses = {str(b.get("id")) for b in blocks if b.get("type") == "tool_use"}


def request_view(body: dict[str, Any]) -> RequestView:
    view = RequestView(max_tokens=None)
    messages = body.get("messages") or []
    for message in messages:
        if message.get("role") == "user":
            text = _text_of(message.get("content"))
            if text:
                view.last_user_text = text
        elif isinstance(message.get("content"), list):
            view.states += [b.get("signature", "") for b in message["content"] if b.get("type") == "thinking"]
    if messages and isinstance(messages[-1].get("content"), list):
        results = [b for b in messages[-1]["content"] if b.get("type") == "tool_result"]
        if results:
            view.tool_result = _text_of(results[-1].get("content"))
    view.tools = {t["name"]: t.get("input_schema") or {} for t in body.get("tools") or ()}
    choice = body.get("tool_choice") or {}
    if choice.get("type") == "tool":
        view.forced = choice.get("name")
    return view


class FakeAnthropic(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.app.router.add_post("/v1/messages", self._messages)
        self.app.router.add_get("/v1/models", self._models)
        self._cached: set[str] = set()

    @property
    def base_url(self) -> str:
        return self.root + "/v1"

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "echo", "type": "model"}], "has_more": False})

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        model = str(body.get("model", "echo"))
        if model.startswith("error-") and model != "error-midstream":
            status = int(model.split("-", 1)[1])
            headers = {"retry-after": "7"} if status in (429, 529) else {}
            return web.json_response(error_body(status, f"fake upstream error {status}"), status=status,
                                     headers=headers)
        try:
            _check(body)
        except _Invalid as err:
            return web.json_response(error_body(400, str(err)), status=400)
        view = request_view(body)
        thinks = (body.get("thinking") or {}).get("type") == "enabled"
        answer = plan(model, view)
        if not thinks:
            answer.reasoning = None
        elif answer.error is not None:
            return web.json_response(error_body(400, answer.error), status=400)
        if model.startswith("json-") and any(name.endswith("json_response") for name in view.tools):
            name = next(name for name in view.tools if name.endswith("json_response"))
            answer.calls, answer.text, answer.finish = [PlannedCall("toolu_json", name, answer.text)], "", "tool_calls"
        usage = self._usage(body, answer)
        if model == "hang":
            return await self.hang(request, model, bool(body.get("stream")))
        if not body.get("stream"):
            whole = message(model, answer, usage)
            if model == "drop":
                return await self.drop_body(request, orjson.dumps(whole))
            return web.json_response(whole)
        events = frames(model, answer, usage)
        if model == "error-midstream":
            overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
            events = [*events[:2], data_frame(overloaded, "error")]
        return await self.sse(request, model, events, delay=0.2 if model == "slow" else 0.0,
                              drop_after=3 if model == "drop" else None)

    def _usage(self, body: dict[str, Any], answer: Plan) -> dict[str, int]:
        usage = {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens,
                 "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        if b'"cache_control"' in orjson.dumps(body):
            messages = body.get("messages") or [{}]
            prefix = orjson.dumps([body.get("system"), body.get("tools"), messages[0]])
            key = hashlib.sha256(prefix).hexdigest()
            field = "cache_read_input_tokens" if key in self._cached else "cache_creation_input_tokens"
            usage[field] = len(prefix) // 4
            self._cached.add(key)
        return usage


def _blocks(answer: Plan) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if answer.reasoning:
        blocks.append({"type": "thinking", "thinking": answer.reasoning, "signature": signature_of(answer.reasoning)})
    if answer.text:
        blocks.append({"type": "text", "text": answer.text})
    for index, call in enumerate(answer.calls):
        blocks.append({"type": "tool_use", "id": f"toolu_fake{index}", "name": call.name,
                       "input": orjson.loads(call.arguments)})
    return blocks


def message(model: str, answer: Plan, usage: dict[str, int]) -> dict[str, Any]:
    return {"id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": _blocks(answer),
            "stop_reason": _STOP[answer.finish], "stop_sequence": None, "usage": usage}


def frames(model: str, answer: Plan, usage: dict[str, int]) -> list[bytes]:
    start = {**message(model, Plan(), {**usage, "output_tokens": 1}), "stop_reason": None, "content": []}
    out = [data_frame({"type": "message_start", "message": start}, "message_start"),
           data_frame({"type": "ping"}, "ping")]

    def block(index: int, content_block: dict[str, Any], deltas: list[dict[str, Any]]) -> None:
        out.append(data_frame({"type": "content_block_start", "index": index, "content_block": content_block},
                              "content_block_start"))
        for delta in deltas:
            out.append(data_frame({"type": "content_block_delta", "index": index, "delta": delta},
                                  "content_block_delta"))
        out.append(data_frame({"type": "content_block_stop", "index": index}, "content_block_stop"))

    for index, whole in enumerate(_blocks(answer)):
        if whole["type"] == "thinking":
            deltas = [{"type": "thinking_delta", "thinking": w} for w in words(whole["thinking"])]
            block(index, {"type": "thinking", "thinking": "", "signature": ""},
                  [*deltas, {"type": "signature_delta", "signature": whole["signature"]}])
        elif whole["type"] == "text":
            texts = [{"type": "text_delta", "text": w} for w in words(whole["text"])]
            block(index, {"type": "text", "text": ""}, texts)
        else:
            arguments = orjson.dumps(whole["input"]).decode()
            halves = [arguments[: len(arguments) // 2], arguments[len(arguments) // 2:]]
            block(index, {**whole, "input": {}}, [{"type": "input_json_delta", "partial_json": h} for h in halves])
    delta = {"type": "message_delta", "delta": {"stop_reason": _STOP[answer.finish], "stop_sequence": None},
             "usage": {"output_tokens": usage["output_tokens"]}}
    out.append(data_frame(delta, "message_delta"))
    out.append(data_frame({"type": "message_stop"}, "message_stop"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9102)
    args = parser.parse_args()
    web.run_app(FakeAnthropic().app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
