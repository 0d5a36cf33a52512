"""A fake native Responses API (`POST /v1/responses`) over real HTTP, for tests and benchmarks.

It speaks the published wire format (https://platform.openai.com/docs/api-reference/responses,
.../responses-streaming): a `Response` body, or the SSE events `response.created`, `response.in_progress`,
`response.output_item.added/done`, `response.content_part.added/done`, `response.output_text.delta/done`,
`response.reasoning_summary_part.*` and `response.reasoning_summary_text.*`, `response.function_call_arguments.*`,
the `response.web_search_call.*` events of the hosted web search, and `response.completed` /
`response.incomplete`; errors as `{"error": {"message", "type", "param", "code"}}` (429 with `retry-after`).
Behaviour by model name: see `fake_plan`, plus `search` (the hosted `web_search` tool when offered: a
`web_search_call` item, then "searched: <query>"), `tool-search` (the hosted `tool_search` when offered: a
`tool_search_call` and a `tool_search_output` loading the `defer_loading` functions whose names the last user text
contains, then a call of the first; "done: <result>" once it is answered), `container-shell` (the hosted `shell`
with a container environment when offered: a `shell_call` running the last user text as a command in the
upstream's container and its `shell_call_output`, with their events, then "ran: <stdout>"), `mcp-call` (the
first hosted `mcp` server offered: an `mcp_call` of its tool `search` with its events, then "called: search") and
`error-midstream`
(an `error` event after the start). A hosted tool's item sent back with an id must be the one it made: another is
refused with a 400, as OpenAI refuses items it did not store (one without an id is input, taken as it is). Every
input item of a hosted tool's type is checked as the Responses input types it (the installed openai package's
`ResponseInputItemParam`): an unknown field or a missing required one (an `id` where the type needs one) is a 400
naming it, as OpenAI answers. Items of the types whose id is required are taken with any id (with `store: false`
nothing was stored to look up: OpenAI takes the item as given).

Like OpenAI with `store: false`, it refuses (400) a `previous_response_id` (nothing was stored) and a reasoning
item that comes back without the `encrypted_content` it was given, or with another one. Reasoning items carry
`encrypted_content` only when `include` asks for it, and a summary only when `reasoning.summary` does.
Requests are recorded in `requests`.

Run it standalone: `python -m parley.testing.fake_responses_upstream --port 9103` (base URL .../v1).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any, Required, get_args, get_origin, get_type_hints

import orjson
from aiohttp import web
from openai.types.responses.namespace_tool_param import NamespaceToolParam
from openai.types.responses.namespace_tool_param import ToolFunction as NamespaceFunction
from openai.types.responses.response_input_item_param import ResponseInputItemParam

from parley.testing.fake_plan import THINKING, Plan, RequestView, plan, signature_of, words
from parley.testing.fake_server import FakeServer, data_frame

_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
                404: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error"}
ENCRYPTED = "gAAAA" + signature_of(THINKING)  # Fernet-like, as OpenAI's encrypted_content looks


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _ERROR_TYPES.get(status, "server_error"), "param": param,
                      "code": code}}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or () if p.get("type") in ("input_text", "output_text"))


class _Invalid(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _check(body: dict[str, Any]) -> None:
    if body.get("previous_response_id"):
        raise _Invalid("Previous response with id not found.", "previous_response_id")
    for index, item in enumerate(body.get("input") or ()):
        returned = item.get("encrypted_content")
        if item.get("type") == "reasoning" and body.get("store") is False and returned != ENCRYPTED:
            raise _Invalid(f"Item with id '{item.get('id')}' not found. Items are not persisted when `store` is set "
                           "to false: send its encrypted_content back.", f"input[{index}]")


_OWN_ITEMS = {"tool_search_call": "tsc_fake", "tool_search_output": "tso_fake", "shell_call": "sh_fake",
              "shell_call_output": "sho_fake"}


# The hosted tools' item types, whose input shape the fake checks.
HOSTED_TYPES = frozenset({"web_search_call", "file_search_call", "code_interpreter_call", "image_generation_call",
                          "mcp_list_tools", "mcp_approval_request", "mcp_approval_response", "mcp_call",
                          "tool_search_call", "tool_search_output", "shell_call", "shell_call_output"})


def _required(hint: object) -> bool:
    return bool(get_origin(hint) is Required)


def input_item_fields() -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """Input item type -> (its fields, its required fields), read from the openai package's types."""
    found: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
    for typed in get_args(ResponseInputItemParam):
        hints = get_type_hints(typed, include_extras=True)
        kind = hints.get("type")
        if kind is None:
            continue
        required = frozenset(key for key, hint in hints.items() if _required(hint))
        names = [name for name in get_args(get_args(kind)[0] if _required(kind) else kind) if isinstance(name, str)]
        for name in names:
            found.setdefault(name, (frozenset(hints), required))
    return found


