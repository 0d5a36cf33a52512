"""A scripted provider: plays back canned model events, for engine tests without HTTP or a database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from parley.errors import ParleyError
from parley.providers.base import ModelCall, ModelEvent, TokenCount
from parley.providers.chat_request import chat_body
from parley.providers.profiles import PROFILES
from parley.providers.tokens import estimate, prompt_text

Step = ModelEvent | ParleyError


class ScriptedStream:
    def __init__(self, steps: Sequence[Step]) -> None:
        self._steps = steps
        self.closed = False

    def __aiter__(self) -> AsyncIterator[list[ModelEvent]]:
        return self._events()

    async def _events(self) -> AsyncIterator[list[ModelEvent]]:
        for step in self._steps:  # one event per batch, as from a slow upstream
            if isinstance(step, ParleyError):
                raise step
            yield [step]

    async def aclose(self) -> None:
        self.closed = True


class ScriptedProvider:
    """Each `open` consumes the next script; the calls it received are kept in `calls`."""

    def __init__(self, *scripts: Sequence[Step]) -> None:
        self._scripts = list(scripts)
        self.calls: list[ModelCall] = []
        self.streams: list[ScriptedStream] = []

    async def open(self, call: ModelCall) -> ScriptedStream:
        self.calls.append(call)
        if not self._scripts:
            raise AssertionError("ScriptedProvider: no script left for this call")
        stream = ScriptedStream(self._scripts.pop(0))
        self.streams.append(stream)
        return stream

    async def count_tokens(self, call: ModelCall) -> TokenCount:
        """The `estimate` tokenizer over the generic Chat Completions translation."""
        return estimate(prompt_text(chat_body(call, PROFILES["generic"])))
