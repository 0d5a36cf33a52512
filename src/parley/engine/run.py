"""One response run: drive the model stream through the stream builder.

The upstream call is opened by the caller first (so errors before any output are plain HTTP errors);
then `events()` yields Responses events. Errors after the start end a streamed response with
`response.failed`; a non-streamed one re-raises them so the client gets an HTTP error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from parley.engine.budget import ToolCallBudget
from parley.engine.checks import TurnCheck
from parley.engine.stream import Event, StreamBuilder
from parley.errors import ParleyError, UpstreamError
from parley.providers.base import Finish, Item, ModelStream

TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def _response_error_code(error: ParleyError) -> str:
    # Response.error.code is a closed set in the SDK; map transport failures onto it.
    return "rate_limit_exceeded" if error.status == 429 else "server_error"


class ResponseRun:
    def __init__(
        self, builder: StreamBuilder, stream: ModelStream, checks: Sequence[TurnCheck] = (),
        leading: Sequence[Item] = (), budget: ToolCallBudget | None = None,
    ) -> None:
        self.builder = builder
        self._stream = stream
        self._checks = checks
        self._leading = leading  # items complete before the model turn (an automatic compaction)
        self.budget = budget or ToolCallBudget()  # max_tool_calls, for built-in tool dispatch
        self.finished = False

    async def events(self) -> AsyncIterator[Event]:
        async for batch in self.batches():
            for event in batch:
                yield event

    async def batches(self) -> AsyncIterator[list[Event]]:
        """The run's events, grouped by what one upstream read produced (to be written together)."""
        builder = self.builder
        start = builder.start() + builder.in_progress()
        for item in self._leading:
            start += builder.add_done_item(item)
        if start:
            yield start
        try:
            async for model_events in self._stream:
                out: list[Event] = []
                for model_event in model_events:
                    if isinstance(model_event, Finish):
                        out += builder.close_turn(model_event.reason)
                        if model_event.reason != "length":
                            self._check_turn()
                        self.finished = True
                        out += builder.finish(model_event.reason)
                        yield out
                        return
                    out += builder.feed(model_event)
                if out:
                    yield out
        except ParleyError as err:
            if not builder.emit:
                raise
            self.finished = True
            yield builder.fail(_response_error_code(err), err.message)

    def _check_turn(self) -> None:
        for check in self._checks:
            problem = check(self.builder)
            if problem is not None:
                raise UpstreamError.bad_gateway(f"The response was rejected: {problem}.", code="model_output_invalid")

    async def aclose(self) -> None:
        await self._stream.aclose()
