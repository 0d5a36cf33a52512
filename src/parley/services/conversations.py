"""The conversations use case: conversation CRUD, its items, and the history a response runs on.

A response created with `conversation` sees the conversation's items before its own input (loaded once,
when it starts) and, when it ends completed or incomplete, appends its new input and output items in one
atomic, contiguous append (store/sql_conversations.py). Failed and cancelled responses append nothing, so
retrying the same input never duplicates a turn.
"""

from __future__ import annotations

from typing import Any

from parley.errors import InvalidRequest, NotFound
from parley.schema.conversations import AddItemsRequest, CreateConversationRequest, UpdateConversationRequest
from parley.schema.items import Item, normalize_input
from parley.schema.present import presenter
from parley.services.compaction import Compactor, check_compaction_trigger
from parley.store.base import (
    ConversationRecord,
    ConversationStore,
    ConversationTurn,
    Page,
    PageQuery,
    ResponseStore,
)

# Responses whose items join their conversation (api-surface.md §1.3: "when the response finishes").
APPENDED_STATUSES = frozenset({"completed", "incomplete"})


def conversation_object(record: ConversationRecord) -> dict[str, Any]:
    return {"id": record.id, "object": "conversation", "created_at": record.created_at, "metadata": record.metadata}


def _not_found(conversation_id: str, param: str = "conversation_id") -> NotFound:
    return NotFound(f"Conversation with id '{conversation_id}' not found.", param=param)


class ConversationsService:
    def __init__(self, store: ConversationStore, responses: ResponseStore, compactor: Compactor,
                 kept: bool = False) -> None:
        self._store = store
        self._responses = responses  # to resolve item_reference items
        self._compactor = compactor
        # Whether the store keeps conversations' items (store/conversation_cache.py): the next turn's history then
        # starts with the same item objects (ModelCall.continuable), so what was computed on them can be kept.
        self.kept = kept

    # -- conversations ---------------------------------------------------------------------------

    async def create(self, project_id: str, body: CreateConversationRequest) -> dict[str, Any]:
        items = await self._ingest(project_id, body.items) if body.items else []
        record = await self._store.create_conversation(project_id, body.metadata or {}, items)
        return conversation_object(record)

    async def retrieve(self, project_id: str, conversation_id: str) -> dict[str, Any]:
        record = await self._store.get_conversation(project_id, conversation_id)
        if record is None:
            raise _not_found(conversation_id)
        return conversation_object(record)

    async def update(self, project_id: str, conversation_id: str, body: UpdateConversationRequest) -> dict[str, Any]:
        record = await self._store.update_conversation(project_id, conversation_id, body.metadata or {})
        if record is None:
            raise _not_found(conversation_id)
        return conversation_object(record)

    async def delete(self, project_id: str, conversation_id: str) -> dict[str, Any]:
        if not await self._store.delete_conversation(project_id, conversation_id):
            raise _not_found(conversation_id)
        return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}

    # -- items -----------------------------------------------------------------------------------

    async def add_items(self, project_id: str, conversation_id: str, body: AddItemsRequest) -> list[Item]:
        await self.retrieve(project_id, conversation_id)  # 404 before validating items against it
        items = await self._ingest(project_id, body.items)
        if not await self._store.append_conversation_items(project_id, conversation_id, items):
            raise _not_found(conversation_id)
        return items

    async def list_items(self, project_id: str, conversation_id: str, page: PageQuery,
                         include: list[str] | None = None) -> Page:
        result = await self._store.list_conversation_items(project_id, conversation_id, page)
        if result is None:
            raise _not_found(conversation_id)
        present = presenter(include)
        return Page([present(item) for item in result.data], result.has_more)

    async def retrieve_item(self, project_id: str, conversation_id: str, item_id: str,
                            include: list[str] | None = None) -> Item:
        await self.retrieve(project_id, conversation_id)
        item = await self._store.get_conversation_item(project_id, conversation_id, item_id)
        if item is None:
            raise NotFound(f"Item with id '{item_id}' not found in conversation '{conversation_id}'.",
                           param="item_id")
        return presenter(include)(item)

    async def delete_item(self, project_id: str, conversation_id: str, item_id: str) -> dict[str, Any]:
        """Returns the conversation (api-surface.md §1.3), not a deleted marker."""
        conversation = await self.retrieve(project_id, conversation_id)
        if not await self._store.delete_conversation_item(project_id, conversation_id, item_id):
            raise NotFound(f"Item with id '{item_id}' not found in conversation '{conversation_id}'.",
                           param="item_id")
        return conversation

    # -- use in POST /v1/responses ---------------------------------------------------------------

    async def history(self, project_id: str, conversation_id: str) -> list[Item]:
        """The conversation's items, oldest first, in one query; 404 naming `conversation`. Shared with later turns
        when `kept`: never changed."""
        items = await self._store.load_conversation(project_id, conversation_id)
        if items is None:
            raise _not_found(conversation_id, "conversation")
        return items

    def turn(self, conversation_id: str, response: dict[str, Any], input_items: list[Item]) -> ConversationTurn | None:
        """What a finished response appends to its conversation: its new input and its output, if it completed (or
        was incomplete); None otherwise. The store writes it with the response (`save_response`, a background run's
        final flush): both or neither."""
        if response["status"] not in APPENDED_STATUSES:
            return None
        return ConversationTurn(conversation_id, input_items + response["output"])

    async def append_turn(self, project_id: str, turn: ConversationTurn) -> None:
        """The turn of a response that is not stored (`store: false`)."""
        # False: the conversation was deleted while the response ran; its items have nowhere to go.
        await self._store.append_conversation_items(project_id, turn.conversation_id, turn.items)

    async def _ingest(self, project_id: str, raw: list[dict[str, Any]]) -> list[Item]:
        """Validate items like response input (params named `items[...]`) and resolve item references."""
        check_compaction_trigger(raw, "items")
        try:
            items = normalize_input(raw)
        except InvalidRequest as err:
            if err.param is not None and err.param.startswith("input"):
                err.message = err.message.replace(f"'{err.param}'", f"'items{err.param[5:]}'")
                err.param = "items" + err.param[5:]
            raise
        self._compactor.check_input(project_id, items, "items")
        refs = [item["id"] for item in items if item["type"] == "item_reference"]
        if not refs:
            return items
        found = await self._responses.find_items(project_id, refs)
        resolved: list[Item] = []
        for index, item in enumerate(items):
            if item["type"] == "item_reference":
                if item["id"] not in found:
                    raise NotFound(f"Item with id '{item['id']}' not found.", param=f"items[{index}].id")
                item = found[item["id"]]
            resolved.append(item)
        return resolved
