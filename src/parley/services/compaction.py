"""Compaction: summarise earlier context into a sealed `compaction` item, and open such items again.

The rule (ARCHITECTURE.md, "Compaction"): a compaction item stands for everything before it. In a model
context, the items before the last compaction item are reduced to their user messages (kept verbatim, as
POST /v1/responses/compact returns them), and the compaction item itself becomes a developer message
"Summary of the earlier conversation: ..." at its place. The summary is written by the request's own model
(one non-streaming call through its provider) and sealed like reasoning (engine/sealing.py), bound to the
project, so only this deployment can open it and a forged item is a 400.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from parley.engine.sealing import ReasoningSealer
from parley.engine.stream import usage_object
from parley.errors import InvalidRequest
from parley.ids import new_id
from parley.providers.base import ModelCall, TextDelta, Usage
from parley.providers.registry import ModelEntry
from parley.schema.items import Item, item_text
from parley.schema.requests import ContextManagement

PURPOSE = b"parley/compaction/v1/"
SUMMARY_PREFIX = "Summary of the earlier conversation:\n"
SUMMARY_INSTRUCTIONS = (
    "You compact conversations. Summarise the conversation transcript the user gives you so that an assistant "
    "can continue it without the transcript: keep every fact, decision, name, number, open question, tool "
    "result and commitment that may matter later; drop pleasantries. Write plain prose or terse bullet "
    "points, in the conversation's language. Reply with the summary only."
)
# context_management without compact_threshold compacts at this share of the model's context window.
DEFAULT_THRESHOLD_SHARE = 0.8


@dataclass(frozen=True, slots=True)
class Summary:
    text: str
    usage: Usage | None


def check_compaction_trigger(raw: Any, prefix: str) -> None:
    """`compaction_trigger` must be the last input item (api-surface.md §2); Parley does not run it yet."""
    if not isinstance(raw, list):
        return
    for index, item in enumerate(raw):
        if isinstance(item, dict) and item.get("type") == "compaction_trigger":
            if index != len(raw) - 1:
                raise InvalidRequest("A 'compaction_trigger' item must be the last input item.",
                                     param=f"{prefix}[{index}]")
            raise InvalidRequest(
                "'compaction_trigger' items are not supported by this server; use POST /v1/responses/compact "
                "or context_management.", param=f"{prefix}[{index}].type", code="unsupported_value",
            )


def is_user_message(item: Item) -> bool:
    return item.get("type") == "message" and item.get("role") == "user"


def _output_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    return " ".join(str(p.get("text", "")) for p in output or () if isinstance(p, dict))


def transcript(items: list[Item]) -> str:
    """The context as plain text for the summariser: any upstream can read it, whatever tools it has."""
    lines: list[str] = []
    for item in items:
        kind = item.get("type")
        if kind == "message":
            lines.append(f"{item.get('role')}: {item_text(item)}")
        elif kind in ("function_call", "custom_tool_call"):
            arguments = item.get("arguments", item.get("input", ""))
            lines.append(f"assistant called tool {item.get('name')}: {arguments}")
        elif kind in ("function_call_output", "custom_tool_call_output"):
            lines.append(f"tool result: {_output_text(item.get('output'))}")
    return "\n\n".join(lines)


def compact_threshold(entries: list[ContextManagement] | None, entry: ModelEntry) -> int | None:
    """The token count above which create compacts first; None when context_management is not asked for."""
    if not entries:
        return None
    if len(entries) > 1:
        raise InvalidRequest("'context_management' takes at most one entry.", param="context_management")
    return entries[0].compact_threshold or int(entry.context_window * DEFAULT_THRESHOLD_SHARE)


class Compactor:
    def __init__(self, sealer: ReasoningSealer) -> None:
        self._sealer = sealer

    # -- sealed items ----------------------------------------------------------------------------

    def item(self, project_id: str, summary: str) -> Item:
        token = self._sealer.seal_data({"summary": summary}, project_id, PURPOSE)
        return {"id": new_id("cmp"), "type": "compaction", "encrypted_content": token}

    def open(self, project_id: str, item: Item, param: str) -> str:
        token = item.get("encrypted_content")
        if not isinstance(token, str):
            raise InvalidRequest("A compaction item needs its 'encrypted_content'.", param=param)
        summary = self._sealer.open_data(token, project_id, param, PURPOSE, "compaction content").get("summary")
        return summary if isinstance(summary, str) else ""

    def check_input(self, project_id: str, items: list[Item], prefix: str) -> None:
        """Every compaction item a client sends must be one this server sealed for this project (else 400)."""
        for index, item in enumerate(items):
            if item["type"] == "compaction":
                self.open(project_id, item, f"{prefix}[{index}].encrypted_content")

    def expand(self, project_id: str, items: list[Item]) -> list[Item]:
        """The model's view of a context holding compaction items (see the module docstring)."""
        last = max((n for n, item in enumerate(items) if item["type"] == "compaction"), default=None)
        if last is None:
            return items
        summary = self.open(project_id, items[last], "input")
        message: Item = {
            "id": items[last]["id"], "type": "message", "role": "developer", "status": "completed",
            "content": [{"type": "input_text", "text": SUMMARY_PREFIX + summary}],
        }
        return [item for item in items[:last] if is_user_message(item)] + [message] + items[last + 1:]

    # -- summarising -----------------------------------------------------------------------------

    async def summarise(self, entry: ModelEntry, items: list[Item]) -> Summary:
        """One non-streaming call to the model: the transcript of `items` in, a summary out."""
        text = transcript(items)
        call = ModelCall(
            upstream_model=entry.upstream_model,
            instructions=SUMMARY_INSTRUCTIONS,
            items=[{"id": new_id("msg"), "type": "message", "role": "user", "status": "completed",
                    "content": [{"type": "input_text", "text": text}]}],
            stream=False,
        )
        stream = await entry.provider.open(call)
        chunks: list[str] = []
        usage: Usage | None = None
        try:
            async for batch in stream:
                for event in batch:
                    if isinstance(event, TextDelta):
                        chunks.append(event.text)
                    elif isinstance(event, Usage):
                        usage = event
        finally:
            await stream.aclose()
        return Summary("".join(chunks).strip(), usage)

    async def compacted_response(self, project_id: str, entry: ModelEntry, context: list[Item]) -> dict[str, Any]:
        """POST /v1/responses/compact: the context's user messages, then one compaction item of all of it."""
        summary = await self.summarise(entry, context)
        output = [item for item in context if is_user_message(item)] + [self.item(project_id, summary.text)]
        return {
            "id": new_id("resp"), "object": "response.compaction", "created_at": int(time.time()),
            "output": output, "usage": usage_object(summary.usage),
        }

    async def auto_compact(self, project_id: str, entry: ModelEntry, call: ModelCall,
                           threshold: int) -> tuple[ModelCall, list[Item]]:
        """context_management: above `threshold` tokens, compact the context first. Returns the call to send
        and the compaction output item (none when under the threshold, or when only user messages are left)."""
        if all(is_user_message(item) for item in call.items):
            return call, []
        count = await entry.provider.count_tokens(call)
        if count.tokens <= threshold:
            return call, []
        item = self.item(project_id, (await self.summarise(entry, call.items)).text)
        return replace(call, items=self.expand(project_id, [*call.items, item])), [item]
