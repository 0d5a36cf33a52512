"""Persistence contracts, one small protocol per aggregate. Implementations: store/sql.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

Item = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: str
    project_id: str
    name: str
    key_prefix: str
    created_at: int
    revoked_at: int | None


@dataclass(frozen=True, slots=True)
class PromptRecord:
    """One version of a prompt template. `body` is {instructions, input, model, metadata}."""

    id: str
    version: int
    created_at: int
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class WebPageRecord:
    """A page in the web_search page cache: its readable text, fetched at `fetched_at` (Unix seconds)."""

    url: str
    title: str
    text: str
    fetched_at: int


@dataclass(frozen=True, slots=True)
class PageQuery:
    limit: int = 20
    order: Literal["asc", "desc"] = "desc"
    after: str | None = None
    before: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    data: list[Item]
    has_more: bool


@dataclass(frozen=True, slots=True)
class PromptPage:
    data: list[PromptRecord]
    has_more: bool


class ResponseStore(Protocol):
    async def save_response(self, project_id: str, response: dict[str, Any], input_items: list[Item]) -> None:
        """Store a finished response: its row, its new input items and its output items, atomically."""

    async def get_response(self, project_id: str, response_id: str) -> dict[str, Any] | None: ...

    async def delete_response(self, project_id: str, response_id: str) -> bool: ...

    async def load_context(self, project_id: str, response_id: str) -> list[Item] | None:
        """Inputs and outputs of the whole previous_response_id chain, oldest first, in O(1) queries."""

    async def find_items(self, project_id: str, item_ids: list[str]) -> dict[str, Item]: ...

    async def list_input_items(self, project_id: str, response_id: str, page: PageQuery) -> Page | None: ...


class KeyStore(Protocol):
    async def create_key(self, project_id: str, name: str) -> tuple[ApiKeyRecord, str]: ...

    async def list_keys(self, project_id: str | None = None) -> list[ApiKeyRecord]: ...

    async def revoke_key(self, key_id: str) -> bool: ...

    async def find_key(self, key_hash: str) -> ApiKeyRecord | None: ...

    async def any_active_key(self) -> bool: ...


class PromptStore(Protocol):
    async def create_prompt(self, project_id: str, body: dict[str, Any]) -> PromptRecord:
        """A new prompt (new `pmpt_` id) at version 1."""

    async def add_prompt_version(self, project_id: str, prompt_id: str, body: dict[str, Any]) -> PromptRecord | None:
        """The next version (latest + 1, safe under concurrency); None if the prompt does not exist."""

    async def get_prompt(self, project_id: str, prompt_id: str, version: int | None = None) -> PromptRecord | None:
        """That version, or the latest one when `version` is None."""

    async def list_prompts(self, project_id: str, page: PageQuery) -> PromptPage:
        """The latest version of each prompt, in creation order; cursors are prompt ids."""

    async def delete_prompt(self, project_id: str, prompt_id: str) -> bool:
        """Delete every version."""


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    id: str
    created_at: int
    metadata: dict[str, str]


class ConversationStore(Protocol):
    async def create_conversation(
        self, project_id: str, metadata: dict[str, str], items: list[Item]
    ) -> ConversationRecord: ...

    async def get_conversation(self, project_id: str, conversation_id: str) -> ConversationRecord | None: ...

    async def update_conversation(
        self, project_id: str, conversation_id: str, metadata: dict[str, str]
    ) -> ConversationRecord | None:
        """Replace the metadata; None if the conversation does not exist."""

    async def delete_conversation(self, project_id: str, conversation_id: str) -> bool:
        """Delete the conversation and its items."""

    async def append_conversation_items(self, project_id: str, conversation_id: str, items: list[Item]) -> bool:
        """Append atomically and contiguously, after every earlier append; False if the conversation is gone."""

    async def load_conversation(self, project_id: str, conversation_id: str) -> list[Item] | None:
        """Every item, oldest first, in O(1) queries; None if the conversation does not exist."""

    async def list_conversation_items(self, project_id: str, conversation_id: str, page: PageQuery) -> Page | None:
        """A page of items (cursors are item ids); None if the conversation does not exist."""

    async def get_conversation_item(self, project_id: str, conversation_id: str, item_id: str) -> Item | None: ...

    async def delete_conversation_item(self, project_id: str, conversation_id: str, item_id: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class FileRecord:
    """An uploaded file; its bytes live in blob storage under `id`. Times are Unix seconds. `status` is
    `uploading` until its bytes are all stored (such a row is invisible, and expires at the upload's
    deadline so that an upload cut short by a crash is swept), then `processed`."""

    id: str
    project_id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    expires_at: int | None
    content_type: str
    status: str = "processed"
    status_details: str | None = None


@dataclass(frozen=True, slots=True)
class FilePage:
    data: list[FileRecord]
    has_more: bool


class FileStore(Protocol):
    """File rows (store/sql_files.py). Reads return only finished files whose `expires_at` has not passed."""

    async def insert_file(self, record: FileRecord) -> None: ...

    async def complete_file(self, record: FileRecord) -> bool:
        """The `uploading` row becomes `record` (its name, purpose, size, type, real expiry and status); False
        if the row is gone (swept after the upload's deadline)."""

    async def get_file(self, project_id: str, file_id: str, now: int) -> FileRecord | None: ...

    async def list_files(self, project_id: str, purpose: str | None, page: PageQuery, now: int) -> FilePage:
        """Cursors are file ids; the order is the upload order."""

    async def delete_file(self, project_id: str, file_id: str) -> FileRecord | None:
        """The deleted row (whatever its state), or None if there was none: exactly one caller gets it."""

    async def expired_files(self, now: int, limit: int) -> list[FileRecord]:
        """Rows of every project whose `expires_at` is at or before `now` (stale uploads included)."""


class FileChunkStore(Protocol):
    """File bytes in the database, in numbered blocks (table `file_chunks`)."""

    async def put_file_chunk(self, file_id: str, seq: int, data: bytes) -> None: ...

    async def get_file_chunk(self, file_id: str, seq: int) -> bytes | None: ...

    async def delete_file_chunks(self, file_id: str) -> None: ...
