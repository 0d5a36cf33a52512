"""An OpenAI-compatible images upstream: `POST /images/generations` (JSON) and `POST /images/edits`
(multipart/form-data with `image` / `image[]` and `mask`), for the `image_generation` tool.

With partial images asked for (and the upstream configured as streaming), the request carries `stream: true` and
`partial_images`; the reply is Server-Sent Events `image_generation.partial_image` / `image_edit.partial_image`
(`b64_json`, `partial_image_index`) then `*.completed`, as OpenAI's images API streams. Otherwise the reply is
`{"data": [{"b64_json", "revised_prompt"?}], "background"?, "output_format"?, "quality"?, "size"?}`.
Failures are `UpstreamError`s (the tool turns them into a failed item), in the same shapes as a model upstream's.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from parley.errors import UpstreamError
from parley.providers.http1 import Endpoint, Http1Pool
from parley.providers.redact import SecretMasker
from parley.providers.upstream_http import (
    TRANSPORT_ERRORS,
    error_report,
    log_failure,
    reported_error,
    status_error,
    transport_error,
)

# What the upstream reports about the image it made, copied onto the image_generation_call item.
REPORTED = ("background", "output_format", "quality", "size")


@dataclass(frozen=True, slots=True)
class ImageInput:
    data: bytes
    mime: str  # image/png, image/jpeg, image/webp


@dataclass(frozen=True, slots=True)
class ImageJob:
    prompt: str
    model: str
    settings: dict[str, Any]  # size, quality, background, output_format, output_compression, moderation, ...
    images: tuple[ImageInput, ...] = ()  # an edit when not empty
    mask: ImageInput | None = None
    partial_images: int = 0


@dataclass(slots=True)
class ImageResult:
    b64: str
    revised_prompt: str | None = None
    reported: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ImagesEndpoint:
    base_url: str
    api_key: str | None = None
    streaming: bool = True
    connect_timeout_s: float = 10.0
    timeout_s: float = 120.0
    max_image_bytes: int = 32 * 1024 * 1024


OnPartial = Callable[[int, str, dict[str, str]], None]  # (index, base64 image, reported settings)


class ImagesUpstream:
    def __init__(self, endpoint: ImagesEndpoint, http: Http1Pool) -> None:
        self._cfg = endpoint
        self._http = http
        root = endpoint.base_url.rstrip("/")
        self._generations = Endpoint.parse(root + "/images/generations")
        self._edits = Endpoint.parse(root + "/images/edits")
        self._masker = SecretMasker([endpoint.api_key])

    @property
    def max_image_bytes(self) -> int:
        return self._cfg.max_image_bytes

    async def make(self, job: ImageJob, on_partial: OnPartial) -> ImageResult:
        stream = job.partial_images > 0 and self._cfg.streaming
        fields: dict[str, Any] = {"model": job.model, "prompt": job.prompt, **job.settings}
        if stream:
            fields["stream"] = True
            fields["partial_images"] = job.partial_images
        headers = {"accept": "text/event-stream" if stream else "application/json"}
        if self._cfg.api_key:
            headers["authorization"] = f"Bearer {self._cfg.api_key}"
        if job.images:
            body, headers["content-type"] = _multipart(fields, job.images, job.mask)
            endpoint = self._edits
        else:
            body, headers["content-type"] = orjson.dumps(fields), "application/json"
            endpoint = self._generations
        started = time.monotonic()
        try:
            response = await self._http.request(endpoint, "POST", headers, body,
                                                connect_timeout=self._cfg.connect_timeout_s,
                                                read_timeout=self._cfg.timeout_s)
            try:
                if response.status != 200:
                    raise status_error(job.model, response.status, await response.read_prefix(65536),
                                       response.headers, self._masker)
                if "text/event-stream" in response.headers.get("content-type", ""):
                    result = await self._events(job.model, response.iter_event_stream(), on_partial)
                else:
                    result = self._reply(job.model, await response.read(self._cfg.max_image_bytes * 2))
            finally:
                response.release()
        except UpstreamError as err:
            log_failure(f"images:{job.model}", err, started)
            raise
        except TRANSPORT_ERRORS as exc:
            failure = transport_error(job.model, exc)
            log_failure(f"images:{job.model}", failure, started)
            raise failure from None
        return result

    def _reply(self, model: str, raw: bytes) -> ImageResult:
        try:
            data = orjson.loads(raw)
            first = data["data"][0]
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            raise _bad(model, "a body that is not an images reply") from None
        if not isinstance(first, dict) or not isinstance(first.get("b64_json"), str):
            raise _bad(model, "no b64_json image (an upstream answering with URLs is not supported)")
        revised = first.get("revised_prompt")
        return ImageResult(self._image(model, first["b64_json"]), revised if isinstance(revised, str) else None,
                           _reported(data))

    async def _events(self, model: str, chunks: Any, on_partial: OnPartial) -> ImageResult:
        pending = b""
        async for chunk in chunks:
            pending += chunk
            if len(pending) > self._cfg.max_image_bytes * 2:
                raise _bad(model, "an event larger than the image limit")
            *blocks, pending = pending.replace(b"\r\n", b"\n").split(b"\n\n")
            for block in blocks:
                data = b"\n".join(line[5:].lstrip() for line in block.split(b"\n") if line.startswith(b"data:"))
                if not data or data == b"[DONE]":
                    continue
                try:
                    event = orjson.loads(data)
                except orjson.JSONDecodeError:
                    raise _bad(model, "an event that is not JSON") from None
                kind = str(event.get("type", "")) if isinstance(event, dict) else ""
                if kind == "error" or (kind == "" and isinstance(event, dict) and "error" in event):
                    report = error_report(event)
                    if report is None:
                        raise _bad(model, "an error event without a message")
                    raise reported_error(model, report, self._masker)
                if kind.endswith(".partial_image"):
                    index = event.get("partial_image_index")
                    on_partial(index if isinstance(index, int) else 0,
                               self._image(model, event.get("b64_json")), _reported(event))
                elif kind.endswith(".completed"):
                    revised = event.get("revised_prompt")
                    return ImageResult(self._image(model, event.get("b64_json")),
                                       revised if isinstance(revised, str) else None, _reported(event))
        raise _bad(model, "a stream that ended before its completed event")

    def _image(self, model: str, b64: Any) -> str:
        if not isinstance(b64, str) or not b64:
            raise _bad(model, "an image event without b64_json")
        if len(b64) * 3 // 4 > self._cfg.max_image_bytes:
            raise _bad(model, f"an image over {self._cfg.max_image_bytes} bytes")
        try:
            base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise _bad(model, "b64_json that is not base64") from None
        return b64


def _reported(data: dict[str, Any]) -> dict[str, str]:
    return {key: data[key] for key in REPORTED if isinstance(data.get(key), str)}


def _bad(model: str, what: str) -> UpstreamError:
    return UpstreamError.bad_gateway(f"The images upstream for model '{model}' sent {what}.")


def _multipart(fields: dict[str, Any], images: tuple[ImageInput, ...],
               mask: ImageInput | None) -> tuple[bytes, str]:
    boundary = "parley-" + secrets.token_hex(12)
    parts: list[bytes] = []

    def part(name: str, value: bytes, filename: str | None = None, mime: str | None = None) -> None:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        head = f"--{boundary}\r\ncontent-disposition: {disposition}\r\n"
        if mime:
            head += f"content-type: {mime}\r\n"
        parts.append(head.encode() + b"\r\n" + value + b"\r\n")

    for name, value in fields.items():
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        part(name, text.encode())
    name = "image" if len(images) == 1 else "image[]"
    for index, image in enumerate(images):
        part(name, image.data, f"image{index}.{_extension(image.mime)}", image.mime)
    if mask is not None:
        part("mask", mask.data, f"mask.{_extension(mask.mime)}", mask.mime)
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _extension(mime: str) -> str:
    return {"image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}.get(mime, "png")
