"""Running the built-in tool calls of one model turn: concurrently (bounded), each with a time limit, their
items and events emitted through the one stream builder, cancelled with the run.

A call the `max_tool_calls` budget does not cover is ignored, as in the OpenAI API (no item, not run). A
tool that raises or runs out of time becomes a `failed` item and an error text for the model: a tool
failure is an outcome, never a failed response.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from parley.engine.budget import ToolCallBudget
from parley.engine.stream import Event, StreamBuilder
from parley.engine.timing import Timing
from parley.tools.base import BuiltinCall, BuiltinTool, Item, LeadingItem, ToolOutcome

log = logging.getLogger("parley.tools")


class ToolCallNote(Protocol):
    def finished(self, item: Item) -> None:
        """The call's final item (its type and status)."""
        ...


class ToolObserver(Protocol):
    """Watches each built-in call run: the app's telemetry counts and times it, and traces it (telemetry/)."""

    def tool_call(self, call: BuiltinCall) -> AbstractContextManager[ToolCallNote]: ...


@dataclass(slots=True)
class Toolbox:
    """The built-in tools of one response, by the function name the model calls them with."""

    tools: Mapping[str, BuiltinTool] = field(default_factory=dict)
    max_concurrent: int = 4
    timeout_s: float = 60.0
    max_turns: int = 8  # model turns per response; the last one is offered no built-in tool
    # What the tools hold open for the response (MCP sessions), closed when the run ends.
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # What they prepared before the first model turn: items that lead the output (MCP tool lists) and calls the
    # client approved, which run first (services/mcp.py; engine/run.py takes both as given to it).
    leading: list[LeadingItem] = field(default_factory=list)
    first_calls: list[BuiltinCall] = field(default_factory=list)
    observer: ToolObserver | None = None  # the app's telemetry, set with the response's run (services/responses.py)
    _next_marker: int = 0

    def __bool__(self) -> bool:
        return bool(self.tools)

    async def aclose(self) -> None:
        closers, self.closers = self.closers, []
        for close in closers:
            try:
                await close()
            except Exception:
                log.exception("closing a built-in tool's resources failed")

    def next_marker(self) -> int:
        """Citation markers, unique across the response's calls (tools.base.Citations)."""
        self._next_marker += 1
        return self._next_marker

    def functions(self) -> list[dict[str, Any]]:
        return [tool.function() for tool in self.tools.values()]


@dataclass(slots=True)
class Ran:
    call: BuiltinCall
    outcome: ToolOutcome


class _Emitter:
    """tools.base.ItemEmitter for one call: builder events go to the dispatcher's queue."""

    def __init__(self, builder: StreamBuilder, queue: asyncio.Queue[list[Event] | None]) -> None:
        self._builder = builder
        self._queue = queue
        self.index: int | None = None
        self.item: Item | None = None
        self.done = False
        self.followers: list[_Emitter] = []

    def start(self, item: Item) -> None:
        self.item = item
        self.index, events = self._builder.add_tool_item(item)
        self._put(events)

    def progress(self, kind: str, fields: dict[str, Any] | None = None) -> None:
        if self.index is not None:
            self._put(self._builder.tool_event(self.index, kind, fields))

    def update(self, item: Item) -> None:
        self.item = item
        if self.index is not None:
            self._builder.update_tool_item(self.index, item)

    def follow(self, done: Item, item: Item) -> _Emitter:
        self.finish(done)
        follower = _Emitter(self._builder, self._queue)
        follower.start(item)
        self.followers.append(follower)
        return follower

    def finish(self, item: Item, closing_events: tuple[str, ...] = ()) -> None:
        if self.done:  # finished early by `follow`: the item's `.done` is out, what it says stays true
            return
        if self.index is None:
            self.start(item)
        assert self.index is not None
        for kind in closing_events:
            self.progress(kind)
        self.done = True
        self.item = item
        self._put(self._builder.finish_tool_item(self.index, item))

    def _put(self, events: list[Event]) -> None:
        if events:
            self._queue.put_nowait(events)


