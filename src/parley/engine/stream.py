"""The one stream builder: owns sequence_number, output_index, content_index and the response snapshot.

Properties (tested): sequence numbers strictly increase from 0, every `added` has its `done`, and folding
the events gives exactly the terminal event's `response`. With `emit=False` (non-streaming create) the
same state machine runs but no event objects are built, so both modes share one code path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import orjson

from parley.engine.citations import CitationFilter
from parley.engine.custom_input import CustomInput
from parley.engine.obfuscation import new_pad, obfuscation
from parley.engine.stream_log import LoggedItem, LoggedRun
from parley.errors import UpstreamError
from parley.ids import new_id
from parley.providers.base import (
    Finish,
    FinishReason,
    HostedEvent,
    HostedItem,
    HostedStarted,
    ModelEvent,
    ReasoningDelta,
    ReasoningState,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from parley.schema.client_tool_items import ID_PREFIX
from parley.schema.client_tools import CALL_TYPES, BadCall, ClientToolKind, call_item
from parley.schema.tools import ClientTool
from parley.tools.base import BuiltinCall, Source

Event = dict[str, Any]
Item = dict[str, Any]


# Built-in tool items cut off while they ran (a response that failed or was cancelled meanwhile): the statuses of
# one still running, and the status it ends with (`incomplete` where its SDK type has it, else `failed`).
_CUT_OFF = {"shell_call_output": (("in_progress",), "incomplete"),
            "code_interpreter_call": (("in_progress", "interpreting"), "incomplete"),
            "file_search_call": (("in_progress", "searching"), "incomplete"),
            "web_search_call": (("in_progress", "searching"), "incomplete"),
            "mcp_call": (("in_progress", "calling"), "incomplete"),
            "image_generation_call": (("in_progress", "generating"), "failed"),
            # a hosting upstream's items started live (HostedStarted) and cut off before it finished them
            "shell_call": (("in_progress",), "incomplete"), "tool_search_call": (("in_progress",), "incomplete"),
            "tool_search_output": (("in_progress",), "incomplete")}

# A built-in tool item's own streams (a cell's code, an MCP call's arguments, a shell command and its output): the
# event that opens one (`.added` or its first `.delta`) -> the `.done` event that closes it, and the field telling
# one item's streams apart. A tool item cut off mid-stream gets that `.done` (what the deltas built) before its own.
_SUB_STREAMS: dict[str, tuple[str, str | None]] = {
    "response.code_interpreter_call_code.delta": ("response.code_interpreter_call_code.done", None),
    "response.mcp_call_arguments.delta": ("response.mcp_call_arguments.done", None),
    "response.shell_call_command.added": ("response.shell_call_command.done", "command_index"),
    "response.shell_call_command.delta": ("response.shell_call_command.done", "command_index"),
    "response.shell_call_output_content.delta": ("response.shell_call_output_content.done", "command_index"),
}
_SUB_STREAM_KEYS = {done: key for done, key in _SUB_STREAMS.values()}


def sse_frame(event: Event) -> bytes:
    """One SSE event: `event:` equal to data.type, one-line JSON data, LF framing, no `id:` (api-surface §6.1).
    Background runs log these frames as they are, so a replay is written without re-serialising."""
    kind: str = event["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def usage_object(usage: Usage | None) -> dict[str, Any]:
    """The wire `usage` (ResponseUsage: every field the SDK requires), for responses and compactions alike."""
    u = usage or Usage(0, 0)
    return {
        "input_tokens": u.input_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens, "cache_write_tokens": u.cache_write_tokens},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.input_tokens + u.output_tokens,
    }


def _add_usage(a: Usage, b: Usage) -> Usage:
    return Usage(
        input_tokens=a.input_tokens + b.input_tokens, output_tokens=a.output_tokens + b.output_tokens,
        cached_tokens=a.cached_tokens + b.cached_tokens, reasoning_tokens=a.reasoning_tokens + b.reasoning_tokens,
        cache_write_tokens=a.cache_write_tokens + b.cache_write_tokens,
    )


class _OpenText:
    """A message item (or reasoning item) whose single content part is being streamed."""

    __slots__ = ("annotations", "chunks", "content_open", "item", "logprobs", "output_index", "summary",
                 "summary_key", "upstream")

    def __init__(self, item: Item, output_index: int) -> None:
        self.item = item
        self.output_index = output_index
        self.chunks: list[str] = []
        self.logprobs: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []  # a message taken up from a log (resume): its annotations so far
        # Reasoning only: whether its reasoning_text part was opened, its summary parts' text (the last one is
        # open), and the upstream's state for it (ReasoningState).
        self.content_open = False
        self.summary: list[list[str]] = []
        self.summary_key: int | None = None  # the upstream's index of the open summary part
        self.upstream: dict[str, Any] | None = None


class _OpenCall:
    __slots__ = ("chunks", "input", "item", "output_index", "upstream_name")

    def __init__(self, item: Item, output_index: int, upstream_name: str) -> None:
        self.item = item
        self.output_index = output_index
        self.upstream_name = upstream_name
        self.chunks: list[str] = []
        # A custom tool call's input, decoded from its arguments as they stream (engine/custom_input.py).
        self.input = CustomInput() if item["type"] == "custom_tool_call" else None


class _PendingBuiltin:
    __slots__ = ("call_id", "chunks", "name")

    def __init__(self, name: str, call_id: str) -> None:
        self.name = name
        self.call_id = call_id
        self.chunks: list[str] = []


class StreamBuilder:
    """Turns canonical model events into Responses stream events and keeps the snapshot."""

    def __init__(
        self, response: dict[str, Any], *, emit: bool, obfuscate: bool,
        tools: Mapping[str, ClientTool] | None = None, parallel_tool_calls: bool = True,
        seal: Callable[[Item], str] | None = None, builtin_names: frozenset[str] = frozenset(),
        present: Callable[[Item], Item] | None = None,
    ) -> None:
        self.response = response
        self._seal = seal
        self._tools = tools or {}
        # Upstream function names of built-in tools: their calls are collected for the engine to run, not
        # emitted as function_call items (engine/tool_loop.py).
        self._builtin_names = builtin_names
        self._builtin_calls: dict[int, _PendingBuiltin] = {}
        self._held_calls: dict[int, _PendingBuiltin] = {}  # client tools with their own item type
        # How an item is shown to the client (e.g. file_search_call results only with include[]); the
        # snapshot keeps the whole item, which is what is stored.
        self._present = present
        self._citations: dict[int, Source] = {}
        self._cite: CitationFilter | None = None
        self._parallel = parallel_tool_calls
        self.called: list[str] = []
        self.emit = emit
        self.obfuscate = obfuscate and emit
        self._pad = new_pad() if self.obfuscate else ""  # random per response (engine/obfuscation.py)
        self._seq = 0
        self._message: _OpenText | None = None
        self._reasoning: _OpenText | None = None
        self._calls: dict[int, _OpenCall] = {}
        self._usage: Usage | None = None
        self.usage_reports = 0  # Usage events fed (a turn that got none was cut before its usage)
        self._pending_turn_items: list[Item] = []
        self._hosted_open: dict[str, int] = {}  # a hosted item started live, by its key -> its output_index
        # Built-in tool items (and hosted ones started live) not finished yet, by output_index -> their open streams
        # ((done event, key) -> the deltas so far): a response ending meanwhile closes them, cut off.
        self._open_items: dict[int, dict[tuple[str, Any], list[Any]]] = {}
        # Events numbered but not handed out (a tool's, queued when its run was stopped): they go out first with the
        # events that end the response, so sequence numbers stay contiguous.
        self._unsent: list[Event] = []

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def output(self) -> list[Item]:
        output: list[Item] = self.response["output"]
        return output

    def _event(self, event: Event) -> Event:
        event["sequence_number"] = self._seq
        self._seq += 1
        return event

    def snapshot(self) -> dict[str, Any]:
        """The response as it stands, as stored (items whole): its items copied, the ones still being generated with
        what they hold so far (the text, reasoning, arguments or input their deltas carried, status `in_progress`),
        which is what folding the events built so far gives. `response.created`/`in_progress` carry it, and a GET
        of a foreground response while it runs shows it (services/live_responses.py)."""
        output = [dict(item) for item in self.output]
        msg, rs = self._message, self._reasoning
        if msg is not None:
            annotations = self._cite.annotations if self._cite is not None else msg.annotations
            part = _message_part(msg, list(annotations))
            part["logprobs"] = list(part["logprobs"])  # (the builder's list grows on)
            output[msg.output_index]["content"] = [part]
        if rs is not None:
            output[rs.output_index].update(_reasoning_parts(rs))
        for call in self._calls.values():
            if call.input is not None:
                output[call.output_index]["input"] = "".join(call.input.text)
            else:
                output[call.output_index]["arguments"] = "".join(call.chunks)
        return {**self.response, "output": output}

    def start(self) -> list[Event]:
        if not self.emit:
            return []
        events = [self._event({"type": "response.created", "response": self.snapshot()})]
        if self.response["status"] == "queued":
            events.append(self._event({"type": "response.queued", "response": self.snapshot()}))
        return events

    def in_progress(self) -> list[Event]:
        self.response["status"] = "in_progress"
        if not self.emit:
            return []
        return [self._event({"type": "response.in_progress", "response": self.snapshot()})]

    def feed(self, event: ModelEvent) -> list[Event]:
        if isinstance(event, TextDelta):
            return self._text(event)
        if isinstance(event, ToolCallDelta):
            return self._call(event)
        if isinstance(event, ReasoningDelta):
            return self._reasoning_delta(event)
        if isinstance(event, ReasoningState):
            return self._reasoning_state(event)
        if isinstance(event, HostedItem):
            return self._hosted_item(event)
        if isinstance(event, HostedEvent):
            index = self._hosted_open.get(event.key)
            return [] if index is None else self.tool_event(index, event.kind, event.fields)
        if isinstance(event, HostedStarted):
            return self._hosted_started(event)
        if isinstance(event, Usage):
            # A response of several model turns reports the sum of their usage.
            self._usage = event if self._usage is None else _add_usage(self._usage, event)
            self.usage_reports += 1
            return []
        if isinstance(event, Finish):
            return []
        raise TypeError(f"unknown model event {event!r}")

    # -- items -----------------------------------------------------------------------------------

    def _add_item(self, item: Item, events: list[Event]) -> int:
        output_index = len(self.output)
        self.output.append(item)
        if self.emit:
            events.append(
                self._event({"type": "response.output_item.added", "output_index": output_index,
                             "item": self._shown(item)})
            )
        return output_index

    def add_done_item(self, item: Item, progress: Sequence[str | tuple[str, dict[str, Any]]] = ()) -> list[Event]:
        """Add an item that is complete before the model turn (a compaction, an MCP tool list):
        output_item.added, the item's own `progress` events (e.g. `response.mcp_list_tools.in_progress`), .done."""
        events: list[Event] = []
        output_index = self._add_item(item, events)
        for entry in progress:
            kind, fields = (entry, None) if isinstance(entry, str) else entry
            events += self.tool_event(output_index, kind, fields)
        if self.emit:
            events.append(self._item_done(item, output_index))
        return events

    def _text(self, delta: TextDelta) -> list[Event]:
        events: list[Event] = []
        if self._message is None:
            self._close_reasoning(events)
            item: Item = {
                "id": new_id("msg"), "type": "message", "role": "assistant", "status": "in_progress", "content": []
            }
            self._message = _OpenText(item, self._add_item(item, events))
            if self.emit:
                part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                events.append(self._part_event("response.content_part.added", self._message, part))
        msg = self._message
        if delta.logprobs:
            msg.logprobs.extend(delta.logprobs)
        if self._cite is None:
            self._text_delta(msg, delta.text, delta.logprobs, events)
            return events
        visible, annotations = self._cite.feed(delta.text)
        self._text_delta(msg, visible, delta.logprobs, events)
        self._annotations(msg, annotations, events)
        return events

    def _text_delta(self, msg: _OpenText, text: str, logprobs: list[dict[str, Any]] | None,
                    events: list[Event]) -> None:
        if not text:
            return
        msg.chunks.append(text)
        if self.emit:
            ev: Event = {
                "type": "response.output_text.delta", "item_id": msg.item["id"], "output_index": msg.output_index,
                "content_index": 0, "delta": text, "logprobs": logprobs or [],
            }
            if self.obfuscate:
                ev["obfuscation"] = obfuscation(self._pad, text)
            events.append(self._event(ev))

    def _annotations(self, msg: _OpenText, annotations: list[dict[str, Any]], events: list[Event]) -> None:
        if not self.emit:
            return
        first = len(self._cite.annotations) - len(annotations) if self._cite is not None else 0
        for offset, annotation in enumerate(annotations):
            events.append(self._event({
                "type": "response.output_text.annotation.added", "item_id": msg.item["id"],
                "output_index": msg.output_index, "content_index": 0, "annotation_index": first + offset,
                "annotation": annotation,
            }))

    def _part_event(self, kind: str, open_text: _OpenText, part: dict[str, Any]) -> Event:
        return self._event(
            {
                "type": kind, "item_id": open_text.item["id"], "output_index": open_text.output_index,
                "content_index": 0, "part": part,
            }
        )

    def _close_message(self, events: list[Event], status: str) -> None:
        msg = self._message
        if msg is None:
            return
        annotations: list[dict[str, Any]] = msg.annotations
        if self._cite is not None:
            self._text_delta(msg, self._cite.flush(), None, events)
            annotations = self._cite.annotations
            self._cite = CitationFilter(self._citations)  # a later message of the response starts afresh
        self._message = None
        part = _message_part(msg, annotations)
        text = part["text"]
        msg.item["content"] = [part]
        msg.item["status"] = status
        if self.emit:
            base = {"item_id": msg.item["id"], "output_index": msg.output_index, "content_index": 0}
            events.append(self._event({"type": "response.output_text.done", **base, "text": text,
                                       "logprobs": msg.logprobs}))
            events.append(self._part_event("response.content_part.done", msg, dict(part)))
            events.append(self._item_done(msg.item, msg.output_index))

    def _item_done(self, item: Item, output_index: int) -> Event:
        return self._event({"type": "response.output_item.done", "output_index": output_index,
                            "item": self._shown(item)})

    def _shown(self, item: Item) -> Item:
        if self._present is not None:
            return self._present(item)
        shown = dict(item)
        shown.pop("upstream", None)  # an upstream's own state (ReasoningState, HostedItem) is never shown
        return shown

    def client_response(self) -> dict[str, Any]:
        """The response as the client sees it (items presented as `include` says); `response` is what is stored."""
        if self._present is None:
            if not any("upstream" in item for item in self.output):
                return self.response
            return {**self.response, "output": [self._shown(item) for item in self.output]}
        return {**self.response, "output": [self._present(item) for item in self.output]}

    def _open_reasoning(self, events: list[Event]) -> _OpenText:
        if self._reasoning is None:
            self._close_message(events, "completed")
            self._close_calls(events, "completed")
            item: Item = {"id": new_id("rs"), "type": "reasoning", "summary": [], "status": "in_progress"}
            self._reasoning = _OpenText(item, self._add_item(item, events))
        return self._reasoning

    def _reasoning_delta(self, delta: ReasoningDelta) -> list[Event]:
        events: list[Event] = []
        rs = self._open_reasoning(events)
        if delta.summary_index is not None:
            self._summary_delta(rs, delta, events)
            return events
        if not rs.content_open:
            rs.content_open = True
            if self.emit:
                part = {"type": "reasoning_text", "text": ""}
                events.append(self._part_event("response.content_part.added", rs, part))
        rs.chunks.append(delta.text)
        if self.emit:
            ev: Event = {
                "type": "response.reasoning_text.delta", "item_id": rs.item["id"], "output_index": rs.output_index,
                "content_index": 0, "delta": delta.text,
            }
            if self.obfuscate:
                ev["obfuscation"] = obfuscation(self._pad, delta.text)
            events.append(self._event(ev))
        return events

    def _summary_delta(self, rs: _OpenText, delta: ReasoningDelta, events: list[Event]) -> None:
        """A summary part's text (native Responses upstreams): parts are numbered by the builder, a new upstream
        index opens the next part."""
        if not rs.summary or delta.summary_index != rs.summary_key:
            self._close_summary_part(rs, events)
            rs.summary.append([])
            rs.summary_key = delta.summary_index
            if self.emit:
                events.append(self._event({
                    "type": "response.reasoning_summary_part.added", "item_id": rs.item["id"],
                    "output_index": rs.output_index, "summary_index": len(rs.summary) - 1,
                    "part": {"type": "summary_text", "text": ""},
                }))
        rs.summary[-1].append(delta.text)
        if self.emit:
            ev: Event = {
                "type": "response.reasoning_summary_text.delta", "item_id": rs.item["id"],
                "output_index": rs.output_index, "summary_index": len(rs.summary) - 1, "delta": delta.text,
            }
            if self.obfuscate:
                ev["obfuscation"] = obfuscation(self._pad, delta.text)
            events.append(self._event(ev))

    def _close_summary_part(self, rs: _OpenText, events: list[Event]) -> None:
        if not rs.summary or not self.emit:
            return
        index = len(rs.summary) - 1
        text = "".join(rs.summary[index])
        base = {"item_id": rs.item["id"], "output_index": rs.output_index, "summary_index": index}
        events.append(self._event({"type": "response.reasoning_summary_text.done", **base, "text": text}))
        events.append(self._event({"type": "response.reasoning_summary_part.done", **base,
                                   "part": {"type": "summary_text", "text": text}}))

    def _reasoning_state(self, state: ReasoningState) -> list[Event]:
        """The upstream's state for the reasoning item being built: kept on it, and the item ends."""
        events: list[Event] = []
        rs = self._open_reasoning(events)
        rs.upstream = state.upstream
        self._close_reasoning(events)
        return events

    def _close_reasoning(self, events: list[Event], status: str = "completed") -> None:
        rs = self._reasoning
        if rs is None:
            return
        self._reasoning = None
        self._close_summary_part(rs, events)
        item = rs.item
        item.update(_reasoning_parts(rs))
        item["status"] = status
        if rs.upstream is not None:
            item["upstream"] = rs.upstream
        if self._seal is not None:
            item["encrypted_content"] = self._seal(item)
        if self.emit:
            if rs.content_open:
                part = item["content"][0]
                base = {"item_id": item["id"], "output_index": rs.output_index, "content_index": 0}
                events.append(self._event({"type": "response.reasoning_text.done", **base, "text": part["text"]}))
                events.append(self._part_event("response.content_part.done", rs, dict(part)))
            events.append(self._item_done(item, rs.output_index))

    def _hosted_item(self, hosted: HostedItem) -> list[Event]:
        """An item of a tool the upstream ran: finished if it was started live (HostedStarted), else added whole,
        with its own progress events, and done."""
        events: list[Event] = []
        self._close_reasoning(events)
        self._close_message(events, "completed")
        item = {**hosted.item, "upstream": hosted.upstream}
        if hosted.tool is not None:
            self.called.append(hosted.tool)
        started = self._hosted_open.pop(hosted.key, None) if hosted.key is not None else None
        if started is not None:
            return events + self.finish_tool_item(started, item)
        return events + self.add_done_item(item, hosted.events)

    def _hosted_started(self, started: HostedStarted) -> list[Event]:
        """A hosted item the upstream started: `output_item.added` now, its events as they come (HostedEvent)."""
        events: list[Event] = []
        self._close_reasoning(events)
        self._close_message(events, "completed")
        index = self._hosted_open[started.key] = self._add_item(dict(started.item), events)
        self._open_items[index] = {}
        return events

    def _new_call_item(self, delta: ToolCallDelta) -> Item:
        upstream_name = delta.name or ""
        tool = self._tools.get(upstream_name)
        call_id = delta.call_id or new_id("call")
        if tool is not None and tool.kind == "custom":
            item: Item = {"id": new_id("ctc"), "type": "custom_tool_call", "call_id": call_id, "name": tool.name,
                          "input": ""}
        else:
            item = {"id": new_id("fc"), "type": "function_call", "status": "in_progress", "arguments": "",
                    "call_id": call_id, "name": tool.name if tool else upstream_name}
        if tool is not None and (tool.namespace or tool.deferred):
            # A deferred top-level function's call names itself as its namespace, as OpenAI's do.
            item["namespace"] = tool.namespace or tool.name
        return item

    def _call(self, delta: ToolCallDelta) -> list[Event]:
        events: list[Event] = []
        pending = self._builtin_calls.get(delta.index) or self._held_calls.get(delta.index)
        if pending is None and delta.index not in self._calls:
            name = delta.name or ""
            tool = self._tools.get(name)
            held = tool is not None and tool.kind in CALL_TYPES
            if held or name in self._builtin_names:
                if self._has_calls() and not self._parallel:
                    return events
                pending = _PendingBuiltin(name, delta.call_id or new_id("call"))
                (self._held_calls if held else self._builtin_calls)[delta.index] = pending
                self.called.append(pending.name)
        if pending is not None:
            pending.chunks.append(delta.arguments)
            return events
        call = self._calls.get(delta.index)
        if call is None:
            if self._has_calls() and not self._parallel:
                # parallel_tool_calls=false: the response carries at most one call per turn.
                return events
            self._close_message(events, "completed")
            self._close_reasoning(events)
            item = self._new_call_item(delta)
            call = _OpenCall(item, self._add_item(item, events), delta.name or "")
            self._calls[delta.index] = call
            self.called.append(call.upstream_name)
        if delta.arguments:
            call.chunks.append(delta.arguments)
            if call.input is not None:
                text = call.input.feed(delta.arguments)
                if text and self.emit:
                    events.append(self._event({"type": "response.custom_tool_call_input.delta",
                                               "item_id": call.item["id"], "output_index": call.output_index,
                                               "delta": text}))
            elif self.emit:
                ev: Event = {
                    "type": "response.function_call_arguments.delta", "item_id": call.item["id"],
                    "output_index": call.output_index, "delta": delta.arguments,
                }
                if self.obfuscate:
                    ev["obfuscation"] = obfuscation(self._pad, delta.arguments)
                events.append(self._event(ev))
        return events

    def _has_calls(self) -> bool:
        return bool(self._calls or self._builtin_calls or self._held_calls)

    def _close_held(self, events: list[Event], status: str) -> None:
        """Calls of client tools with their own item type (computer, shell, ...): the item is made from the
        whole arguments, so it is added and done together at the end of the turn (a turn cut short drops them:
        their arguments may be truncated)."""
        held, self._held_calls = self._held_calls, {}
        if status != "completed":
            return
        for _, pending in sorted(held.items()):
            tool = self._tools[pending.name]
            kind = cast(ClientToolKind, tool.kind)
            try:
                item = call_item(kind, tool.preview, new_id(ID_PREFIX[CALL_TYPES[kind]]), pending.call_id,
                                 "".join(pending.chunks))
            except BadCall as err:
                raise UpstreamError.bad_gateway(
                    f"The response was rejected: the model's {tool.name} call is unusable ({err}).",
                    code="model_output_invalid") from None
            output_index = len(self.output)
            self.output.append(item)
            if self.emit:
                started = {**item, "status": "in_progress"}
                if kind == "shell":  # its commands arrive by the shell_call_command events
                    started["action"] = {**item["action"], "commands": []}
                events.append(self._event({"type": "response.output_item.added", "output_index": output_index,
                                           "item": self._shown(started)}))
            if self.emit and kind == "shell":
                for index, command in enumerate(item["action"]["commands"]):
                    base = {"output_index": output_index, "command_index": index}
                    events.append(self._event({"type": "response.shell_call_command.added", **base, "command": ""}))
                    delta: Event = {"type": "response.shell_call_command.delta", **base, "delta": command}
                    if self.obfuscate:
                        delta["obfuscation"] = obfuscation(self._pad, command)
                    events.append(self._event(delta))
                    events.append(self._event({"type": "response.shell_call_command.done", **base,
                                               "command": command}))
            if self.emit:
                events.append(self._item_done(item, output_index))

    def _close_calls(self, events: list[Event], status: str) -> None:
        self._close_held(events, status)
        for call in sorted(self._calls.values(), key=lambda c: c.output_index):
            args = "".join(call.chunks)
            if call.input is not None:
                self._close_custom(call, call.input, args, events)
                continue
            call.item["arguments"] = args
            call.item["status"] = status
            if self.emit:
                events.append(self._event({
                    "type": "response.function_call_arguments.done", "item_id": call.item["id"],
                    "output_index": call.output_index, "arguments": args, "name": call.item["name"],
                }))
                events.append(self._item_done(call.item, call.output_index))
        self._calls.clear()

    def _close_custom(self, call: _OpenCall, decoder: CustomInput, args: str, events: list[Event]) -> None:
        # The upstream wrote {"input": "..."} (see schema.tools.CUSTOM_INPUT_SCHEMA); the client gets the raw input,
        # streamed as it was decoded, the rest (arguments that were not that envelope: all of it) now.
        streamed = sum(map(len, decoder.text))
        text = decoder.finish(args)
        call.item["input"] = text
        if self.emit:
            base = {"item_id": call.item["id"], "output_index": call.output_index}
            if len(text) > streamed or not streamed:
                events.append(self._event({"type": "response.custom_tool_call_input.delta", **base,
                                           "delta": text[streamed:]}))
            events.append(self._event({"type": "response.custom_tool_call_input.done", **base, "input": text}))
            events.append(self._item_done(call.item, call.output_index))

    def close_turn(self, reason: FinishReason) -> list[Event]:
        """Close every open item at the end of one model turn. Built-in tool calls of a turn cut short
        (`length`, `content_filter`) are dropped: their arguments may be truncated."""
        events: list[Event] = []
        status = "incomplete" if reason in ("length", "content_filter") else "completed"
        self._close_reasoning(events, status)
        self._close_message(events, status)
        self._close_calls(events, status)
        if status == "incomplete":
            self._builtin_calls.clear()
        return events

    def take_builtin_calls(self) -> list[BuiltinCall]:
        """The built-in tool calls of the turn just closed, in the order the model made them."""
        calls = [BuiltinCall(p.call_id, p.name, "".join(p.chunks))
                 for _, p in sorted(self._builtin_calls.items())]
        self._builtin_calls.clear()
        return calls

    # -- items of built-in tools (engine/tool_loop.py) ------------------------------------------

    def add_tool_item(self, item: Item) -> tuple[int, list[Event]]:
        """A built-in tool's item starts: `output_item.added`."""
        events: list[Event] = []
        output_index = self._add_item(item, events)
        self._open_items[output_index] = {}
        return output_index, events

    def tool_event(self, output_index: int, kind: str, fields: dict[str, Any] | None = None) -> list[Event]:
        """One of the item's own events (`response.file_search_call.searching`, ...)."""
        self._track(output_index, kind, fields or {})
        if not self.emit:
            return []
        item_id = self.output[output_index]["id"]
        ev: Event = {"type": kind, "item_id": item_id, "output_index": output_index, **(fields or {})}
        if self.obfuscate and kind == "response.shell_call_command.delta":  # (a built-in shell tool's commands)
            ev["obfuscation"] = obfuscation(self._pad, ev["delta"])
        return [self._event(ev)]

    def update_tool_item(self, output_index: int, item: Item) -> None:
        self.output[output_index] = item

    def finish_tool_item(self, output_index: int, item: Item) -> list[Event]:
        """The item is final: `output_item.done`."""
        self.output[output_index] = item
        self._open_items.pop(output_index, None)
        return [self._item_done(item, output_index)] if self.emit else []

    def _track(self, output_index: int, kind: str, fields: dict[str, Any]) -> None:
        """Keep the open item's streams (what a cut-off must close) from its own events."""
        streams = self._open_items.get(output_index)
        if streams is None:
            return
        opened = _SUB_STREAMS.get(kind)
        if opened is not None:
            done, key = opened
            chunks = streams.setdefault((done, fields.get(key) if key else None), [])
            if "delta" in fields:
                chunks.append(fields["delta"])
        elif kind in _SUB_STREAM_KEYS:
            key = _SUB_STREAM_KEYS[kind]
            index = fields.get(key) if key else None
            streams.pop((kind, index), None)
            # A command, a command's output, joins the item (a live tool replaces the item later, with the same).
            item = self.output[output_index]
            if kind == "response.shell_call_output_content.done":
                self.output[output_index] = {**item, "output": [*item.get("output", ()), *fields["output"]]}
            elif kind == "response.shell_call_command.done":
                self.output[output_index], _ = _close_stream(item, kind, index, [fields["command"]])

    def unsent(self, events: list[Event]) -> None:
        """Events this builder numbered that were not handed out (a tool's, queued when its run was stopped): they
        go out with the events that end the response, first."""
        self._unsent += events

    def add_sources(self, sources: dict[int, Source]) -> None:
        """Sources the model may cite from now on: its markers become annotations (engine/citations.py)."""
        if not sources:
            return
        self._citations.update(sources)
        if self._cite is None:
            self._cite = CitationFilter(self._citations)

    # -- terminal --------------------------------------------------------------------------------

    def usage_object(self) -> dict[str, Any]:
        return usage_object(self._usage)

    def finish(self, reason: FinishReason) -> list[Event]:
        events = self.close_turn(reason)
        self.response["usage"] = self.usage_object()
        if reason in ("length", "content_filter"):
            self.response["status"] = "incomplete"
            self.response["incomplete_details"] = {
                "reason": "max_output_tokens" if reason == "length" else "content_filter"
            }
            kind = "response.incomplete"
        else:
            self.response["status"] = "completed"
            self.response["completed_at"] = int(time.time())
            kind = "response.completed"
        if self.emit:
            events.append(self._event({"type": kind, "response": self.client_response()}))
        return events

    def fail(self, code: str, message: str) -> list[Event]:
        """End the response as failed; open items are closed as incomplete (a built-in tool's item cut off while it
        ran: its open streams closed, then the item, with the status _CUT_OFF gives)."""
        events, self._unsent = self._unsent, []
        events += self.close_turn("length")
        self._close_open_items(events)
        self.response["status"] = "failed"
        self.response["error"] = {"code": code, "message": message}
        self.response["usage"] = self.usage_object() if self._usage else None
        if self.emit:
            events.append(self._event({"type": "response.failed", "response": self.client_response()}))
        return events

    def refail_terminal(self, code: str, message: str) -> list[Event]:
        """Replace the terminal event just built (not sent) with `response.failed`, reusing its sequence
        number: the response could not be stored, so it must not be reported as finished."""
        if self.emit:
            self._seq -= 1
        self.response["status"] = "failed"
        self.response["completed_at"] = None
        self.response["incomplete_details"] = None
        self.response["error"] = {"code": code, "message": message}
        if not self.emit:
            return []
        return [self._event({"type": "response.failed", "response": self.client_response()})]

    def cancel(self) -> None:
        """The client went away (or a background run was cancelled): close items, no events."""
        emit, self.emit = self.emit, False
        self._unsent.clear()
        self.close_turn("length")
        self._close_open_items([])
        self.emit = emit
        output = self.output
        for index, item in enumerate(output):  # a built-in tool's item cut off while it ran (a shell's output)
            output[index] = _cut_off(item)
        self.response["status"] = "cancelled"
        self.response["usage"] = self.usage_object() if self._usage else None

    # -- a run taken up from its event log -------------------------------------------------------

    def resume(self, logged: LoggedRun, stored: Sequence[Item]) -> None:
        """Take up a run from its event log (a background run whose worker died): its output is the stored items,
        then the ones only logged; the items the log left open become this builder's open items, so `fail()` or
        `cancel()` closes them as it would a live run's (what their logged deltas built, `incomplete`), with
        sequence numbers following the log's."""
        self._seq = logged.next_seq
        self.output.extend(dict(item) for item in stored)
        for index in range(len(stored), len(logged.items)):
            entry = logged.items[index]
            self.output.append(entry.item)
            if not entry.done:
                self._reopen(entry, index)

    def _reopen(self, entry: LoggedItem, output_index: int) -> None:
        kind = entry.item.get("type")
        if kind in ("message", "reasoning"):
            open_text = _OpenText(entry.item, output_index)
            open_text.chunks, open_text.logprobs, open_text.annotations = entry.text, entry.logprobs, entry.annotations
            open_text.content_open, open_text.summary = entry.content_open, entry.summary
            if kind == "message":
                self._message = open_text
            else:
                self._reasoning = open_text
        elif kind in ("function_call", "custom_tool_call"):
            call = _OpenCall(entry.item, output_index, str(entry.item.get("name", "")))
            if call.input is not None:  # its logged deltas are the input decoded so far
                call.input = CustomInput.resumed(entry.text)
            else:
                call.chunks = entry.text
            self._calls[output_index] = call
        else:  # a built-in tool's item, a hosted item: closed as a live run's, its logged events tell its streams
            self._open_items[output_index] = {}
            for kind, fields in entry.events:
                self._track(output_index, kind, fields)

    def _close_open_items(self, events: list[Event]) -> None:
        for output_index, streams in sorted(self._open_items.items()):
            item = _cut_off(self.output[output_index])
            for (done, key), chunks in streams.items():
                item, fields = _close_stream(item, done, key, chunks)
                if self.emit:
                    events.append(self._event({"type": done, "item_id": item["id"], "output_index": output_index,
                                               **fields}))
            self.output[output_index] = item
            if self.emit:
                events.append(self._item_done(item, output_index))
        self._open_items.clear()