_INPUT_FIELDS = {kind: fields for kind, fields in input_item_fields().items() if kind in HOSTED_TYPES}


def _typed_fields(typed: Any) -> tuple[frozenset[str], frozenset[str]]:
    hints = get_type_hints(typed, include_extras=True)
    return frozenset(hints) | {"async"}, frozenset(key for key, hint in hints.items() if _required(hint))


_NAMESPACE = _typed_fields(NamespaceToolParam)
_NAMESPACE_FUNCTION = _typed_fields(NamespaceFunction)


def _check_shape(value: dict[str, Any], shape: tuple[frozenset[str], frozenset[str]], path: str) -> None:
    fields, required = shape
    for key in value:
        if key not in fields:
            raise _Invalid(f"Unknown parameter: '{path}.{key}'.", f"{path}.{key}")
    for key in sorted(required - set(value)):
        raise _Invalid(f"Missing required parameter: '{path}.{key}'.", f"{path}.{key}")


def _check_namespaces(body: dict[str, Any]) -> None:
    """A `namespace` tool as the openai types have it (its functions may be deferred)."""
    for index, tool in enumerate(body.get("tools") or ()):
        if tool.get("type") == "namespace":
            _check_shape(tool, _NAMESPACE, f"tools[{index}]")
            for number, member in enumerate(tool["tools"]):
                if member.get("type") == "function":
                    _check_shape(member, _NAMESPACE_FUNCTION, f"tools[{index}].tools[{number}]")


def _check_hosted_items(body: dict[str, Any]) -> None:
    for index, item in enumerate(body.get("input") or ()):
        shape = _INPUT_FIELDS.get(item.get("type"))
        if shape is not None:
            _check_shape(item, shape, f"input[{index}]")
        own = _OWN_ITEMS.get(item.get("type"))  # one without an id is a client's copy, taken as input
        if own is not None and "id" in item and item["id"] != own:
            raise _Invalid(f"Item with id '{item.get('id')}' not found.", f"input[{index}]")


def request_view(body: dict[str, Any]) -> RequestView:
    raw = body.get("input")
    items = [{"type": "message", "role": "user", "content": raw}] if isinstance(raw, str) else raw or []
    view = RequestView(max_tokens=body.get("max_output_tokens"))
    for item in items:
        if item.get("type", "message") == "message" and item.get("role") == "user":
            view.last_user_text = _text_of(item.get("content"))
        if item.get("type") == "reasoning" and item.get("encrypted_content"):
            view.states.append(str(item["encrypted_content"]).removeprefix("gAAAA"))
    if items and items[-1].get("type") == "function_call_output":
        view.tool_result = _text_of(items[-1].get("output"))
    view.tools = {t["name"]: t.get("parameters") or {} for t in body.get("tools") or () if t.get("type") == "function"}
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        view.forced = choice.get("name")
    return view


class _Events:
    """Builds the event stream of one response and the final Response object alongside."""

    def __init__(self, model: str, body: dict[str, Any]) -> None:
        self.frames: list[bytes] = []
        self.output: list[dict[str, Any]] = []
        self._seq = 0
        self.response: dict[str, Any] = {
            "id": "resp_fake", "object": "response", "created_at": int(time.time()), "status": "in_progress",
            "model": model, "output": [], "usage": None, "error": None, "incomplete_details": None,
            "instructions": body.get("instructions"), "tools": body.get("tools") or [],
            "tool_choice": body.get("tool_choice") or "auto", "parallel_tool_calls": True, "store": False,
            "text": body.get("text") or {"format": {"type": "text"}}, "metadata": {},
            "temperature": None, "top_p": None, "truncation": "disabled",
        }

    def emit(self, kind: str, **fields: Any) -> None:
        self.frames.append(data_frame({"type": kind, **fields, "sequence_number": self._seq}, kind))
        self._seq += 1

    def item(self, started: dict[str, Any], done: dict[str, Any], inner: list[tuple[str, dict[str, Any]]]) -> None:
        index = len(self.output)
        self.emit("response.output_item.added", output_index=index, item=started)
        for kind, fields in inner:
            self.emit(kind, item_id=done["id"], output_index=index, **fields)
        self.emit("response.output_item.done", output_index=index, item=done)
        self.output.append(done)


