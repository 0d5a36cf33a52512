"""Persistence contracts, one small protocol per aggregate. Implementations: store/sql.py."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from parley.config import RateLimits

Item = dict[str, Any]
KeyRole = Literal["project", "admin"]


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A key as stored (never its secret). An admin key belongs to no project (`project_id` is "")."""

    id: str
    project_id: str
    name: str
    key_prefix: str
    created_at: int
    revoked_at: int | None
    role: KeyRole = "project"
    expires_at: int | None = None
    allowed_models: tuple[str, ...] | None = None  # None: every model
    limits: RateLimits | None = None


@dataclass(frozen=True, slots=True)
class KeySpec:
    """What a new key, or an update of one, sets (an update leaves the fields named in `keep` as they are)."""

    name: str = ""
    role: KeyRole = "project"
    expires_at: int | None = None
    allowed_models: tuple[str, ...] | None = None
    limits: RateLimits | None = None
    keep: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One response's usage (table usage_records; services/usage.py). Costs are in nano-USD."""

    response_id: str
    created_at: int
    project_id: str
    api_key_id: str | None
    model: str
    upstream_model: str
    upstream_host: str
    status: str
    background: bool
    input_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    tool_calls: dict[str, int]
    input_cost: int
    cached_cost: int
    output_cost: int
    tool_cost: int
    latency_ms: int
    ttft_ms: int | None
    # When its steps happened (engine/timing.py: `started_at` in Unix ms, `marks`); None for rows made before
    # migration 12 or without a run.
    timeline: dict[str, Any] | None = None

    @property
    def cost(self) -> int:
        return self.input_cost + self.cached_cost + self.output_cost + self.tool_cost


UsageGroup = Literal["project_id", "api_key_id", "model"]


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """Usage records with `start <= created_at < end`, summed per bucket of `width` seconds counted from
    `origin` (bucket n covers origin + n*width ...) and per value of the `group_by` columns."""

    start: int
    end: int
    origin: int
    width: int
    group_by: tuple[UsageGroup, ...] = ()
    project_ids: tuple[str, ...] = ()  # empty: every one
    api_key_ids: tuple[str, ...] = ()
    models: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """The sums of one bucket and group (`group` holds the group_by columns' values)."""

    bucket: int
    group: dict[str, str | None]
    requests: int
    input_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    input_cost: int
    cached_cost: int
    output_cost: int
    tool_cost: int


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


@dataclass(frozen=True, slots=True)
class ResponseFilter:
    """What GET /v1/responses/list lists: exact model, status and metadata values, created_at in [after, before)."""
    model: str | None = None
    status: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    created_after: int | None = None
    created_before: int | None = None


@dataclass(frozen=True, slots=True)
class ConversationTurn:
    """What a finished response appends to its conversation (its new input and its output), written in the same
    transaction as the response itself: a crash leaves both or neither."""

    conversation_id: str
    items: list[Item]


class ResponseStore(Protocol):
    async def save_response(self, project_id: str, response: dict[str, Any], input_items: list[Item],
                            usage: UsageRecord | None = None, turn: ConversationTurn | None = None,
                            done: Callable[[], None] | None = None) -> None:
        """Store a finished response: its row, its new input items, its output items, its usage record and its
        conversation turn (dropped if the conversation is gone), atomically. `done` is called once the write has
        committed or failed, also if the caller was cancelled meanwhile (the write goes on: store/writer.py)."""

    def record_usage(self, record: UsageRecord) -> None:
        """Queue a usage record for the next group commit (a response that stores nothing else)."""

    async def get_response(self, project_id: str, response_id: str) -> dict[str, Any] | None: ...

    async def delete_response(self, project_id: str, response_id: str) -> bool: ...

    async def load_context(self, project_id: str, response_id: str) -> list[Item] | None:
        """Inputs and outputs of the whole previous_response_id chain, oldest first, in O(1) queries."""

    async def deletion_count(self) -> int:
        """How many responses were ever deleted, by any process (bumped in each deleting transaction)."""

    async def existing_responses(self, project_id: str, response_ids: Sequence[str]) -> set[str]:
        """Which of these responses of the project are stored (one query)."""

    async def find_items(self, project_id: str, item_ids: list[str]) -> dict[str, Item]: ...

    async def list_input_items(self, project_id: str, response_id: str, page: PageQuery) -> Page | None: ...

    async def list_responses(self, project_id: str, where: ResponseFilter, page: PageQuery) -> Page:
        """Stored responses (without `output`), newest first by default, paged over (created_at, id)."""


