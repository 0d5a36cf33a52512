"""The provider contract: one canonical model call in, one stream of canonical model events out.

Every upstream wire format (Chat Completions, Responses, Anthropic, ...) is translated at the edge
into these few events; the engine's stream builder turns them into Responses events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Item = dict[str, Any]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    logprobs: list[dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """Reasoning text. `summary_index` None: the reasoning itself (a `reasoning_text` content part); an index:
    that part of the reasoning's summary (a `summary_text` part, as native Responses upstreams stream it)."""

    text: str
    summary_index: int | None = None


@dataclass(frozen=True, slots=True)
class ReasoningState:
    """What the upstream needs back with this reasoning on a later turn, opaque to everything but the provider
    that made it: a thinking block's signature, a thought signature, a Responses reasoning item with its own
    `encrypted_content`. `upstream` must hold `kind` and `model` (whose provider may send it back) and be JSON.
    It ends the reasoning item being built (one with no text is opened for it if none is), which keeps it as
    `upstream`: stored with the item, sealed into its `encrypted_content`, never shown to clients."""

    upstream: dict[str, Any]


@dataclass(frozen=True, slots=True)
class HostedItem:
    """A finished output item of a tool the upstream ran itself (a Responses upstream's `web_search_call` when
    the model config lists the tool in `hosted_tools`). `events` are the item's own progress event types
    (`response.web_search_call.searching`, ...) — with their fields when they carry any (an image's
    `partial_image_b64`, ...) — emitted between its `added` and `done`; `tool` is the upstream
    name of the tool (what tool_choice checks count). `upstream` is kept on the item as ReasoningState's is, so
    the same upstream gets the item back verbatim on a later turn."""

    item: dict[str, Any]
    upstream: dict[str, Any]
    events: tuple[str | tuple[str, dict[str, Any]], ...] = ()
    tool: str | None = None
    # Set when the item was started live (HostedStarted with this key): it is finished, not added.
    key: str | None = None


@dataclass(frozen=True, slots=True)
class HostedStarted:
    """A streaming upstream started an item of a tool it runs (`output_item.added`): `item` as the client sees it
    (a Parley id, which is also `key`). Its own events follow as HostedEvent, live, and the HostedItem with the
    same key finishes it."""

    key: str
    item: dict[str, Any]


@dataclass(frozen=True, slots=True)
class HostedEvent:
    """One of a started hosted item's own events (`response.shell_call_output_content.delta`, ...), its fields as
    the upstream sent them (without the numbering, which is the stream builder's)."""

    key: str
    kind: str
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of a function call. `index` is the upstream's call index within the turn."""

    index: int
    arguments: str
    call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Finish:
    reason: FinishReason


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0


ModelEvent = (TextDelta | ReasoningDelta | ToolCallDelta | Finish | Usage | ReasoningState | HostedItem
              | HostedStarted | HostedEvent)


ModelState = Literal["not_started", "starting", "ready", "unavailable", "stopped"]


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """Whether a model Parley runs itself (the embedded one) can answer now, and if not, why."""

    state: ModelState
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class TokenCount:
    """Input tokens of a model call. `exact` is False when the count is an approximation (a heuristic,
    or the model's tokenizer without its chat template)."""

    tokens: int
    exact: bool


@dataclass(frozen=True, slots=True)
class ModelCall:
    """One model turn, in Parley's vocabulary. Providers translate it to their wire format."""

    upstream_model: str
    items: list[Item]
    instructions: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    max_output_tokens: int | None = None
    top_logprobs: int | None = None
    logprobs: bool = False
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = None
    reasoning_summary: str | None = None  # `reasoning.summary` (auto, concise, detailed)
    text_format: dict[str, Any] | None = None
    stream: bool = True
    # Built-in tool entries of the request, as sent, that the upstream runs itself (the model config's
    # `hosted_tools`), each with the upstream name tool_choice knows it by. Only native Responses upstreams
    # take them; every other tool is a function in `tools`.
    hosted_tools: list[HostedTool] = field(default_factory=list)
    # Whether a later model call may start with these same item objects: a previous_response_id chain (the chain
    # cache hands its items out again), a conversation (the conversation cache does), a WebSocket connection (its
    # memory does), a built-in tool loop (its next turn extends this context). Only then do the prefix memos
    # (providers/prefix_memo.py) keep their work on it beyond this response: a fresh HTTP request's items are never
    # seen again once it ends.
    continuable: bool = True


@dataclass(frozen=True, slots=True)
class HostedTool:
    """A built-in tool entry passed to the upstream (`{"type": "web_search", ...}`) and its upstream name."""

    name: str
    entry: dict[str, Any]


class ModelStream(Protocol):
    """An open upstream call. Iterate for batches of events (one batch per network read, so what arrives
    together is processed and written together); `aclose` releases the connection early."""

    def __aiter__(self) -> AsyncIterator[list[ModelEvent]]: ...

    async def aclose(self) -> None: ...


class Provider(Protocol):
    async def open(self, call: ModelCall) -> ModelStream:
        """Send the call. Errors before the first event (HTTP status, connect) raise ParleyError here."""
        ...

    async def count_tokens(self, call: ModelCall) -> TokenCount:
        """The input tokens `call` would use (messages, instructions and tool definitions), without
        generating. Untranslatable input raises the same InvalidRequest as `open`."""
        ...