def _reasoning(events: _Events, body: dict[str, Any]) -> None:
    summary = bool((body.get("reasoning") or {}).get("summary"))
    done: dict[str, Any] = {"id": "rs_fake", "type": "reasoning", "summary": []}
    inner: list[tuple[str, dict[str, Any]]] = []
    if summary:
        part = {"type": "summary_text", "text": THINKING}
        done["summary"] = [part]
        inner.append(("response.reasoning_summary_part.added", {"summary_index": 0,
                                                                 "part": {"type": "summary_text", "text": ""}}))
        inner += [("response.reasoning_summary_text.delta", {"summary_index": 0, "delta": w}) for w in words(THINKING)]
        inner.append(("response.reasoning_summary_text.done", {"summary_index": 0, "text": THINKING}))
        inner.append(("response.reasoning_summary_part.done", {"summary_index": 0, "part": part}))
    if "reasoning.encrypted_content" in (body.get("include") or ()):
        done["encrypted_content"] = ENCRYPTED
    events.item({"id": "rs_fake", "type": "reasoning", "summary": []}, done, inner)


def _search(events: _Events, query: str) -> None:
    started = {"id": "ws_fake", "type": "web_search_call", "status": "in_progress",
               "action": {"type": "search", "query": query}}
    done = {**started, "status": "completed",
            "action": {"type": "search", "query": query,
                       "sources": [{"type": "url", "url": "https://example.com/"}]}}
    inner: list[tuple[str, dict[str, Any]]] = [
        (f"response.web_search_call.{step}", {}) for step in ("in_progress", "searching", "completed")]
    events.item(started, done, inner)


def _hosted_search(events: _Events, body: dict[str, Any], answer: Plan) -> None:
    """A hosted tool search loads the deferred functions named in the user's text, and the model calls the first."""
    items = body.get("input") or []
    if any(item.get("type") == "tool_search_output" for item in items):
        if items and items[-1].get("type") == "function_call_output":
            answer.text = "done: " + _text_of(items[-1].get("output"))
        return
    query = answer.text.removeprefix("echo: ")
    found: list[dict[str, Any]] = []
    first: tuple[str, str | None] | None = None  # the first function found, and its namespace
    for tool in body.get("tools") or ():
        if tool.get("type") == "function" and tool.get("defer_loading") and tool["name"] in query:
            found.append(tool)
            first = first or (tool["name"], None)
        members = [m for m in tool.get("tools") or () if m.get("defer_loading") and m["name"] in query]
        if tool.get("type") == "namespace" and members:  # a namespace is loaded with the members found
            found.append({**tool, "tools": members})
            first = first or (members[0]["name"], tool["name"])
    call = {"id": "tsc_fake", "type": "tool_search_call", "execution": "server", "call_id": None,
            "arguments": {"query": query}, "status": "completed"}
    events.item({**call, "status": "in_progress"}, call, [])
    output = {"id": "tso_fake", "type": "tool_search_output", "execution": "server", "call_id": None,
              "status": "completed", "tools": found}
    events.item({**output, "status": "in_progress", "tools": []}, output, [])
    answer.text = ""
    answer.calls = []
    if first is not None:  # the model calls it (a namespace member by its name and namespace)
        _call(events, 0, first[0], "call_found", "{}", first[1])


