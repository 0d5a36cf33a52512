"""A fake Gemini API (`models/{model}:generateContent`, `:streamGenerateContent?alt=sse`) over real HTTP.

It speaks the published wire format (https://ai.google.dev/api/generate-content): GenerateContentResponse
bodies, or one per SSE `data:` line (CRLF-framed, as Google sends them) whose `candidates[0].content.parts` carry
text, thought summaries (`thought: true`), whole `functionCall`s and `thoughtSignature`s, the last with a
`finishReason`, `usageMetadata` on each; errors as `{"error": {"code", "message", "status", "details"}}` (429
`RESOURCE_EXHAUSTED` with a RetryInfo `retryDelay`, 503 `UNAVAILABLE`; the key `bad-key` gets the 400
`API_KEY_INVALID`). Behaviour by model name: see `fake_plan`. Thinking models (`reasoning`, with a
`thinkingConfig`) sign their first function call part, or a last empty text part, as Gemini 3 does, and refuse
(400) a later request whose function call part comes back without that signature. Function calls carry no
`id` (Parley makes call ids). Requests are recorded in `requests`.

Run it standalone: `python -m parley.testing.fake_gemini --port 9104` (base URL http://127.0.0.1:9104/v1beta).
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
from aiohttp import web

from parley.testing.fake_plan import THINKING, Plan, RequestView, plan, signature_of, words
from parley.testing.fake_server import FakeServer

_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP"}
SIGNATURE = signature_of(THINKING)


def error_body(status: int, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}
    if details:
        error["details"] = details
    return {"error": error}


def request_view(body: dict[str, Any]) -> RequestView:
    config = body.get("generationConfig") or {}
    view = RequestView(max_tokens=config.get("maxOutputTokens"))
    contents = body.get("contents") or []
    for content in contents:
        parts = content.get("parts") or []
        if content.get("role", "user") == "user":
            text = " ".join(p["text"] for p in parts if "text" in p)
            if text:
                view.last_user_text = text
        else:
            view.states += [p["thoughtSignature"] for p in parts if "functionCall" in p and "thoughtSignature" in p]
    if contents:
        results = [p["functionResponse"] for p in contents[-1].get("parts") or () if "functionResponse" in p]
        if results:
            response = results[-1].get("response") or {}
            view.tool_result = str(response.get("result", orjson.dumps(response).decode()))
    for tool in body.get("tools") or ():
        for declaration in tool.get("functionDeclarations") or ():
            schema = declaration.get("parametersJsonSchema") or declaration.get("parameters") or {}
            view.tools[declaration["name"]] = schema
    calling = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    allowed = calling.get("allowedFunctionNames") or []
    if calling.get("mode") == "ANY" and len(allowed) == 1:
        view.forced = allowed[0]
    return view


def _chunk(model: str, parts: list[dict[str, Any]], usage: dict[str, int], finish: str | None = None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model, "responseId": "fake-response"}


def chunks(model: str, answer: Plan, thinks: bool) -> list[dict[str, Any]]:
    usage = {"promptTokenCount": answer.input_tokens, "candidatesTokenCount": answer.output_tokens,
             "totalTokenCount": answer.input_tokens + answer.output_tokens}
    if thinks:
        usage["thoughtsTokenCount"] = 5
    chunks: list[list[dict[str, Any]]] = []
    if thinks:
        chunks += [[{"text": w, "thought": True}] for w in words(THINKING)]
    chunks += [[{"text": w}] for w in words(answer.text)] if answer.text else []
    if answer.calls:
        calls: list[dict[str, Any]] = [{"functionCall": {"name": c.name, "args": orjson.loads(c.arguments)}}
                                       for c in answer.calls]
        if thinks:
            calls[0]["thoughtSignature"] = SIGNATURE
        chunks.append(calls)
    elif thinks:
        chunks.append([{"text": "", "thoughtSignature": SIGNATURE}])
    if not chunks:
        chunks.append([{"text": ""}])
    out = [_chunk(model, parts, usage) for parts in chunks]
    out[-1]["candidates"][0]["finishReason"] = _FINISH[answer.finish]
    return out


def whole(model: str, answer: Plan, thinks: bool) -> dict[str, Any]:
    pieces = chunks(model, answer, thinks)
    parts: list[dict[str, Any]] = []
    for chunk in pieces:  # adjacent text pieces of one kind are one part in a whole reply
        for part in chunk["candidates"][0]["content"]["parts"]:
            last = parts[-1] if parts else None
            if (last is not None and "text" in part and "text" in last and "thoughtSignature" not in last
                    and bool(last.get("thought")) == bool(part.get("thought"))):
                last["text"] = str(last["text"]) + str(part["text"])
                if "thoughtSignature" in part:
                    last["thoughtSignature"] = part["thoughtSignature"]
            else:
                parts.append(dict(part))
    return _chunk(model, parts, pieces[-1]["usageMetadata"], pieces[-1]["candidates"][0]["finishReason"])


class FakeGemini(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.app.router.add_post("/v1beta/models/{target}", self._generate)
        self.app.router.add_get("/v1beta/models", self._models)

    @property
    def base_url(self) -> str:
        return self.root + "/v1beta"

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [{"name": "models/echo"}]})

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        model, _, method = request.match_info["target"].partition(":")
        stream = method == "streamGenerateContent"
        if method not in ("generateContent", "streamGenerateContent"):
            return web.json_response(error_body(404, f"method {method!r} not found"), status=404)
        if request.headers.get("x-goog-api-key") == "bad-key":
            detail = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
            return web.json_response(error_body(400, "API key not valid. Please pass a valid API key.", [detail]),
                                     status=400)
        if model.startswith("error-"):
            status = int(model.split("-", 1)[1])
            retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}
            details = [retry] if status == 429 else None
            return web.json_response(error_body(status, f"fake upstream error {status}", details), status=status)
        view = request_view(body)
        if "skip_thought_signature_validator" in view.states:  # the documented value for calls without one
            view.states.append(SIGNATURE)
        answer = plan(model, view)
        thinks = model == "reasoning" and "thinkingConfig" in (body.get("generationConfig") or {})
        if thinks and answer.error is not None:
            message = "Function call is missing a thought_signature in functionCall parts."
            return web.json_response(error_body(400, message), status=400)
        if model == "hang":
            return await self.hang(request, model, stream)
        if not stream:
            reply = whole(model, answer, thinks)
            if model == "drop":
                return await self.drop_body(request, orjson.dumps(reply))
            return web.json_response(reply)
        frames = [b"data: " + orjson.dumps(chunk) + b"\r\n\r\n" for chunk in chunks(model, answer, thinks)]
        return await self.sse(request, model, frames, delay=0.2 if model == "slow" else 0.0,
                              drop_after=1 if model == "drop" else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9104)
    args = parser.parse_args()
    web.run_app(FakeGemini().app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
