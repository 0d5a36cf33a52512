"""The `image_generation` tool: the model asks for an image; an images upstream (providers/images.py) makes it.

Offered as a function `image_generation(prompt, action?)` (`action`, generate or edit, only when the tool's own
`action` is auto). Each call is an `image_generation_call` item (`result`: the image in base64, `revised_prompt`,
`action`, and the `background` / `output_format` / `quality` / `size` the upstream reports) with the events
`in_progress` → `generating` → `partial_image`* → `completed`. An edit changes the latest image of the context
(an earlier call's result along `previous_response_id` or a conversation, or an `input_image` the user sent),
with the tool's `input_image_mask` if any. The model is told the image was made and shown, never given it.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

from parley.errors import ParleyError
from parley.ids import new_id
from parley.providers.images import ImageInput, ImageJob, ImageResult, OnPartial
from parley.tools.base import BuiltinCall, Citations, ItemEmitter, ToolOutcome, function_pair

Item = dict[str, Any]
NAME = "image_generation"
# Tool settings sent upstream as they are (when the request sets them).
SETTINGS = ("background", "moderation", "output_compression", "output_format", "quality", "size", "input_fidelity")
EDIT_ONLY = ("input_fidelity",)
# Settings also shown on the item until the upstream reports its own.
ITEM_FIELDS = ("background", "output_format", "quality", "size")
MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif", "svg": "image/svg+xml"}


class ImageMaker(Protocol):
    async def make(self, job: ImageJob, on_partial: OnPartial) -> ImageResult: ...


LatestImage = Callable[[], Awaitable[ImageInput | None]]


def function(action: str) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "prompt": {"type": "string", "description": "What the image should show (or, for an edit, what to change), "
                   "in detail."},
    }
    if action == "auto":
        properties["action"] = {"type": "string", "enum": ["generate", "edit"],
                                "description": "generate a new image, or edit the latest image of the conversation "
                                "(default: generate)."}
    doing = {"generate": "Generate an image", "edit": "Edit the latest image of the conversation",
             "auto": "Generate an image, or edit the latest image of the conversation,"}[action]
    return {
        "name": NAME,
        "description": f"{doing} from a text prompt. The image is shown to the user; do not repeat it in your "
                       "answer, describe it briefly if useful.",
        "parameters": {"type": "object", "properties": properties, "required": ["prompt"],
                       "additionalProperties": False},
    }


def parse_arguments(arguments: str) -> tuple[str, str | None]:
    """(prompt, action asked for) from the call's arguments; a raw text is taken as the prompt."""
    try:
        data = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return arguments, None
    if isinstance(data, str):
        return data, None
    if not isinstance(data, dict):
        return "", None
    prompt = data.get("prompt")
    action = data.get("action")
    return (prompt if isinstance(prompt, str) else ""), (action if action in ("generate", "edit") else None)


class ImageGenerationTool:
    def __init__(self, maker: ImageMaker, model: str, *, action: str, settings: dict[str, Any], partial_images: int,
                 latest: LatestImage, mask: ImageInput | None) -> None:
        self._maker = maker
        self._model = model
        self._action = action
        self._settings = settings
        self._partial_images = partial_images
        self._latest = latest
        self._mask = mask

    @property
    def upstream_name(self) -> str:
        return NAME

    def function(self) -> dict[str, Any]:
        return function(self._action)

    def _new_item(self, action: str) -> Item:
        item: Item = {"id": new_id("ig"), "type": "image_generation_call", "status": "in_progress", "result": None,
                      "action": action}
        item.update({key: self._settings[key] for key in ITEM_FIELDS if key in self._settings})
        return item

    async def run(self, call: BuiltinCall, emit: ItemEmitter, citations: Citations) -> ToolOutcome:
        prompt, asked = parse_arguments(call.arguments)
        action = self._action if self._action != "auto" else (asked or "generate")
        item = self._new_item(action)
        emit.start(item)
        emit.progress("response.image_generation_call.in_progress")
        if not prompt.strip():
            return self.failed(call, "the call had no prompt (expected {\"prompt\": \"...\"})", item)
        images: tuple[ImageInput, ...] = ()
        if action == "edit":
            try:
                latest = await self._latest()
            except ParleyError as err:
                return self.failed(call, f"the image to edit could not be read ({err.message})", item)
            if latest is None:
                return self.failed(call, "there is no image in the conversation to edit", item)
            images = (latest,)
        settings = {key: value for key, value in self._settings.items() if action == "edit" or key not in EDIT_ONLY}
        item = {**item, "status": "generating"}
        emit.update(item)
        emit.progress("response.image_generation_call.generating")

        def partial(index: int, b64: str, reported: dict[str, str]) -> None:
            emit.progress("response.image_generation_call.partial_image",
                          {"partial_image_b64": b64, "partial_image_index": index, **_event_fields(item, reported)})

        job = ImageJob(prompt, self._model, settings, images, self._mask if images else None, self._partial_images)
        try:
            result = await self._maker.make(job, partial)
        except ParleyError as err:
            return self.failed(call, err.message, item)
        item = {**item, **result.reported, "status": "completed", "result": result.b64,
                "revised_prompt": result.revised_prompt or prompt}
        emit.update(item)
        emit.progress("response.image_generation_call.completed")
        return ToolOutcome(item, model_text(item))

    def failed(self, call: BuiltinCall, message: str, item: Item | None) -> ToolOutcome:
        base = item or self._new_item(self._action if self._action != "auto" else "generate")
        failed = {**base, "status": "failed", "result": None}
        return ToolOutcome(failed, f"The image could not be made: {message}.")


def _event_fields(item: Item, reported: dict[str, str]) -> dict[str, str]:
    return {**{key: item[key] for key in ITEM_FIELDS if isinstance(item.get(key), str)}, **reported}


def model_text(item: Item) -> str:
    if item.get("status") != "completed":
        return "The image could not be made."
    made = "edited" if item.get("action") == "edit" else "generated"
    return (f"The image was {made} and shown to the user. The prompt used: {item.get('revised_prompt') or ''}"
            .rstrip())


def image_of(item: Item) -> ImageInput | None:
    """The image a finished image_generation_call made (what a later edit starts from)."""
    result = item.get("result")
    if item.get("status") != "completed" or not isinstance(result, str) or not result:
        return None
    fmt = item.get("output_format")
    return ImageInput(base64.b64decode(result), MIME.get(fmt if isinstance(fmt, str) else "png", "image/png"))


def replay(item: Item) -> list[Item]:
    """A stored image_generation_call as the function call the model made and what it was told."""
    prompt = item.get("revised_prompt") or ""
    arguments: dict[str, Any] = {"prompt": prompt}
    if item.get("action") in ("generate", "edit"):
        arguments["action"] = item["action"]
    return function_pair(str(item.get("id") or new_id("ig")), NAME, orjson.dumps(arguments).decode(),
                         model_text(item))