def _hosted_shell(events: _Events, body: dict[str, Any], answer: Plan) -> None:
    """A hosted container shell runs the user's text (as if: `echo <word>` prints the word)."""
    if any(item.get("type") == "shell_call_output" for item in body.get("input") or ()):
        return
    command = answer.text.removeprefix("echo: ")
    stdout = command.removeprefix("echo ") + "\n" if command.startswith("echo ") else ""
    action: dict[str, Any] = {"commands": [command], "timeout_ms": 10_000, "max_output_length": 1000}
    call = {"id": "sh_fake", "type": "shell_call", "call_id": "call_sh", "status": "completed", "action": action,
            "environment": {"type": "container_reference", "container_id": "cntr_upstream"}}
    events.item({**call, "status": "in_progress", "action": {**action, "commands": []}}, call, [
        ("response.shell_call_command.added", {"command_index": 0, "command": ""}),
        ("response.shell_call_command.delta", {"command_index": 0, "delta": command}),
        ("response.shell_call_command.done", {"command_index": 0, "command": command})])
    result = {"stdout": stdout, "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}
    output = {"id": "sho_fake", "type": "shell_call_output", "call_id": "call_sh", "status": "completed",
              "output": [result], "max_output_length": 1000}
    events.item({**output, "status": "in_progress", "output": []}, output, [
        ("response.shell_call_output_content.delta", {"command_index": 0, "delta": {"stdout": stdout}}),
        ("response.shell_call_output_content.done", {"command_index": 0, "output": [result]})])
    answer.text = "ran: " + stdout


def _hosted_mcp_approval(events: _Events, body: dict[str, Any], server: dict[str, Any], answer: Plan) -> None:
    """A hosted MCP server's tool that needs approval: its tool list and an approval request; once the input
    answers that request (by its id), the call (approved) or nothing (denied)."""
    label = server.get("server_label")
    items = body.get("input") or []
    answers = [item for item in items if item.get("type") == "mcp_approval_response"]
    if not answers:
        listing = {"id": "mcpl_fake", "type": "mcp_list_tools", "server_label": label,
                   "tools": [{"name": "search", "input_schema": {"type": "object"}}]}
        events.item({**listing, "tools": []}, listing, [("response.mcp_list_tools.in_progress", {}),
                                                        ("response.mcp_list_tools.completed", {})])
        request = {"id": "mcpr_fake", "type": "mcp_approval_request", "server_label": label, "name": "search",
                   "arguments": "{\"q\": \"x\"}"}
        events.item(request, request, [])
        answer.text = ""
        return
    requests = {item.get("id"): item for item in items if item.get("type") == "mcp_approval_request"}
    asked = requests.get(answers[-1]["approval_request_id"])
    if asked is None:
        raise _Invalid(f"No approval request with id '{answers[-1]['approval_request_id']}' found.",
                       "input.approval_request_id")
    if not answers[-1]["approve"]:
        answer.text = "denied: search"
        return
    done = {"id": "mcp_fake", "type": "mcp_call", "server_label": label, "name": "search",
            "arguments": asked["arguments"], "output": "found", "error": None, "status": "completed",
            "approval_request_id": asked["id"]}
    events.item({**done, "status": "in_progress", "output": None}, done, [])
    answer.text = "called: search"


def _message(events: _Events, text: str) -> None:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    inner: list[tuple[str, dict[str, Any]]] = [
        ("response.content_part.added", {"content_index": 0, "part": {**part, "text": ""}})]
    inner += [("response.output_text.delta", {"content_index": 0, "delta": w, "logprobs": []}) for w in words(text)]
    inner.append(("response.output_text.done", {"content_index": 0, "text": text, "logprobs": []}))
    inner.append(("response.content_part.done", {"content_index": 0, "part": part}))
    started = {"id": "msg_fake", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
    events.item(started, {**started, "status": "completed", "content": [part]}, inner)


def _call(events: _Events, index: int, name: str, call_id: str, arguments: str, namespace: str | None = None) -> None:
    started = {"id": f"fc_fake{index}", "type": "function_call", "status": "in_progress", "arguments": "",
               "call_id": call_id, "name": name, **({"namespace": namespace} if namespace else {})}
    halves = [arguments[: len(arguments) // 2], arguments[len(arguments) // 2:]]
    inner = [("response.function_call_arguments.delta", {"delta": h}) for h in halves]
    inner.append(("response.function_call_arguments.done", {"arguments": arguments, "name": name}))
    events.item(started, {**started, "status": "completed", "arguments": arguments}, inner)


def build(model: str, body: dict[str, Any], answer: Plan) -> _Events:
    events = _Events(model, body)
    events.emit("response.created", response=dict(events.response))
    events.emit("response.in_progress", response=dict(events.response))
    if answer.reasoning and body.get("reasoning"):
        _reasoning(events, body)
    hosted = [t for t in body.get("tools") or () if str(t.get("type", "")).startswith("web_search")]
    if model == "search" and hosted:
        _search(events, answer.text.removeprefix("echo: "))
        answer.text = "searched: " + answer.text.removeprefix("echo: ")
    types = {t.get("type") for t in body.get("tools") or ()}
    if model == "tool-search" and "tool_search" in types:
        _hosted_search(events, body, answer)
    containers = [t for t in body.get("tools") or () if t.get("type") == "shell"
                  and str((t.get("environment") or {}).get("type", "")).startswith("container")]
    if model == "container-shell" and containers:
        _hosted_shell(events, body, answer)
    servers = [t for t in body.get("tools") or () if t.get("type") == "mcp"]
    if model == "mcp-call" and servers:
        done = {"id": "mcp_fake", "type": "mcp_call", "server_label": servers[0].get("server_label"),
                "name": "search", "arguments": "{}", "output": "found", "error": None, "status": "completed"}
        events.item({**done, "status": "in_progress", "output": None}, done,
                    [("response.mcp_call.in_progress", {}), ("response.mcp_call.completed", {})])
        answer.text = "called: search"
    if model == "mcp-approve" and servers:
        _hosted_mcp_approval(events, body, servers[0], answer)
    if answer.text:
        _message(events, answer.text)
    for index, call in enumerate(answer.calls):
        _call(events, index, call.name, call.call_id, call.arguments)
    usage = {"input_tokens": answer.input_tokens, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
             "output_tokens": answer.output_tokens,
             "output_tokens_details": {"reasoning_tokens": 5 if answer.reasoning else 0},
             "total_tokens": answer.input_tokens + answer.output_tokens}
    final = {**events.response, "output": events.output, "usage": usage}
    if answer.finish == "length":
        final.update(status="incomplete", incomplete_details={"reason": "max_output_tokens"})
        events.emit("response.incomplete", response=final)
    else:
        final.update(status="completed", completed_at=int(time.time()))
        events.emit("response.completed", response=final)
    events.response = final
    return events


class FakeResponsesUpstream(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self.app.router.add_post("/v1/responses", self._responses)
        self.app.router.add_get("/v1/models", self._models)
        # When `hold` is set to an event, a stream stops after its first hosted shell output delta, sets `held` and
        # waits for `hold`: a test can see what reached the client while the upstream's item is still open.
        self.hold: asyncio.Event | None = None
        self.held = asyncio.Event()

    @property
    def base_url(self) -> str:
        return self.root + "/v1"

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "echo", "object": "model"}]})

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body = await self.record(request)
        model = str(body.get("model", "echo"))
        if model.startswith("error-") and model != "error-midstream":
            status = int(model.split("-", 1)[1])
            headers = {"retry-after": "7"} if status == 429 else {}
            return web.json_response(error_body(status, f"fake upstream error {status}"), status=status,
                                     headers=headers)
        try:
            _check(body)
            _check_hosted_items(body)
            _check_namespaces(body)
        except _Invalid as err:
            return web.json_response(error_body(400, str(err), param=err.param), status=400)
        answer = plan(model, request_view(body))
        if answer.error is not None and body.get("reasoning"):
            return web.json_response(error_body(400, answer.error), status=400)
        if model == "hang":
            return await self.hang(request, model, bool(body.get("stream")))
        try:
            events = build(model, body, answer)
        except _Invalid as err:  # an input the answer needed was wrong (an approval of no request)
            return web.json_response(error_body(400, str(err), param=err.param), status=400)
        if not body.get("stream"):
            if model == "drop":
                return await self.drop_body(request, orjson.dumps(events.response))
            return web.json_response(events.response)
        frames = events.frames
        if self.hold is not None:
            return await self._held(request, frames, self.hold)
        if model == "error-midstream":
            error = {"type": "error", "code": "server_error", "message": "The model had an error.", "param": None,
                     "sequence_number": 2}
            frames = [*frames[:2], data_frame(error, "error")]
        return await self.sse(request, model, frames, delay=0.2 if model == "slow" else 0.0,
                              drop_after=3 if model == "drop" else None)


    async def _held(self, request: web.Request, frames: list[bytes], hold: asyncio.Event) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await resp.prepare(request)
        try:
            for frame in frames:
                await resp.write(frame)
                if frame.startswith(b"event: response.shell_call_output_content.delta"):
                    self.held.set()
                    await hold.wait()
            await resp.write_eof()
        except ConnectionResetError:  # the caller went away meanwhile
            self.disconnects.append("held")
        return resp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9103)
    args = parser.parse_args()
    web.run_app(FakeResponsesUpstream().app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
