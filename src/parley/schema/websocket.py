"""Client events of WebSocket mode (api-surface.md §6.7): `response.create` and `response.steer`.

`response.create` carries the fields of `POST /v1/responses` (validated by the same model) plus the WebSocket
envelope: `type`, `stream_id` (the lane) and `generate`. `stream` is implicit: whatever the client sends, the
response streams (the SDK's own example sends `stream: true`; Open Responses says not to send it at all).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from parley.schema.id_fields import BodyId
from parley.schema.requests import CreateResponseRequest

CLIENT_EVENT_TYPES = ("response.create", "response.steer")
# A lane name: what a client may reasonably choose (the SDK types it as a plain string).
STREAM_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class ResponseCreateEvent(CreateResponseRequest):
    """`response.create`: a create request and its envelope."""

    type: Literal["response.create"]
    stream_id: str | None = None
    generate: bool | None = None  # false: prepare the response (state, input) without calling the model

    @model_validator(mode="before")
    @classmethod
    def _always_streams(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {**data, "stream": True}
        return data

    @property
    def generates(self) -> bool:
        """`generate: false`, or a prompt-cache prewarm (which overrides `generate`), call no model."""
        prewarm = self.prompt_cache_options is not None and self.prompt_cache_options.prewarm
        return self.generate is not False and not prewarm


class SteerEvent(BaseModel):
    """`response.steer`: input for a response running on this connection. `stream_id` is not part of it (the
    target response's lane is used); unknown keys are ignored."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["response.steer"]
    previous_response_id: BodyId
    input: str | list[dict[str, Any]]
