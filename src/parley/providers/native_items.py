"""Reading canonical items for the native translations: the pieces every one of them needs.

An item's `upstream` (providers/base.py ReasoningState, HostedItem) goes back only to the upstream kind and
model that made it; anywhere else it is model state that cannot be taken and is left out.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
from typing import Any

import orjson

from parley.errors import InvalidRequest
from parley.ids import new_id
from parley.providers.base import Item

# An upstream's own state kept with an item, whose `kind` and `model` say where it may go back.
Upstream = dict[str, Any]


def upstream_state(item: Item, kind: str, model: str) -> Upstream | None:
    """The item's upstream state if this kind and model made it."""
    state = item.get("upstream")
    if isinstance(state, dict) and state.get("kind") == kind and state.get("model") == model:
        return state
    return None


def state(kind: str, model: str, **data: Any) -> Upstream:
    return {"kind": kind, "model": model, **data}


def reasoning_text(item: Item) -> str:
    return "".join(p.get("text", "") for p in item.get("content") or () if p.get("type") == "reasoning_text")


def output_text(output: Any) -> str:
    """A function_call_output's output as text (a string, or the text of its content parts)."""
    if isinstance(output, str):
        return output
    return "\n".join(p.get("text", "") for p in output if p.get("type") in ("input_text", "output_text"))


def call_arguments(item: Item) -> str:
    """A client call's arguments as the upstream saw them: custom tools are functions of `{"input": ...}`."""
    if item["type"] == "custom_tool_call":
        return orjson.dumps({"input": item["input"]}).decode()
    arguments: str = item["arguments"]
    return arguments


def arguments_object(item: Item, path: str) -> dict[str, Any]:
    """A call's arguments as a JSON object (Anthropic's `input`, Gemini's `args`); a 400 when they are not one."""
    text = call_arguments(item)
    try:
        value = orjson.loads(text) if text.strip() else {}
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise InvalidRequest("A function call's arguments must be a JSON object for this model.",
                             param=f"{path}.arguments")
    return value


def upstream_call_name(item: Item) -> str:
    """The function name the upstream saw for a (possibly namespaced) call."""
    namespace = item.get("namespace")
    name: str = item["name"]
    return f"{namespace}__{name}" if namespace and namespace != name else name  # equal: a deferred top-level one


def data_url(url: str, path: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a `data:<type>;base64,<data>` URL; None for any other URL."""
    if not url.startswith("data:"):
        return None
    head, sep, payload = url.partition(",")
    if not sep or not head.endswith(";base64"):
        raise InvalidRequest("A data URL must be base64: data:<media type>;base64,<data>.", param=path)
    try:
        base64.b64decode(payload[:64] + "=" * (-len(payload[:64]) % 4), validate=True)
    except binascii.Error:
        raise InvalidRequest("A data URL's data is not valid base64.", param=path) from None
    return head[5:-7] or "application/octet-stream", payload


def guessed_media_type(url: str, default: str) -> str:
    guessed, _ = mimetypes.guess_type(url.split("?", 1)[0])
    return guessed or default


def image_url(part: Item, path: str, vision: bool) -> str:
    """The URL of an input_image part (https or data); a 400 when the model takes no images or it has none."""
    if not vision:
        raise InvalidRequest("This model does not accept images (its profile says vision = false).",
                             param=path, code="unsupported_value")
    url = part.get("image_url")
    if not url:
        raise InvalidRequest("input_image needs an image_url (https or data URL) for this model.",
                             param=f"{path}.image_url", code="unsupported_value")
    return str(url)


def file_text(part: Item) -> str:
    """What a model that cannot read a file gets: its extracted text (services/file_inputs.py)."""
    return f"[Contents of the file {part['filename']}]\n{part['text']}"


def unsupported_part(kind: str, path: str) -> InvalidRequest:
    return InvalidRequest(f"Content part type '{kind}' is not supported by this model.", param=f"{path}.type",
                          code="unsupported_value")


def unsupported_item(kind: str, path: str) -> InvalidRequest:
    return InvalidRequest(f"Input item type '{kind}' cannot be sent to this model.", param=f"{path}.type",
                          code="unsupported_value")


def new_call_id() -> str:
    return new_id("call")