class Dispatch:
    """One turn's built-in calls. Iterate `events()` for their stream events; `ran` holds the outcomes after."""

    def __init__(self, toolbox: Toolbox, builder: StreamBuilder, budget: ToolCallBudget,
                 calls: list[BuiltinCall], timing: Timing | None = None) -> None:
        self._toolbox = toolbox
        self._builder = builder
        self._timing = timing
        self.calls = [call for call in calls if budget.take()]
        self.ignored = len(calls) - len(self.calls)
        self.ran: list[Ran] = []

    async def events(self) -> AsyncIterator[list[Event]]:
        queue: asyncio.Queue[list[Event] | None] = asyncio.Queue()
        gate = asyncio.Semaphore(self._toolbox.max_concurrent)
        # Created in call order: each call's item is added before the next call starts, so output
        # indexes follow the order the model made the calls.
        tasks = [asyncio.ensure_future(self._one(call, gate, queue)) for call in self.calls]
        try:
            running = len(tasks)
            while running:
                batch: list[Event] = []
                first = await queue.get()
                for events in [first, *_drain(queue)]:
                    if events is None:
                        running -= 1
                    else:
                        batch += events
                if batch:
                    yield batch
            self.ran = [task.result() for task in tasks]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Stopped (a cancel, a time limit): what the tools emitted meanwhile is numbered, it goes out first when
            # the response ends (the builder closes their open items after it).
            self._builder.unsent([event for events in _drain(queue) if events is not None for event in events])

    async def _one(self, call: BuiltinCall, gate: asyncio.Semaphore,
                   queue: asyncio.Queue[list[Event] | None]) -> Ran:
        emitter = _Emitter(self._builder, queue)
        try:
            async with gate:
                timing = self._timing
                if timing is not None:
                    timing.mark("tool_call_started", {"name": call.name, "call_id": call.call_id})
                outcome = await self._observed(call, emitter)
                if timing is not None:
                    timing.mark("tool_call_done", {"name": call.name, "call_id": call.call_id,
                                                   "type": outcome.item.get("type"),
                                                   "status": outcome.item.get("status")})
            emitter.finish(outcome.item, outcome.closing_events)
            live = {str((f.item or {}).get("id")): f for f in emitter.followers}
            for following in outcome.more_items:
                more = live.pop(str(following.item.get("id")), None)
                if more is None:
                    more = _Emitter(self._builder, queue)
                    more.start(following.started or following.item)
                for kind, fields in following.events:
                    more.progress(kind, fields)
                more.finish(following.item)
            for more in live.values():  # items the tool started live but did not finish (it failed)
                assert more.item is not None
                more.finish({**more.item, "status": "incomplete"})
            return Ran(call, outcome)
        finally:
            queue.put_nowait(None)

    async def _observed(self, call: BuiltinCall, emitter: _Emitter) -> ToolOutcome:
        """`_run` under the toolbox's observer, when it has one."""
        observer = self._toolbox.observer
        if observer is None:
            return await self._run(call, emitter)
        with observer.tool_call(call) as note:
            outcome = await self._run(call, emitter)
            note.finished(outcome.item)
        return outcome

    async def _run(self, call: BuiltinCall, emitter: _Emitter) -> ToolOutcome:
        tool = self._toolbox.tools[call.name]
        try:
            async with asyncio.timeout(self._toolbox.timeout_s):
                return await tool.run(call, emitter, self._toolbox)
        except TimeoutError:
            log.warning("built-in tool %s timed out after %ss", call.name, self._toolbox.timeout_s)
            return tool.failed(call, f"it did not finish within {self._toolbox.timeout_s:g} seconds", emitter.item)
        except Exception as exc:
            log.exception("built-in tool %s failed", call.name)
            return tool.failed(call, f"an internal error occurred ({type(exc).__name__})", emitter.item)


def _drain(queue: asyncio.Queue[list[Event] | None]) -> list[list[Event] | None]:
    out: list[list[Event] | None] = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out
