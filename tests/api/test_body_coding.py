"""Request bodies sent with a Content-Encoding, over a real socket (uvicorn as `parley serve` runs it, which passes
the body on as it came): gzip and deflate are decoded, within the body's size limit (a compression bomb is the
413 of an over-large body), identity passes, and any other coding is a 415 naming it; JSON bodies and multipart
uploads alike."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from parley.api.body_coding import BodyDecoder, BodyLimit
from parley.config import EmbeddedConfig, FilesConfig, ModelConfig, Settings
from parley.errors import PayloadTooLarge
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import served

MAX_BODY = 64 * 1024
MAX_FILE = 32 * 1024
ERROR_KEYS = {"message", "type", "param", "code"}
REQUEST = orjson.dumps({"model": "fake", "input": "hi from a compressed body"})


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream()
    await upstream.start()
    yield upstream
    await upstream.stop()


@pytest.fixture(scope="module")
async def http(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("coding"), embedded=EmbeddedConfig(enabled=False),
                        models=[ModelConfig(id="fake", base_url=fake.base_url, upstream_model="echo")],
                        max_body_bytes=MAX_BODY, files=FilesConfig(max_bytes=MAX_FILE))
    async with served(settings) as app, httpx.AsyncClient(base_url=app.base_url, timeout=30) as client:
        yield client


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    error: dict[str, Any] = body["error"]
    return error


def _deflate(data: bytes) -> bytes:
    return zlib.compress(data)  # the zlib format, which is what `deflate` means (RFC 9110 §8.4.1.2)


def _output_text(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return "".join(part["text"] for item in response.json()["output"] if item["type"] == "message"
                   for part in item["content"])


@pytest.mark.parametrize(("coding", "encode"), [
    ("gzip", gzip.compress), ("x-gzip", gzip.compress), ("deflate", _deflate), ("GZIP", gzip.compress),
    ("identity", bytes), ("identity, gzip", gzip.compress),
    ("gzip", lambda data: gzip.compress(data[:10]) + gzip.compress(data[10:])),  # two gzip members
], ids=["gzip", "x-gzip", "deflate", "upper-case", "identity", "identity-then-gzip", "two-members"])
async def test_a_compressed_json_body_is_read(http: httpx.AsyncClient, coding: str, encode: Any) -> None:
    """(was: the compressed bytes parsed as JSON, a 400 invalid_json)"""
    response = await http.post("/responses", content=encode(REQUEST),
                               headers={"content-type": "application/json", "content-encoding": coding})
    assert "hi from a compressed body" in _output_text(response)


async def test_a_compression_bomb_is_the_413_of_an_over_large_body(http: httpx.AsyncClient) -> None:
    """A small gzip body inflating past max_body_bytes: the same 413 as the same body sent plain (decoding stops at
    the limit; the body is never inflated whole)."""
    padded = REQUEST[:-1] + b" " * (MAX_BODY * 16) + b"}"
    plain = _error(await http.post("/responses", content=padded, headers={"content-type": "application/json"}), 413)
    bomb = gzip.compress(padded)
    assert len(bomb) < MAX_BODY / 4
    for coding, body in (("gzip", bomb), ("deflate", _deflate(padded))):
        error = _error(await http.post("/responses", content=body, headers={"content-type": "application/json",
                                                                            "content-encoding": coding}), 413)
        assert error == plain and error["code"] == "request_too_large"


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, gzip", "gzip, br"])
async def test_another_coding_is_a_415_naming_it(http: httpx.AsyncClient, coding: str) -> None:
    response = await http.post("/responses", content=REQUEST, headers={"content-type": "application/json",
                                                                       "content-encoding": coding})
    error = _error(response, 415)
    assert (error["type"], error["code"]) == ("invalid_request_error", "unsupported_content_encoding")
    assert f"'{coding}'" in error["message"]


@pytest.mark.parametrize(("coding", "body", "reason"), [
    ("gzip", REQUEST, "not valid gzip"),  # sent plain, said to be gzip
    ("gzip", gzip.compress(REQUEST)[:-6], "ends before"),  # cut short
    ("deflate", gzip.compress(REQUEST), "not valid deflate"),  # gzip said to be deflate
    ("deflate", _deflate(REQUEST) + b"tail", "after its end"),
], ids=["plain", "cut", "gzip-as-deflate", "trailing"])
async def test_a_body_that_is_not_its_coding_is_a_400(http: httpx.AsyncClient, coding: str, body: bytes,
                                                      reason: str) -> None:
    response = await http.post("/responses", content=body, headers={"content-type": "application/json",
                                                                    "content-encoding": coding})
    error = _error(response, 400)
    assert error["code"] == "invalid_content_encoding" and reason in error["message"]


def _form(content: bytes) -> tuple[bytes, str]:
    """A multipart upload of `content` as /v1/files takes it, and its content type."""
    request = httpx.Request("POST", "http://x/", data={"purpose": "assistants"},
                            files={"file": ("notes.txt", content, "text/plain")})
    return request.read(), request.headers["content-type"]


async def test_a_compressed_upload_is_read(http: httpx.AsyncClient) -> None:
    content = b"line of the uploaded file\n" * 1000  # ~26 KB, under the 32 KB limit
    form, content_type = _form(content)
    response = await http.post("/files", content=gzip.compress(form),
                               headers={"content-type": content_type, "content-encoding": "gzip"})
    assert response.status_code == 200, response.text
    file_id = response.json()["id"]
    assert response.json()["bytes"] == len(content)
    assert (await http.get(f"/files/{file_id}/content")).content == content


async def test_a_compressed_upload_past_the_limit_is_the_413_of_an_over_large_file(http: httpx.AsyncClient) -> None:
    form, content_type = _form(b"\0" * (MAX_FILE * 64))
    plain = _error(await http.post("/files", content=form, headers={"content-type": content_type}), 413)
    bomb = gzip.compress(form)
    assert len(bomb) < MAX_FILE / 4
    error = _error(await http.post("/files", content=bomb, headers={"content-type": content_type,
                                                                    "content-encoding": "gzip"}), 413)
    assert error == plain
    # Past the form's whole allowance (file limit + form overhead) before any part: also a 413, not inflated.
    preamble = b" " * (MAX_FILE * 64) + b"\r\n"  # bytes before the first boundary (RFC 2046 §5.1.1)
    error = _error(await http.post("/files", content=gzip.compress(preamble + form),
                                   headers={"content-type": content_type, "content-encoding": "gzip"}), 413)
    assert error["code"] == "request_too_large"


async def test_an_upload_in_another_coding_is_a_415(http: httpx.AsyncClient) -> None:
    form, content_type = _form(b"abc")
    error = _error(await http.post("/files", content=form, headers={"content-type": content_type,
                                                                    "content-encoding": "br"}), 415)
    assert "'br'" in error["message"]


def test_the_decoder_never_holds_more_than_the_limit() -> None:
    """However much the data would inflate to, no piece decoded is larger than the limit's room (+1 byte to see
    that it is past it)."""
    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024))  # 50 MB in ~50 KB
    decoder = BodyDecoder("gzip", BodyLimit(100_000, "too large"))
    sizes: list[int] = []
    with pytest.raises(PayloadTooLarge, match="too large"):
        for start in range(0, len(bomb), 4096):
            sizes.append(len(decoder.decode(bomb[start:start + 4096])))
    assert sum(sizes) <= 100_000

