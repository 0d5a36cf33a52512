"""The model turns after the first: the same call, grown by what the last turn produced.

A turn that called built-in tools is followed by another: the context is the previous turn's call plus its
output (the assistant's text and calls, each built-in call as a function call with the tool's text as its
output) and goes to the same provider. `tool_choice` forces the first turn only (later turns are `auto`);
the final turn allowed (`max_turns`, or no `max_tool_calls` budget left) is offered no built-in tool, so the
model answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from parley.providers.base import Item, ModelCall, ModelStream, Provider

Fit = Callable[[ModelCall], Awaitable[ModelCall]]


@dataclass(slots=True)
class Turns:
    provider: Provider
    call: ModelCall  # the call of the turn just made, as sent (after truncation)
    builtin_names: frozenset[str]
    fit: Fit  # `truncation` applied to each later turn as to the first

    async def open_next(self, new_items: list[Item], *, final: bool, first: bool = False,
                        load: Sequence[dict[str, Any]] = ()) -> ModelStream:
        """`first`: this is the response's first model turn, after calls the client approved ran (its
        `tool_choice` is the request's). `load`: functions offered from this turn on (a tool search found them)."""
        tools = self.call.tools
        offered = {tool["name"] for tool in tools}
        tools = tools + [function for function in load if function["name"] not in offered]
        if final:
            tools = [tool for tool in tools if tool["name"] not in self.builtin_names]
        choice = self.call.tool_choice if first and not final else "auto"
        call = replace(self.call, items=self.call.items + new_items, tools=tools,
                       tool_choice=choice if tools else None)
        call = await self.fit(call)
        self.call = call
        return await self.provider.open(call)
