"""The protocol of a built-in tool: how it is offered to the model, how it runs, what it reports.

A built-in tool runs on the server between model turns (DESIGN.md, "Built-in tools"). The model sees it
as a function whose schema the tool chooses; a call becomes the tool's own output item (`file_search_call`,
`web_search_call`, ...), whose progress the tool reports through an `ItemEmitter` (the engine turns that into
stream events through the one stream builder), and whose result goes back to the model as text. On later
turns (and along `previous_response_id` chains) the stored item is replayed to the upstream as a function
call and its output (`tools/replay.py`), so providers never see built-in item types.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

Item = dict[str, Any]


@dataclass(frozen=True, slots=True)
class BuiltinCall:
    """One call of a built-in tool by the model, as the upstream sent it."""

    call_id: str
    name: str  # the upstream function name
    arguments: str  # JSON text, as written by the model (may be invalid)
    # Set when the client approved this call in an earlier response (an MCP approval): it runs as it is.
    approval_request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Source:
    """Something the model may cite (a retrieved file chunk, a web page), by the marker number it was given."""

    annotation: dict[str, Any]  # without its position fields (file_citation, url_citation, ...)
    inline: str | None = None  # text that replaces the marker (the annotation then spans it)


@dataclass(frozen=True, slots=True)
class Following:
    """An item a call adds after its own (a tool search's output, a shell call's output), finished, with its own
    events (kind and fields) emitted between its `output_item.added` (showing `started`, else the item) and `.done`."""

    item: Item
    events: tuple[tuple[str, dict[str, Any]], ...] = ()
    started: Item | None = None


@dataclass(slots=True)
class ToolOutcome:
    """What a finished call produced: its final item, the text the model sees, and citable sources.

    `ends_response`: the response ends after this turn instead of asking the model again (a call waiting for
    the client's approval). `closing_events`: the item's own events the engine emits before its
    `output_item.done` when it ended the call itself (`failed()` after a timeout, e.g. `response.mcp_call.failed`).
    `more_items`: finished items that follow the call's own (a tool search's `tool_search_output`). `load`:
    functions offered to the model from the next turn on (the tools a tool search found).
    """

    item: Item
    model_text: str
    sources: dict[int, Source] = field(default_factory=dict)
    ends_response: bool = False
    closing_events: tuple[str, ...] = ()
    more_items: tuple[Following, ...] = ()
    load: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a request's built-in tools may look at while they are set up (services/builtin_tools.py): its loaded
    context followed by its new items (references resolved, nothing replayed yet), where the new items and the
    request's `input` start among them (after a prompt's items), the function names already taken, and the MCP
    servers the model's upstream hosts (their approvals are the upstream's to act on)."""

    items: Sequence[Item] = ()
    first_new: int = 0
    first_input: int = 0
    taken: frozenset[str] = frozenset()
    hosted_servers: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class LeadingItem:
    """An output item complete before the first model turn (an automatic compaction, an MCP server's tool list),
    with its own events emitted between its `output_item.added` and `.done`."""

    item: Item
    events: tuple[str, ...] = ()


class ItemEmitter(Protocol):
    """The engine's side of one call's output item. Every method emits the matching stream events."""

    def start(self, item: Item) -> None:
        """`response.output_item.added` with the item (status in_progress), then its `.in_progress` event."""
        ...

    def progress(self, kind: str, fields: dict[str, Any] | None = None) -> None:
        """A tool-specific event of this item, e.g. `response.file_search_call.searching`."""
        ...

    def update(self, item: Item) -> None:
        """Replace the item's snapshot (no event)."""
        ...

    def follow(self, done: Item, item: Item) -> ItemEmitter:
        """The call's own item is final now (`done`: its `output_item.done`) and `item` starts after it, live (a
        shell call's output while its commands run); that item's emitter. Its final state is the outcome's
        `more_items` entry with its id (whose events are emitted before its `.done`); one the outcome does not
        name (the call failed or timed out) is closed as it stands, `incomplete`."""
        ...


class Citations(Protocol):
    """Numbers sources across a response's tool calls, so markers stay unique."""

    def next_marker(self) -> int: ...


class BuiltinTool(Protocol):
    """One built-in tool as configured in a request (its `tools[i]` entry, validated)."""

    @property
    def upstream_name(self) -> str:
        """The function name the model calls."""
        ...

    def function(self) -> dict[str, Any]:
        """`{"name", "description", "parameters"}`: how the tool is offered to the model."""
        ...

    async def run(self, call: BuiltinCall, emit: ItemEmitter, citations: Citations) -> ToolOutcome:
        """Run one call. Failures are outcomes (a failed item and an error text for the model), never
        exceptions; the engine still guards against both exceptions and the time limit."""
        ...

    def failed(self, call: BuiltinCall, message: str, item: Item | None) -> ToolOutcome:
        """The outcome of a call that raised or timed out (`item`: what it had started, if anything)."""
        ...


def function_pair(call_id: str, name: str, arguments: str, output: str) -> list[Item]:
    """A function call and its output, as canonical items (never stored: built for the upstream only)."""
    return [
        {"type": "function_call", "id": f"fc_{call_id}", "call_id": call_id, "name": name, "arguments": arguments,
         "status": "completed"},
        {"type": "function_call_output", "id": f"fco_{call_id}", "call_id": call_id, "output": output,
         "status": "completed"},
    ]
