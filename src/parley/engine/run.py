"""One response run: drive the model stream through the stream builder.

The upstream call is opened by the caller first (so errors before any output are plain HTTP errors);
then `events()` yields Responses events. The one exception: a response that starts with built-in calls the
client approved earlier (`first_calls`, MCP approvals) runs them first and opens its first model turn after
them, with their results, since the model must see them. Errors after the start end a streamed response with
`response.failed`; a non-streamed one re-raises them so the client gets an HTTP error. Any other exception
(a bug) is logged with its traceback and handled the same way with a generic message: a run never ends in
a cut stream.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence

import orjson

from parley.engine.budget import ToolCallBudget
from parley.engine.checks import TurnCheck
from parley.engine.steering import Steering
from parley.engine.stream import Event, StreamBuilder
from parley.engine.timing import Timing
from parley.engine.tool_loop import Dispatch, Toolbox
from parley.engine.turns import Turns
from parley.errors import InternalError, ParleyError, UpstreamError
from parley.providers.base import (
    Finish,
    FinishReason,
    Item,
    ModelCall,
    ModelStream,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from parley.providers.tokens import CHARS_PER_TOKEN, estimated_input
from parley.schema.client_tools import CALL_TYPES
from parley.tools.base import BuiltinCall, LeadingItem, function_pair

log = logging.getLogger("parley.engine")

TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
# Calls the client runs (functions, and tools with their own call items: computer, shell, tool_search, ...).
_CLIENT_CALLS = frozenset({"function_call", "custom_tool_call", *CALL_TYPES.values()})
# What counts as a turn's first output (its time to first token): text, reasoning or a tool call.
_OUTPUT_EVENTS = (TextDelta, ReasoningDelta, ToolCallDelta)


def _response_error_code(error: ParleyError) -> str:
    # Response.error.code is a closed set in the SDK; map transport failures onto it.
    return "rate_limit_exceeded" if error.status == 429 else "server_error"


class ResponseRun:
    def __init__(
        self, builder: StreamBuilder, stream: ModelStream | None, checks: Sequence[TurnCheck] = (),
        leading: Sequence[Item | LeadingItem] = (), budget: ToolCallBudget | None = None, *,
        first_turn_checks: Sequence[TurnCheck] = (), toolbox: Toolbox | None = None, turns: Turns | None = None,
        first_calls: Sequence[BuiltinCall] = (), timing: Timing | None = None, call: ModelCall | None = None,
    ) -> None:
        self.builder = builder
        self._call = call  # the first model turn's call as sent (later turns': `turns.call`)
        # The model turn streaming now: the builder's usage reports and output length when it opened.
        self._open_turn: tuple[int, int] | None = None
        self.timing = timing  # notes each turn's and built-in call's times (engine/timing.py)
        # None only with `first_calls`: the first model turn is opened (by `turns`) once they ran.
        self._stream = stream
        self._first_calls = first_calls
        self._checks = checks  # on the final turn (text.format)
        self._first_turn_checks = first_turn_checks  # on the first turn (tool_choice)
        # Items complete before the model turn (an automatic compaction, MCP tool lists).
        self._leading = [entry if isinstance(entry, LeadingItem) else LeadingItem(entry) for entry in leading]
        self.budget = budget or ToolCallBudget()  # max_tool_calls, for built-in tool dispatch
        self._toolbox = toolbox if toolbox is not None else Toolbox()  # an empty one may still hold closers
        self._turns = turns  # how to open the next model turn after built-in tools ran
        self.finished = False
        # Input a client steers into this response (WebSocket mode): it joins the next model turn.
        self.steering: Steering | None = None

    @property
    def steerable(self) -> bool:
        """Whether steering input could still join this response: it has turns after built-in tools."""
        return self._turns is not None and not self.finished

    async def events(self) -> AsyncIterator[Event]:
        async for batch in self.batches():
            for event in batch:
                yield event

    async def batches(self) -> AsyncIterator[list[Event]]:
        """The run's events, grouped by what one upstream read produced (to be written together). A response
        may take several model turns: while a turn calls built-in tools, they run and the model is asked again
        (engine/tool_loop.py, engine/turns.py)."""
        builder = self.builder
        start = builder.start() + builder.in_progress()
        for entry in self._leading:
            start += builder.add_done_item(entry.item, entry.events)
        if start:
            yield start
        try:
            if self._stream is None:
                async for batch in self._run_first_calls():
                    yield batch
            turn = 0
            timing = self.timing
            while True:
                assert self._stream is not None
                turn_start = len(builder.output)
                self._open_turn = (builder.usage_reports, turn_start)
                out: list[Event] = []
                reason: FinishReason | None = None
                output_seen = False
                async for model_events in self._stream:
                    for model_event in model_events:
                        if isinstance(model_event, Finish):
                            reason = model_event.reason
                            break
                        out += builder.feed(model_event)
                    if (timing is not None and not output_seen
                            and any(isinstance(event, _OUTPUT_EVENTS) for event in model_events)):
                        output_seen = True  # looked for until found, not in every batch of the turn
                        timing.first_output(turn + 1)
                    if reason is not None:
                        break
                    if out:
                        yield out
                        out = []
                if reason is None:
                    raise UpstreamError.bad_gateway("the upstream ended the stream without finishing the turn.")
                self._open_turn = None
                out += builder.close_turn(reason)
                if timing is not None:
                    timing.mark("turn_done", {"turn": turn + 1, "finish_reason": reason})
                cut_short = reason in ("length", "content_filter")
                if turn == 0 and not cut_short:
                    self._check(self._first_turn_checks)
                calls = builder.take_builtin_calls()
                if not calls or self._turns is None:
                    if not cut_short:
                        self._check(self._checks)
                    self.finished = True
                    out += builder.finish(reason)
                    yield out
                    return
                if out:
                    yield out
                turn_items = builder.output[turn_start:]
                dispatch = Dispatch(self._toolbox, builder, self.budget, calls, timing)
                async for batch in dispatch.events():
                    yield batch
                new_items = list(turn_items)
                loaded = [function for ran in dispatch.ran for function in ran.outcome.load]
                for ran in dispatch.ran:
                    builder.add_sources(ran.outcome.sources)
                    new_items += function_pair(ran.call.call_id, ran.call.name, ran.call.arguments,
                                               ran.outcome.model_text)
                # (A call item the upstream made and ran itself, a hosted tool's, carries `upstream`: not the client's.)
                if (any(item["type"] in _CLIENT_CALLS and "upstream" not in item for item in turn_items)
                        or any(ran.outcome.ends_response for ran in dispatch.ran)):
                    # The turn also called client tools (they go back to the client), or a call waits for the
                    # client's approval: the response ends, completed.
                    self.finished = True
                    yield builder.finish("tool_calls")
                    return
                turn += 1
                final = (turn + 1 >= self._toolbox.max_turns or self.budget.remaining == 0
                         or dispatch.ignored > 0)
                await self._stream.aclose()
                if self.steering is not None:
                    new_items += self.steering.commit()
                    if final:
                        self.steering.close()  # no turn after this one could take more
                self._stream = await self._turns.open_next(new_items, final=final, load=loaded)
                if timing is not None:
                    timing.mark("upstream_opened", {"turn": turn + 1})
        except ParleyError as err:
            self._charge_cut_turn()
            if not builder.emit:
                raise
            self.finished = True
            yield builder.fail(_response_error_code(err), err.message)
        except Exception as exc:
            log.exception("response %s failed with an unexpected error", builder.response.get("id"))
            self._charge_cut_turn()
            internal = InternalError()
            if not builder.emit:
                raise internal from exc
            self.finished = True
            yield builder.fail("server_error", internal.message)

    def _charge_cut_turn(self) -> None:
        """A model turn cut before the upstream reported its usage (the client left, the upstream dropped, a
        cancel) is counted by estimate: the upstream read its input and wrote what was streamed, and the usage
        record, the cost and the token and spend limits must not take that as free (a client leaving after the
        first delta would spend without limit)."""
        open_turn, self._open_turn = self._open_turn, None
        if open_turn is None or self.builder.usage_reports != open_turn[0]:
            return
        call = self._turns.call if self._turns is not None else self._call
        if call is None:
            return
        written = len(orjson.dumps(self.builder.output[open_turn[1]:])) // CHARS_PER_TOKEN
        self.builder.feed(Usage(input_tokens=estimated_input(call), output_tokens=written))

    async def _run_first_calls(self) -> AsyncIterator[list[Event]]:
        """Calls the client approved run before the first model turn, which then opens with their results."""
        if self._turns is None:
            raise InternalError()  # a run with first calls always has its turns (services/responses.py)
        dispatch = Dispatch(self._toolbox, self.builder, self.budget, list(self._first_calls), self.timing)
        async for batch in dispatch.events():
            yield batch
        new_items: list[Item] = []
        for ran in dispatch.ran:
            self.builder.add_sources(ran.outcome.sources)
            new_items += function_pair(ran.call.call_id, ran.call.name, ran.call.arguments, ran.outcome.model_text)
        final = self._toolbox.max_turns <= 1 or self.budget.remaining == 0 or dispatch.ignored > 0
        self._stream = await self._turns.open_next(new_items, final=final, first=True)
        if self.timing is not None:
            self.timing.mark("upstream_opened", {"turn": 1})

    def _check(self, checks: Sequence[TurnCheck]) -> None:
        for check in checks:
            problem = check(self.builder)
            if problem is not None:
                raise UpstreamError.bad_gateway(f"The response was rejected: {problem}.", code="model_output_invalid")

    async def aclose(self) -> None:
        self._charge_cut_turn()
        try:
            if self._stream is not None:
                await self._stream.aclose()
        finally:
            await self._toolbox.aclose()