def _message_part(msg: _OpenText, annotations: list[dict[str, Any]]) -> dict[str, Any]:
    """A message's output_text part from what its deltas carried (closing it, or a snapshot while it streams)."""
    return {"type": "output_text", "text": "".join(msg.chunks), "annotations": annotations, "logprobs": msg.logprobs}


def _reasoning_parts(rs: _OpenText) -> Item:
    """A reasoning item's summary and (if it streamed any) reasoning_text from what its deltas carried."""
    parts: Item = {"summary": [{"type": "summary_text", "text": "".join(chunks)} for chunks in rs.summary]}
    if rs.content_open:
        parts["content"] = [{"type": "reasoning_text", "text": "".join(rs.chunks)}]
    return parts


def _cut_off(item: Item) -> Item:
    """A built-in tool's item as a response that ended while it ran stores it: `incomplete` where its type has that
    status, else `failed` (the types with neither keep theirs)."""
    cut = _CUT_OFF.get(item.get("type", ""))
    if cut is not None and item.get("status") in cut[0]:
        return {**item, "status": cut[1]}
    return item


def _close_stream(item: Item, done: str, key: Any, chunks: list[Any]) -> tuple[Item, dict[str, Any]]:
    """The `.done` event's fields of a tool item's stream cut off, from what its deltas built, and the item holding
    the same (its code, arguments, command; a command's output so far, ended as `timeout`: the only outcome there is
    for a command that did not exit)."""
    if done == "response.code_interpreter_call_code.done":
        code = "".join(chunks)
        return {**item, "code": item.get("code") or code}, {"code": code}
    if done == "response.mcp_call_arguments.done":
        arguments = "".join(chunks)
        return {**item, "arguments": item.get("arguments") or arguments}, {"arguments": arguments}
    if done == "response.shell_call_command.done":
        command = "".join(chunks)
        action = dict(item.get("action") or {})
        commands = list(action.get("commands") or [])
        if key == len(commands):
            action["commands"] = [*commands, command]
            item = {**item, "action": action}
        return item, {"command_index": key, "command": command}
    output = {"stdout": "".join(c.get("stdout") or "" for c in chunks),
              "stderr": "".join(c.get("stderr") or "" for c in chunks), "outcome": {"type": "timeout"}}
    return {**item, "output": [*item.get("output", ()), output]}, {"command_index": key, "output": [output]}
