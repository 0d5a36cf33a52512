"""A fake OpenAI-compatible images server over real HTTP, for tests: real PNGs, OpenAI's reply shapes.

`POST /v1/images/generations` (JSON) and `POST /v1/images/edits` (multipart: `image` or `image[]`, optional
`mask`) answer `{"created", "data": [{"b64_json", "revised_prompt"}], "background", "output_format", "quality",
"size", "usage"}`. The image is a real PNG of the asked size (default 64x64, capped at 256 per side to stay small)
filled with a colour derived from the prompt; an edit's colour also depends on the image it was given, so a test
can tell an edit of one image from another. `revised_prompt` is "revised: <prompt>".

With `stream: true` and `partial_images: n` the reply is Server-Sent Events: n `image_generation.partial_image`
(`image_edit.partial_image` for edits) events with their own PNGs, then `*.completed`, as OpenAI streams them.
A prompt containing "refuse" gets a 400 `moderation_blocked` in OpenAI's error shape, "boom" a 500, and
"midstream" (streaming) an `error` event after the first partial image. A key, if set, must come as a Bearer
token. Every request is recorded in `requests` (fields, and the uploaded files' bytes under `files`).
"""

from __future__ import annotations

import base64
import hashlib
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import BodyPartReader, web

from parley.testing.fake_server import serve_app


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A real RGB PNG of one colour."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    row = b"\x00" + bytes(rgb) * width
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x02\x00\x00\x00"
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row * height))
            + chunk(b"IEND", b""))


def colour(*parts: bytes) -> tuple[int, int, int]:
    digest = hashlib.blake2b(b"|".join(parts), digest_size=3).digest()
    return digest[0], digest[1], digest[2]


def _dimensions(size: Any) -> tuple[int, int]:
    if isinstance(size, str) and "x" in size:
        width, _, height = size.partition("x")
        if width.isdigit() and height.isdigit():
            return min(int(width), 256), min(int(height), 256)
    return 64, 64


@dataclass
class FakeImages:
    key: str | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/images/generations", self._generations)
        app.router.add_post("/v1/images/edits", self._edits)
        app.router.add_get("/pictures/{size}.png", self._picture)  # an image on the web, for edits of URL images
        return app

    async def start(self) -> None:
        self._runner, self.port = await serve_app(self.app(), self.port, shutdown_timeout=0.5)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _picture(self, request: web.Request) -> web.Response:
        width, height = _dimensions(request.match_info["size"])
        return web.Response(body=png(width, height, (9, 9, 9)), content_type="image/png")

    def _refused(self, request: web.Request) -> web.Response | None:
        if self.key is not None and request.headers.get("authorization") != f"Bearer {self.key}":
            return web.json_response({"error": {"message": "Incorrect API key provided.", "type":
                                                "invalid_request_error", "code": "invalid_api_key"}}, status=401)
        return None

    async def _generations(self, request: web.Request) -> web.StreamResponse:
        refused = self._refused(request)
        if refused is not None:
            return refused
        body = await request.json(loads=orjson.loads)
        self.requests.append({"endpoint": "generations", **body})
        return await self._answer(request, body, b"", "image_generation")

    async def _edits(self, request: web.Request) -> web.StreamResponse:
        refused = self._refused(request)
        if refused is not None:
            return refused
        fields: dict[str, Any] = {}
        files: dict[str, list[bytes]] = {}
        reader = await request.multipart()
        async for part in reader:
            if not isinstance(part, BodyPartReader) or part.name is None:
                continue
            data = await part.read()
            if part.filename is not None:
                files.setdefault(part.name, []).append(bytes(data))
            else:
                text = bytes(data).decode()
                fields[part.name] = text
        self.requests.append({"endpoint": "edits", **fields, "files": files})
        images = files.get("image") or files.get("image[]")
        if not images:
            return web.json_response({"error": {"message": "image is required", "type": "invalid_request_error",
                                                "param": "image", "code": None}}, status=400)
        body = {**fields, "stream": fields.get("stream") == "true",
                "partial_images": int(fields.get("partial_images", "0"))}
        return await self._answer(request, body, b"".join(images), "image_edit")

    async def _answer(self, request: web.Request, body: dict[str, Any], source: bytes,
                      kind: str) -> web.StreamResponse:
        prompt = str(body.get("prompt", ""))
        if "refuse" in prompt:
            return web.json_response({"error": {"message": "Your request was rejected by the safety system.",
                                                "type": "image_generation_user_error", "param": None,
                                                "code": "moderation_blocked"}}, status=400)
        if "boom" in prompt:
            return web.json_response({"error": {"message": "The server had an error.", "type": "server_error",
                                                "param": None, "code": None}}, status=500)
        width, height = _dimensions(body.get("size"))
        image = png(width, height, colour(prompt.encode(), source))
        reported = {"background": body.get("background") or "opaque", "output_format": "png",
                    "quality": body.get("quality") or "medium", "size": f"{width}x{height}"}
        usage = {"input_tokens": len(prompt.split()), "output_tokens": 100, "total_tokens": len(prompt.split()) + 100,
                 "input_tokens_details": {"text_tokens": len(prompt.split()), "image_tokens": 0}}
        revised = f"revised: {prompt}"
        b64 = base64.b64encode(image).decode()
        if not body.get("stream"):
            return web.json_response({"created": int(time.time()), "data": [{"b64_json": b64,
                                                                              "revised_prompt": revised}],
                                      **reported, "usage": usage}, dumps=lambda v: orjson.dumps(v).decode())
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for index in range(int(body.get("partial_images") or 0)):
            partial = png(width, height, colour(prompt.encode(), source, str(index).encode()))
            event = {"type": f"{kind}.partial_image", "b64_json": base64.b64encode(partial).decode(),
                     "partial_image_index": index, "created_at": int(time.time()), **reported}
            await response.write(b"event: " + f"{kind}.partial_image".encode() + b"\ndata: " + orjson.dumps(event)
                                 + b"\n\n")
            if "midstream" in prompt:
                error = {"type": "error", "error": {"message": "generation failed midway", "type": "server_error",
                                                    "code": None, "param": None}}
                await response.write(b"event: error\ndata: " + orjson.dumps(error) + b"\n\n")
                await response.write_eof()
                return response
        done = {"type": f"{kind}.completed", "b64_json": b64, "revised_prompt": revised,
                "created_at": int(time.time()), **reported, "usage": usage}
        await response.write(b"event: " + f"{kind}.completed".encode() + b"\ndata: " + orjson.dumps(done) + b"\n\n")
        await response.write_eof()
        return response
