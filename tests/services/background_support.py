"""A background response as `POST /v1/responses` with `background: true` accepts it: stored queued with its first
events logged and its job queued, for the runner tests."""

from __future__ import annotations

from parley.engine.stream import StreamBuilder, sse_frame
from parley.ids import new_id
from parley.schema.requests import CreateResponseRequest
from parley.schema.response import new_response
from parley.store.sql import SqlStore


async def accepted_background(store: SqlStore, project_id: str) -> str:
    """Queue one background response ("hi" to model "m") as its create does; its id."""
    response = new_response(CreateResponseRequest(model="m", input="hi", background=True),
                            response_id=new_id("resp"), model="m", status="queued", store=True)
    first = StreamBuilder(response, emit=True, obfuscate=False).start()  # what accepting it logs
    await store.enqueue_background(project_id, response, [], {"response": dict(response)},
                                   [(e["sequence_number"], sse_frame(e)) for e in first])
    return str(response["id"])
