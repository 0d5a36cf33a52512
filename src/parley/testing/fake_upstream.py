"""A fake OpenAI-compatible Chat Completions server over real HTTP, for tests and benchmarks.

It speaks the real wire format (streamed `chat.completion.chunk`s, the usage chunk, `[DONE]`, error
bodies) and its behaviour is chosen by the requested upstream `model`:

  echo            replies "echo: <last user text>" in word-sized chunks (default)
  fixed           replies a fixed 32-token text (benchmarks)
  slow            like echo, 0.2 s between chunks (non-streaming: the same total delay before answering)
  length          stops with finish_reason "length"
  reasoning       streams `reasoning_content` before the answer
  tools           calls the forced tool, else the first offered one (two calls when the prompt says "twice");
                  after a tool result it answers "done: <result>";
                  arguments are {"input": ...} when the tool's schema has an `input` property
  tools-held      like tools, but streams its call's arguments without their last 4 characters, then holds
                  the stream open until the client goes away (a run stopped mid-call, deterministically)
  text-held       like echo, but streams its answer without its last word, then holds the stream open until the
                  client goes away (a run stopped mid-text, deterministically; non-streaming: never answers)
  json-valid      answers {"name": "Ada", "age": 36}; json-invalid answers {"name": 5}
  summary         like echo, but a summarisation request (exactly a system message that mentions "summar",
                  then one user message: the transcript) gets "SUMMARY(<n> words of the transcript)"
  error-<status>  answers HTTP <status> with an OpenAI error body (429 adds retry-after: 7)
  ratelimited     answers 429 as OpenAI does when a key's requests per minute are spent, with no retry-after:
                  x-ratelimit-remaining-requests 0, x-ratelimit-reset-requests 20s (tokens: 5000 left, reset 6m0s)
  retry-after-<v> answers 429 with `retry-after: <v>` as given (a broken upstream: `inf`, `1e400`, ...)
  reset-<v>       answers 429 with no retry-after, x-ratelimit-remaining-requests 0, x-ratelimit-reset-requests <v>
  drop            sends two chunks (non-streaming: half the body), then drops the connection
  drop-early      drops the connection before any chunk (streaming: after the 200 headers; non-streaming:
                  without answering)
  nousage         no usage chunk even if asked
  hang            streaming: sends headers, then nothing; non-streaming: never answers

It also serves the tokenizer endpoints of vLLM (`POST /tokenize` with `messages`: its chat template, then
`{"count", "max_model_len", "tokens"}`) and llama-cpp-python (`POST /extras/tokenize` -> `{"tokens"}`,
`/extras/tokenize/count` -> `{"count"}` for a raw `input` text). Its tokenizer: one token per
whitespace-separated word; its chat template: 3 tokens per message (start, role, end) + 2 for the reply.

Every request body is recorded (`requests`; tokenizer calls in `tokenize_requests`) so tests can assert
what was forwarded, and the model of every request the client abandoned before its end is recorded in
`disconnects` (cancellation tests).
Run it standalone: `python -m parley.testing.fake_upstream --port 9100`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import orjson
from aiohttp import web

from parley.testing.fake_server import Threaded, serve_app

FIXED_TEXT = " ".join(["token"] * 32)


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return " ".join(p.get("text", "") for p in content or () if p.get("type") == "text")
    return ""


def _asks_for_summary(messages: list[dict[str, Any]]) -> bool:
    return (len(messages) == 2 and messages[0].get("role") in ("system", "developer")
            and "summar" in str(messages[0].get("content")).lower())


def _message_text(message: dict[str, Any]) -> str:
    """Every text of a chat message, as the fake chat template renders it."""
    content = message.get("content")
    texts = [content] if isinstance(content, str) else [p.get("text", "") for p in content or ()]
    for call in message.get("tool_calls") or ():
        texts += [call["function"]["name"], call["function"]["arguments"]]
    return " ".join(texts)


def _words(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


class FakeUpstream:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.disconnects: list[str] = []
        self._arrived: dict[str, asyncio.Event] = {}  # set when a chat request for that model arrives
        self.tokenize_requests: list[tuple[str, dict[str, Any]]] = []
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self._chat)
        self.app.router.add_get("/v1/models", self._models)
        self.app.router.add_post("/tokenize", self._vllm_tokenize)
        self.app.router.add_post("/extras/tokenize", self._llamacpp_tokenize)
        self.app.router.add_post("/extras/tokenize/count", self._llamacpp_tokenize)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def arrived(self, model: str) -> None:
        """Wait until a chat request for `model` has arrived (it may still be being answered)."""
        await self._arrived.setdefault(model, asyncio.Event()).wait()

    async def start(self, port: int = 0) -> None:
        self._runner, self.port = await serve_app(self.app, port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "echo", "object": "model"}]})

    async def _vllm_tokenize(self, request: web.Request) -> web.Response:
        body = await request.json(loads=orjson.loads)
        self.tokenize_requests.append((request.path, body))
        if "messages" not in body:  # the completion form: {"model", "prompt"}
            count = len(str(body.get("prompt", "")).split())
        else:
            count = sum(3 + len(_message_text(m).split()) for m in body["messages"]) + 2
            count += sum(len(orjson.dumps(t).decode().split()) for t in body.get("tools") or ())
        return web.json_response({"count": count, "max_model_len": 8192, "tokens": list(range(count))})

    async def _llamacpp_tokenize(self, request: web.Request) -> web.Response:
        body = await request.json(loads=orjson.loads)
        self.tokenize_requests.append((request.path, body))
        tokens = list(range(len(str(body["input"]).split())))
        if request.path.endswith("/count"):
            return web.json_response({"count": len(tokens)})
        return web.json_response({"tokens": tokens})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json(loads=orjson.loads)
        self.requests.append(body)
        model = str(body.get("model", "echo"))
        self._arrived.setdefault(model, asyncio.Event()).set()
        if model.startswith("error-"):
            status = int(model.split("-", 1)[1])
            headers = {"retry-after": "7"} if status == 429 else {}
            error = {"error": {"message": f"fake upstream error {status}", "type": "fake", "code": None}}
            return web.json_response(error, status=status, headers=headers)
        if model == "ratelimited":
            headers = {"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0",
                       "x-ratelimit-reset-requests": "20s", "x-ratelimit-limit-tokens": "150000",
                       "x-ratelimit-remaining-tokens": "5000", "x-ratelimit-reset-tokens": "6m0s"}
            error = {"error": {"message": "Rate limit reached for requests", "type": "requests", "param": None,
                               "code": "rate_limit_exceeded"}}
            return web.json_response(error, status=429, headers=headers)
        if model.startswith(("retry-after-", "reset-")):
            value = model.removeprefix("retry-after-").removeprefix("reset-")
            headers = ({"retry-after": value} if model.startswith("retry-after-") else
                       {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": value})
            error = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}
            return web.json_response(error, status=429, headers=headers)
        plan = _plan(model, body)
        if not body.get("stream"):
            if model in ("hang", "text-held", "slow"):
                delay = 0.2 * len(_chunks(model, plan)) if model == "slow" else 3600.0
                if not await self._wait_unless_closed(request, model, delay):
                    return web.Response()
            if model == "drop":
                return await self._drop_body(request, orjson.dumps(_completion(model, plan)))
            if model == "drop-early":
                assert request.transport is not None
                request.transport.close()
                return web.Response()
            return web.json_response(_completion(model, plan))
        return await self._stream(request, model, body, plan)

    async def _drop_body(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """Promise the whole body (content-length), send half of it, then close the connection."""
        resp = web.StreamResponse(headers={"content-type": "application/json", "content-length": str(len(body))})
        await resp.prepare(request)
        await resp.write(body[: len(body) // 2])
        assert request.transport is not None
        request.transport.close()
        return resp

    async def _wait_unless_closed(self, request: web.Request, model: str, seconds: float) -> bool:
        """Sleep `seconds`; False (and the model recorded in `disconnects`) if the client goes away first."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if request.transport is None or request.transport.is_closing():
                self.disconnects.append(model)
                return False
            await asyncio.sleep(min(0.05, max(deadline - time.monotonic(), 0.0)))
        return True

    async def _stream(
        self, request: web.Request, model: str, body: dict[str, Any], plan: dict[str, Any]
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await resp.prepare(request)
        if model == "hang":
            await self._wait_unless_closed(request, model, 3600.0)
            return resp
        if model == "drop-early":
            assert request.transport is not None
            request.transport.close()
            return resp
        delay = 0.2 if model == "slow" else 0.0
        chunks = _chunks(model, plan)
        try:
            for index, delta in enumerate(chunks):
                if model == "drop" and index == 2:
                    assert request.transport is not None
                    request.transport.close()
                    return resp
                if delay and not await self._wait_unless_closed(request, model, delay):
                    return resp
                await resp.write(b"data: " + orjson.dumps(delta) + b"\n\n")
            if model == "text-held" or (model == "tools-held" and plan["tool_calls"]):
                await self._wait_unless_closed(request, model, 3600.0)
                return resp
            wants_usage = (body.get("stream_options") or {}).get("include_usage")
            if wants_usage and model != "nousage":
                usage = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                         "model": model, "choices": [], "usage": plan["usage"]}
                await resp.write(b"data: " + orjson.dumps(usage) + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except ConnectionResetError:
            self.disconnects.append(model)
        return resp


def _plan(model: str, body: dict[str, Any]) -> dict[str, Any]:
    messages = body.get("messages") or []
    text = FIXED_TEXT if model == "fixed" else "echo: " + _last_user_text(messages)
    plan: dict[str, Any] = {"text": text, "reasoning": None, "tool_calls": [], "finish": "stop",
                            "logprobs": body.get("top_logprobs", 0) if body.get("logprobs") else None}
    if model == "reasoning":
        plan["reasoning"] = "Let me think about it."
    if model == "length":
        plan["finish"] = "length"
    if model == "json-valid":
        plan["text"] = '{"name": "Ada", "age": 36}'
    if model == "json-invalid":
        plan["text"] = '{"name": 5}'
    if model == "summary" and _asks_for_summary(messages):
        plan["text"] = f"SUMMARY({len(_last_user_text(messages).split())} words)"
    if model in ("tools", "tools-held") and messages and messages[-1].get("role") == "tool":
        # The tool ran: answer with its result, as an agent loop expects.
        plan["text"] = "done: " + str(messages[-1].get("content"))
    elif model in ("tools", "tools-held") and body.get("tools"):
        choice = body.get("tool_choice")
        function = body["tools"][0]["function"]
        if isinstance(choice, dict):
            function = next(t["function"] for t in body["tools"] if t["function"]["name"] == choice["function"]["name"])
        properties = (function.get("parameters") or {}).get("properties") or {}
        arguments = '{"input": "print(42)"}' if "input" in properties else '{"location": "Paris"}'
        count = 2 if "twice" in _last_user_text(messages) else 1
        plan["tool_calls"] = [
            {"id": f"call_fake{i}", "name": function["name"], "arguments": arguments} for i in range(count)
        ]
        plan["text"] = ""
        plan["finish"] = "tool_calls"
    prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in messages) + 3
    completion_tokens = len(text.split()) + (5 if plan["reasoning"] else 0)
    plan["usage"] = {
        "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens_details": {"reasoning_tokens": 5 if plan["reasoning"] else 0},
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    return plan


def _logprob(token: str, top: int) -> dict[str, Any]:
    alternatives = [{"token": token, "logprob": -0.1, "bytes": list(token.encode())}]
    alternatives += [{"token": f"alt{i}", "logprob": -2.0 - i, "bytes": list(f"alt{i}".encode())} for i in range(top)]
    return {"token": token, "logprob": -0.1, "bytes": list(token.encode()), "top_logprobs": alternatives[:top]}


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def _chunks(model: str, plan: dict[str, Any]) -> list[dict[str, Any]]:
    out = [_chunk(model, {"role": "assistant", "content": ""})]
    if plan["reasoning"]:
        out += [_chunk(model, {"reasoning_content": w}) for w in _words(plan["reasoning"])]
    if plan["text"]:
        words = _words(plan["text"])
        for word in words[:-1] if model == "text-held" else words:  # its last word never comes (_stream holds)
            chunk = _chunk(model, {"content": word})
            if plan["logprobs"] is not None:
                chunk["choices"][0]["logprobs"] = {"content": [_logprob(word, plan["logprobs"])]}
            out.append(chunk)
    if model == "text-held":
        return out
    for index, call in enumerate(plan["tool_calls"]):
        head = {"index": index, "id": call["id"], "type": "function",
                "function": {"name": call["name"], "arguments": ""}}
        out.append(_chunk(model, {"tool_calls": [head]}))
        args = call["arguments"]
        if model == "tools-held":  # the rest never comes (_stream holds after this chunk)
            out.append(_chunk(model, {"tool_calls": [{"index": index, "function": {"arguments": args[:-4]}}]}))
            return out
        for part in (args[: len(args) // 2], args[len(args) // 2:]):
            out.append(_chunk(model, {"tool_calls": [{"index": index, "function": {"arguments": part}}]}))
    out.append(_chunk(model, {}, plan["finish"]))
    return out


def _completion(model: str, plan: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": plan["text"] or None}
    logprobs = None
    if plan["logprobs"] is not None and plan["text"]:
        logprobs = {"content": [_logprob(w, plan["logprobs"]) for w in _words(plan["text"])]}
    if plan["reasoning"]:
        message["reasoning_content"] = plan["reasoning"]
    if plan["tool_calls"]:
        message["tool_calls"] = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in plan["tool_calls"]
        ]
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": plan["finish"]}],
        "usage": plan["usage"],
    }


class ThreadedFakeUpstream(Threaded[FakeUpstream]):
    """The fake upstream on its own event loop in a daemon thread (for sync tests and other processes)."""

    def __init__(self) -> None:
        super().__init__(FakeUpstream, "fake-upstream")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    fake = FakeUpstream()
    web.run_app(fake.app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