class KeyStore(Protocol):
    async def create_key(self, project_id: str, name: str, spec: KeySpec | None = None) -> tuple[ApiKeyRecord, str]:
        """A new key and its secret (returned once, stored only hashed)."""

    async def list_keys(self, project_id: str | None = None) -> list[ApiKeyRecord]: ...

    async def get_key(self, key_id: str) -> ApiKeyRecord | None: ...

    async def update_key(self, key_id: str, spec: KeySpec) -> ApiKeyRecord | None:
        """Set name, expiry, allowed models and limits of an active key (fields named in `spec.keep` stay)."""

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

    async def expire_file(self, project_id: str, file_id: str, now: int) -> tuple[FileRecord | None, bool]:
        """A live file expires `now` (invisible at once, swept if its deletion is not finished): its row (None if
        there is none, whatever its state) and whether this call is the one that found it live."""

    async def delete_file(self, project_id: str, file_id: str) -> FileRecord | None:
        """The deleted row (whatever its state), or None if there was none: exactly one caller gets it."""

    async def expired_files(self, now: int, limit: int) -> list[FileRecord]:
        """Rows of every project whose `expires_at` is at or before `now` (stale uploads included)."""


class FileChunkStore(Protocol):
    """File bytes in the database, in numbered blocks (table `file_chunks`)."""

    async def put_file_chunk(self, file_id: str, seq: int, data: bytes) -> None: ...

    async def get_file_chunk(self, file_id: str, seq: int) -> bytes | None: ...

    async def delete_file_chunks(self, file_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class ContainerRecord:
    """A container of the code_interpreter tool (services/containers.py). Times are Unix seconds."""

    id: str
    project_id: str
    name: str
    created_at: int
    last_active_at: int
    expires_minutes: int
    memory_limit: str
    status: str = "running"  # running | expired
    session_owner: str | None = None
    files_generation: int = 0


@dataclass(frozen=True, slots=True)
class ContainerFileRecord:
    id: str
    container_id: str
    project_id: str
    path: str  # /mnt/data/...
    bytes: int
    source: str  # user | assistant
    created_at: int


class ContainerStore(Protocol):
    """Containers and their file rows (store/sql_containers.py)."""

    async def insert_container(self, record: ContainerRecord, files: Sequence[ContainerFileRecord] = ()) -> None:
        """The container with its first files' rows (their bytes stored, pending), in one transaction."""
    async def get_container(self, project_id: str, container_id: str) -> ContainerRecord | None: ...
    async def list_containers(self, project_id: str, name: str | None,
                              page: PageQuery) -> tuple[list[ContainerRecord], bool]: ...
    async def count_containers(self, project_id: str | None, now: int) -> int:
        """Running, unexpired containers of the project (or of every project)."""
    async def delete_container(self, project_id: str, container_id: str) -> list[str] | None:
        """Removes the container and its file rows, their bytes pending; the ids of its files, or None if there was
        none."""
    async def touch_container(self, container_id: str, now: int, owner: str | None) -> None:
        """last_active_at = now (and session_owner = owner when given)."""
    async def expire_containers(self, now: int, limit: int) -> list[tuple[str, list[str]]]:
        """Marks running containers idle past their expiry as expired and removes their file rows, their bytes
        pending: (id, file ids) of each container this call expired."""
    async def running_containers(self, container_ids: list[str], now: int) -> set[str]: ...
    async def change_container_files(self, container_id: str, added: list[ContainerFileRecord],
                                     removed: list[str]) -> tuple[int, list[str]]:
        """Delete and insert file rows in one transaction, a row already at an added path replaced; the added
        bytes stop pending, the removed and replaced ones pend. The new files_generation and the ids of the rows
        replaced so."""
    async def pend_blobs(self, keys: Sequence[str], due_at: int) -> None:
        """Bytes about to be written under `keys` whose rows are not there yet (removed at `due_at` unless a row
        claims them)."""
    async def drop_pending_blobs(self, keys: Sequence[str]) -> None:
        """These bytes are gone (or claimed): nothing is left to remove."""
    async def due_blobs(self, now: int, limit: int) -> list[str]:
        """Keys pending since before `now` whose bytes no row claims: bytes to remove."""
    async def list_container_files(self, project_id: str, container_id: str,
                                   page: PageQuery) -> tuple[list[ContainerFileRecord], bool]: ...
    async def all_container_files(self, container_id: str) -> list[ContainerFileRecord]: ...
    async def get_container_file(self, project_id: str, container_id: str,
                                 file_id: str) -> ContainerFileRecord | None: ...
