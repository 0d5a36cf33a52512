"""Stored foreground responses while they run in this process: a GET answers from their stream builder's snapshot.

A foreground response is written once, when it ends (ARCHITECTURE.md, "The hot path"); until then it is only here:
one dict entry from before `response.created` is sent until its final write has committed (or failed), nothing per
token, and a snapshot is built only when someone asks. Another process does not see it (it 404s until the write).
All on the event loop: no lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from parley.schema.present import present_response
from parley.store.base import Page, PageQuery
from parley.store.pages import list_page

if TYPE_CHECKING:
    from parley.services.responses import PreparedResponse

# What a response that ended keeps showing until its write commits: the write may still fail, and a client must not
# be told it completed before it can be retrieved or continued (services/responses.py `_persist_or_fail`).
_NOT_FINAL = {"status": "in_progress", "completed_at": None, "incomplete_details": None, "error": None, "usage": None}


class LiveResponses:
    def __init__(self) -> None:
        self._running: dict[str, PreparedResponse] = {}

    def add(self, prepared: PreparedResponse) -> None:
        """The response will be stored when it ends (`store` true): findable from now on."""
        if prepared.store:
            self._running[prepared.response["id"]] = prepared

    def discard(self, prepared: PreparedResponse) -> None:
        """Its final write committed (the store answers from now on), or failed, or never came (nothing will)."""
        self._running.pop(prepared.response["id"], None)

    def ids(self) -> list[str]:
        return list(self._running)

    def find(self, project_id: str, response_id: str) -> PreparedResponse | None:
        """The running response of this project with this id (another project's is not found)."""
        prepared = self._running.get(response_id)
        return prepared if prepared is not None and prepared.project_id == project_id else None

    def snapshot(self, prepared: PreparedResponse, include: list[str] | None) -> dict[str, Any]:
        """The response as it stands, shown as a stored one is (`include[]`): status `in_progress` until its row is
        written, usage null, its items as they are (those still being generated with what they hold so far)."""
        response = prepared.run.builder.snapshot()
        if response["status"] != "in_progress":
            response.update(_NOT_FINAL)  # it ended; its write has not committed yet
        return present_response(response, include)

    def input_items(self, prepared: PreparedResponse, page: PageQuery) -> Page:
        """Its own input items as the store will list them (`after`/`before` name items of this response)."""
        return list_page(prepared.input_items, page)
