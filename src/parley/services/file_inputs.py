"""File inputs in messages, resolved for the model: `input_file` (`file_id`, `file_data`, `file_url`) and
`input_image` with `file_id`.

Before a context goes upstream each such part gets what any provider can use: an `input_file` part carries
its bytes as a data URL (`file_data`, for upstreams that read files natively: the profile decides, at the
provider edge) and its extracted text (`text`, for every other upstream); an `input_image` with `file_id`
becomes an `image_url` data URL. Stored items keep the parts as the client sent them (resolution makes new
items). `file_url` is fetched through the SSRF guard (retrieval/fetch.py). Extraction runs in a thread.
Resolved files are kept in a small LRU cache (per project and file id) so a chain does not re-read and
re-extract the same file every turn.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
from dataclasses import dataclass
from typing import Any

from parley.engine.context_measure import ContextMeasures, has_file_parts
from parley.errors import InvalidRequest, UnreadableFile
from parley.retrieval.extract import extract_text, guess_media_type
from parley.retrieval.fetch import UrlFetcher
from parley.services.files import FilesService
from parley.store.base import FileRecord

Item = dict[str, Any]
Part = dict[str, Any]

_IMAGE_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"),
                     (b"RIFF", "image/webp"))


@dataclass(frozen=True, slots=True)
class FileInputLimits:
    max_bytes: int = 32 * 1024 * 1024  # per file (OpenAI's limit for file inputs)
    max_chars: int = 400_000  # extracted text given to a model that cannot read the file itself
    cache_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Resolved:
    filename: str
    data_url: str
    text: str

    @property
    def size(self) -> int:
        return len(self.data_url) + len(self.text)


class FileInputs:
    def __init__(self, files: FilesService | None, fetcher: UrlFetcher | None, limits: FileInputLimits,
                 measures: ContextMeasures | None = None) -> None:
        self._files = files
        # Whether a context has file parts, measured on its new items only along a chain; truncation reads the
        # same measures (services/responses.py).
        self.measures = measures or ContextMeasures()
        self._fetcher = fetcher
        self._limits = limits
        self._cache: collections.OrderedDict[tuple[str, str], _Resolved] = collections.OrderedDict()
        self._cached_bytes = 0

    async def resolve(self, project_id: str, items: list[Item], first_new: int = 0, keep: bool = True) -> list[Item]:
        """`items` with every file part resolved (new item objects where something changed). `keep`: whether a
        later call may start with these item objects (ModelCall.continuable), for the context measures."""
        if not self.measures.of(items, keep).file_parts:
            return items
        out: list[Item] = []
        for index, item in enumerate(items):
            if not has_file_parts(item):
                out.append(item)
                continue
            where = f"input[{max(index - first_new, 0)}]"
            parts = [await self._part(project_id, part, f"{where}.content[{n}]")
                     for n, part in enumerate(item["content"])]
            out.append({**item, "content": parts})
        return out

    async def _part(self, project_id: str, part: Part, param: str) -> Part:
        kind = part.get("type")
        if kind == "input_image" and part.get("file_id") and not part.get("image_url"):
            data = await self._file_bytes(project_id, part["file_id"], f"{param}.file_id")
            return {**part, "image_url": _data_url(_image_type(data, f"{param}.file_id"), data)}
        if kind != "input_file":
            return part
        resolved = await self._file(project_id, part, param)
        return {"type": "input_file", "filename": resolved.filename, "file_data": resolved.data_url,
                "text": resolved.text}

    async def _file(self, project_id: str, part: Part, param: str) -> _Resolved:
        file_id, file_data, file_url = part.get("file_id"), part.get("file_data"), part.get("file_url")
        if sum(x is not None for x in (file_id, file_data, file_url)) != 1:
            raise InvalidRequest("An input_file needs exactly one of file_id, file_data or file_url.", param=param)
        if file_id is not None:
            key = (project_id, str(file_id))
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
            record = await self._require_files().get(project_id, str(file_id), param=f"{param}.file_id")
            data = await self._file_bytes(project_id, str(file_id), f"{param}.file_id")
            resolved = await self._extract(data, part.get("filename") or record.filename, record.content_type,
                                           f"{param}.file_id")
            self._remember(key, resolved)
            return resolved
        if file_data is not None:
            mime, data = _decode_data(str(file_data), f"{param}.file_data", self._limits.max_bytes)
            return await self._extract(data, part.get("filename"), mime, f"{param}.file_data")
        if self._fetcher is None:
            raise InvalidRequest("file_url inputs are not enabled on this server.", param=f"{param}.file_url",
                                 code="unsupported_value")
        fetched = await self._fetcher.fetch(str(file_url), max_bytes=self._limits.max_bytes,
                                            param=f"{param}.file_url")
        name = part.get("filename") or fetched.url.rstrip("/").rsplit("/", 1)[-1].split("?")[0] or "file"
        return await self._extract(fetched.body, name, fetched.content_type.split(";")[0].strip() or None,
                                   f"{param}.file_url")

    async def _extract(self, data: bytes, filename: str | None, mime: str | None, param: str) -> _Resolved:
        name = filename or "file"
        media = mime or guess_media_type(filename) or "application/octet-stream"
        try:
            extracted = await asyncio.to_thread(extract_text, data, filename, mime, max_chars=self._limits.max_chars)
        except UnreadableFile as err:
            err.param = param
            raise
        return _Resolved(name, _data_url(extracted.media_type or media, data), extracted.text)

    async def _file_bytes(self, project_id: str, file_id: str, param: str) -> bytes:
        files = self._require_files()
        record = await files.get(project_id, file_id, param=param)
        if record.bytes > self._limits.max_bytes:
            raise InvalidRequest(f"File '{file_id}' is larger than the {self._limits.max_bytes} bytes a message "
                                 "may carry.", param=param, code="file_too_large")
        return await files.read_bytes(project_id, file_id, self._limits.max_bytes, param=param)

    def _require_files(self) -> FilesService:
        if self._files is None:  # pragma: no cover - the app always has a Files service
            raise InvalidRequest("Files are not enabled on this server.", code="unsupported_value")
        return self._files

    def _remember(self, key: tuple[str, str], resolved: _Resolved) -> None:
        if resolved.size > self._limits.cache_bytes // 4:
            return
        self._cache[key] = resolved
        self._cached_bytes += resolved.size
        while self._cached_bytes > self._limits.cache_bytes and self._cache:
            _, evicted = self._cache.popitem(last=False)
            self._cached_bytes -= evicted.size

    async def forget_record(self, record: FileRecord) -> None:
        """FilesService.on_delete hook: a deleted file must not be served from the cache."""
        evicted = self._cache.pop((record.project_id, record.id), None)
        if evicted is not None:
            self._cached_bytes -= evicted.size


def _data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def _decode_data(value: str, param: str, limit: int) -> tuple[str | None, bytes]:
    """`data:<mime>;base64,<data>` or bare base64."""
    mime: str | None = None
    payload = value
    if value.startswith("data:"):
        head, sep, payload = value.partition(",")
        if not sep or not head.endswith(";base64"):
            raise InvalidRequest("file_data must be base64 data, e.g. data:application/pdf;base64,....", param=param)
        mime = head[5:-7] or None
    if len(payload) * 3 // 4 > limit:
        raise InvalidRequest(f"file_data is larger than the {limit} bytes a message may carry.", param=param,
                             code="file_too_large")
    try:
        return mime, base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("file_data is not valid base64.", param=param) from None


def _image_type(data: bytes, param: str) -> str:
    for signature, mime in _IMAGE_SIGNATURES:
        if data.startswith(signature) and (mime != "image/webp" or data[8:12] == b"WEBP"):
            return mime
    raise InvalidRequest("The file is not a PNG, JPEG, GIF or WebP image.", param=param, code="invalid_image")
