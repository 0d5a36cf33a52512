"""The `image_generation` tool of one request, set up from its `tools[i]` entry and the request's context.

Checked before anything goes upstream: the server has an images upstream ([images] in the config), the tool's
`model` is one it may use, the mask (a data URL or a File) is an image. The image an edit starts from is found
only when the model asks for an edit: the latest image in the context, an earlier call's result or a user's
`input_image` (a data URL, a File, or an http(s) URL fetched through the SSRF guard, as file inputs are).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

from parley.config import ImagesConfig
from parley.errors import InvalidRequest
from parley.providers.http1 import Http1Pool
from parley.providers.images import ImageInput, ImagesEndpoint, ImagesUpstream
from parley.retrieval.fetch import UrlFetcher
from parley.schema.builtin_tools import ImageGenerationParams
from parley.schema.tools import BuiltinSpec
from parley.services.files import FilesService
from parley.tools.image_generation import SETTINGS, ImageGenerationTool, image_of

Item = dict[str, Any]
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"))


def sniff(data: bytes) -> str | None:
    """The image type of `data` from its first bytes (PNG, JPEG, WebP, GIF); None if it is none of them."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def decode_data_url(url: str, param: str) -> ImageInput:
    head, _, payload = url.partition(",")
    if not head.startswith("data:") or not head.endswith(";base64"):
        raise InvalidRequest("Expected a base64 data URL (data:image/png;base64,...).", param=param)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("The data URL is not valid base64.", param=param) from None
    mime = sniff(data)
    if mime is None:
        raise InvalidRequest("The data URL is not a PNG, JPEG, WebP or GIF image.", param=param)
    return ImageInput(data, mime)


class ImageGenerationSetup:
    def __init__(self, config: ImagesConfig, http: Http1Pool, files: FilesService,
                 fetcher: UrlFetcher | None = None) -> None:
        self._config = config
        self._files = files
        self._fetcher = fetcher
        self._upstream: ImagesUpstream | None = None
        if config.base_url is not None:
            self._upstream = ImagesUpstream(ImagesEndpoint(
                config.base_url, config.resolved_api_key(), config.streaming, config.connect_timeout_s,
                config.timeout_s, config.max_image_bytes), http)

    async def tool(self, project_id: str, spec: BuiltinSpec, items: Sequence[Item]) -> ImageGenerationTool:
        params = spec.params
        assert isinstance(params, ImageGenerationParams)
        upstream = self._upstream
        if upstream is None or self._config.model is None:
            raise InvalidRequest("image_generation needs an images upstream, which this server has not configured "
                                 "([images] base_url and model).", param=f"{spec.param}.type", code="unsupported_tool")
        model = params.model or self._config.model
        if model != self._config.model and model not in self._config.models:
            raise InvalidRequest(f"Image model '{model}' is not available on this server; available: "
                                 f"{', '.join([self._config.model, *self._config.models])}.",
                                 param=f"{spec.param}.model", code="model_not_found")
        if params.output_format == "gif" and (params.partial_images or 0) > 0:
            raise InvalidRequest("GIF output does not support partial images.", param=f"{spec.param}.partial_images")
        mask = None
        if params.input_image_mask is not None:
            mask = await self._mask(project_id, params, spec.param)
        settings = {key: getattr(params, key) for key in SETTINGS if getattr(params, key) is not None}

        async def latest() -> ImageInput | None:
            return await self._latest(project_id, items)

        return ImageGenerationTool(upstream, model, action=params.action or "auto", settings=settings,
                                   partial_images=params.partial_images or 0, latest=latest, mask=mask)

    async def _mask(self, project_id: str, params: ImageGenerationParams, param: str) -> ImageInput:
        mask = params.input_image_mask
        assert mask is not None
        where = f"{param}.input_image_mask"
        if mask.image_url is not None:
            return decode_data_url(mask.image_url, f"{where}.image_url")
        if mask.file_id is None:
            raise InvalidRequest("input_image_mask needs an image_url or a file_id.", param=where)
        return await self._file_image(project_id, mask.file_id, f"{where}.file_id")

    async def _file_image(self, project_id: str, file_id: str, param: str | None) -> ImageInput:
        data = await self._files.read_bytes(project_id, file_id, self._config.max_image_bytes, param=param)
        mime = sniff(data)
        if mime is None:
            raise InvalidRequest(f"File '{file_id}' is not a PNG, JPEG, WebP or GIF image.", param=param)
        return ImageInput(data, mime)

    async def _fetched(self, url: str) -> ImageInput:
        assert self._fetcher is not None
        fetched = await self._fetcher.fetch(url, max_bytes=self._config.max_image_bytes)
        mime = sniff(fetched.body)
        if mime is None:
            raise InvalidRequest(f"{url} is not a PNG, JPEG, WebP or GIF image", param="input_image.image_url")
        return ImageInput(fetched.body, mime)

    async def _latest(self, project_id: str, items: Sequence[Item]) -> ImageInput | None:
        """The latest image of the context: a generated one, or one a user sent (data URL or File)."""
        for item in reversed(items):
            if item.get("type") == "image_generation_call":
                image = image_of(item)
                if image is not None:
                    return image
            elif item.get("type") == "message" and item.get("role") == "user":
                for part in reversed(item.get("content") or ()):
                    if not isinstance(part, dict) or part.get("type") != "input_image":
                        continue
                    url, file_id = part.get("image_url"), part.get("file_id")
                    if isinstance(url, str) and url.startswith("data:"):
                        return decode_data_url(url, "input_image.image_url")
                    if isinstance(file_id, str):
                        return await self._file_image(project_id, file_id, None)
                    if isinstance(url, str) and self._fetcher is not None:
                        return await self._fetched(url)
                    raise InvalidRequest("the image has no data URL, file_id or fetchable URL",
                                         param="input_image.image_url")
        return None
