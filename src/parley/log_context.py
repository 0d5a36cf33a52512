"""The id of the request being served, for log lines only.

A context variable rather than a parameter threaded through every layer: each request runs in its own task
(and the tasks it starts copy its context), so concurrent requests, and two apps in one process, each see
their own id; every request sets its own first thing (api/http.py `Endpoint`), so it needs no reset.
Background runs set the id of the response they run.
"""

from __future__ import annotations

from contextvars import ContextVar

_REQUEST_ID: ContextVar[str] = ContextVar("parley_request_id", default="-")


def current_request_id() -> str:
    return _REQUEST_ID.get()


def set_request_id(request_id: str) -> None:
    _REQUEST_ID.set(request_id)
