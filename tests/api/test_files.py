"""/v1/files in-process with the official SDK (and raw httpx where the wire itself is under test): upload,
retrieve, content, list with auto-pagination, delete, wait_for_processing, every bad input a 400 naming its
parameter, the size limit, expiry and project isolation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from openai.types import FileObject
from sqlalchemy import update

from parley.config import EmbeddedConfig, FilesConfig, Settings
from parley.store import tables
from parley.testing.in_process import InProcess, in_process

FILE_KEYS = {"id", "object", "bytes", "created_at", "expires_at", "filename", "purpose", "status", "status_details"}


@pytest.fixture(scope="module")
async def parley(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcess]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("files"), embedded=EmbeddedConfig(enabled=False),
                        files=FilesConfig(max_bytes=4 * 1024 * 1024))
    async with in_process(settings) as app:
        yield app


@pytest.fixture(scope="module")
def client(parley: InProcess) -> AsyncOpenAI:
    return parley.sdk()


def _error(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    error: dict[str, Any] = response.json()["error"]
    return error


async def _post(parley: InProcess, data: dict[str, str], files: dict[str, Any] | None = None) -> httpx.Response:
    return await parley.http.post("/v1/files", data=data, files=files or {"file": ("a.txt", b"abc")})


async def test_sdk_round_trip(client: AsyncOpenAI, parley: InProcess) -> None:
    raw = await client.files.with_raw_response.create(file=("report.md", b"# Report\nAll good.\n"),
                                                      purpose="assistants")
    body = raw.http_response.json()
    assert set(body) == FILE_KEYS
    created: FileObject = raw.parse()
    assert created.id.startswith("file-") and created.object == "file"
    assert (created.bytes, created.filename, created.purpose, created.status) == (19, "report.md", "assistants",
                                                                                 "processed")
    assert created.expires_at is None and isinstance(created.created_at, int)
    assert await client.files.retrieve(created.id) == created
    assert await client.files.wait_for_processing(created.id, poll_interval=0.01) == created

    content = await client.files.content(created.id)
    assert content.content == b"# Report\nAll good.\n"
    assert content.response.headers["content-type"].startswith("text/markdown")
    assert content.response.headers["content-length"] == "19"
    assert content.response.headers["x-content-type-options"] == "nosniff"

    deleted = await client.files.delete(created.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (created.id, True, "file")
    for call in (client.files.retrieve, client.files.content, client.files.delete):
        with pytest.raises(openai.NotFoundError):
            await call(created.id)


async def test_list_auto_paginates_and_filters_by_purpose(client: AsyncOpenAI, parley: InProcess) -> None:
    made = [await client.files.create(file=(f"p{n}.jsonl", b"{}\n"), purpose="batch" if n % 2 else "user_data")
            for n in range(5)]
    ids = [f.id for f in made]
    listed = [f.id async for f in await client.files.list(limit=2, order="asc") if f.id in ids]
    assert listed == ids
    newest = await client.files.list(limit=2)
    assert [f.id for f in newest.data] == ids[::-1][:2] and newest.has_more
    batch = [f.id async for f in await client.files.list(purpose="batch", limit=1)]
    assert batch == [ids[3], ids[1]]
    everything = await parley.http.get("/v1/files")  # default limit 10,000: one page
    assert everything.json()["has_more"] is False and len(everything.json()["data"]) >= 5
    assert everything.json()["first_id"] == everything.json()["data"][0]["id"]
    for f in made:
        await client.files.delete(f.id)


async def test_expires_after(client: AsyncOpenAI, parley: InProcess) -> None:
    made = await client.files.create(file=("t.txt", b"tmp"), purpose="user_data",
                                     expires_after={"anchor": "created_at", "seconds": 3600})
    assert made.expires_at == made.created_at + 3600
    batch = await client.files.create(file=("b.jsonl", b"{}"), purpose="batch")
    assert batch.expires_at == batch.created_at + 30 * 86400
    # Time passes: the file is gone from every read at once, and its bytes at the next sweep.
    runtime = parley.app.state.runtime
    async with runtime.store.engine.begin() as conn:
        await conn.execute(update(tables.files).where(tables.files.c.id == made.id).values(expires_at=1))
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        await client.files.content(made.id)
    assert made.id not in [f.id async for f in await client.files.list()]
    path = runtime.files._blobs.path(made.id)
    assert path.exists()
    assert await runtime.files.sweep() >= 1
    assert not path.exists()


async def test_file_before_fields_and_awkward_names(parley: InProcess) -> None:
    boundary = "b0undary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="q%22uo\xe9te.txt"\r\n'
            f"Content-Type: text/plain\r\n\r\nhello\r\n"
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nvision\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="unknown_extra"\r\n\r\nignored\r\n'
            f"--{boundary}--\r\n").encode()
    response = await parley.http.post("/v1/files", content=body,
                                      headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 200, response.text
    made = response.json()
    assert (made["filename"], made["purpose"], made["bytes"]) == ('q"uo\xe9te.txt', "vision", 5)
    content = await parley.http.get(f"/v1/files/{made['id']}/content")
    assert content.content == b"hello"
    assert content.headers["content-disposition"] == "attachment; filename*=UTF-8''q%22uo%C3%A9te.txt"


async def test_empty_file(client: AsyncOpenAI) -> None:
    made = await client.files.create(file=("empty.txt", b""), purpose="assistants")
    assert made.bytes == 0
    assert (await client.files.content(made.id)).content == b""


@pytest.mark.parametrize(("data", "files", "param", "code"), [
    ({}, None, "purpose", "missing_required_parameter"),
    ({"purpose": "fine-tune-results"}, None, "purpose", "invalid_value"),
    ({"purpose": "assistants"}, {"other": ("a", b"x")}, "file", "missing_required_parameter"),
    ({"purpose": "assistants", "expires_after[anchor]": "last_active_at", "expires_after[seconds]": "3600"}, None,
     "expires_after.anchor", "invalid_value"),
    ({"purpose": "assistants", "expires_after[anchor]": "created_at", "expires_after[seconds]": "3599"}, None,
     "expires_after.seconds", "invalid_value"),
    ({"purpose": "assistants", "expires_after[anchor]": "created_at", "expires_after[seconds]": "2592001"}, None,
     "expires_after.seconds", "invalid_value"),
    ({"purpose": "assistants", "expires_after[anchor]": "created_at", "expires_after[seconds]": "1e4"}, None,
     "expires_after.seconds", "invalid_value"),
    ({"purpose": "assistants", "expires_after[anchor]": "created_at"}, None, "expires_after.seconds",
     "missing_required_parameter"),
    ({"purpose": "assistants", "expires_after[seconds]": "3600"}, None, "expires_after.anchor",
     "missing_required_parameter"),
])
async def test_bad_uploads_name_the_parameter(parley: InProcess, data: dict[str, str], files: dict[str, Any] | None,
                                              param: str, code: str) -> None:
    error = _error(await _post(parley, data, files))
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")


async def test_malformed_bodies(parley: InProcess) -> None:
    as_json = await parley.http.post("/v1/files", json={"purpose": "assistants"})
    assert _error(as_json)["code"] == "invalid_multipart"
    boundary = "zz"
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    cut = (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
           f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc').encode()
    assert _error(await parley.http.post("/v1/files", content=cut, headers=headers))["code"] == "invalid_multipart"
    two = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nx\r\n'
           f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="b"\r\n\r\ny\r\n'
           f"--{boundary}--\r\n").encode()
    assert _error(await parley.http.post("/v1/files", content=two, headers=headers))["param"] == "file"
    huge_field = {"purpose": "assistants", "note": "x" * 70_000}
    assert _error(await _post(parley, huge_field))["param"] == "note"
    nameless = (f"--{boundary}\r\nContent-Disposition: attachment\r\n\r\nx\r\n--{boundary}--\r\n").encode()
    assert _error(await parley.http.post("/v1/files", content=nameless, headers=headers))["code"] == \
        "invalid_multipart"


async def test_a_boundary_longer_than_the_parser_takes_is_a_400(parley: InProcess) -> None:
    """RFC 2046 allows 70 characters; python-multipart refuses more than 256 when the parser is built (a 500 before
    the error was mapped)."""
    boundary = "b" * 300
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc\r\n'
            f"--{boundary}--\r\n").encode()
    response = await parley.http.post("/v1/files", content=body,
                                      headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    error = _error(response)
    assert (error["code"], error["type"]) == ("invalid_multipart", "invalid_request_error")
    assert "boundary" in error["message"]


async def test_a_field_sent_twice_is_a_400_naming_it(parley: InProcess) -> None:
    """Two `purpose` parts: which one was meant is unknown, so neither is picked (the later one used to win)."""
    boundary = "zz"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nvision\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc\r\n'
            f"--{boundary}--\r\n").encode()
    response = await parley.http.post("/v1/files", content=body,
                                      headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    error = _error(response)
    assert (error["param"], error["code"]) == ("purpose", "invalid_value"), error


@pytest.mark.parametrize("part_headers", [
    b'Content-Disposition: form-data; name="file"; filename="a\x00b.txt"\r\n',
    b'Content-Disposition: form-data; name="file"; filename="a.txt"\r\nContent-Type: text/plain\x00\r\n',
])
async def test_a_nul_in_the_file_parts_name_or_type_is_a_400_naming_file(parley: InProcess,
                                                                          part_headers: bytes) -> None:
    """SQLite stored it (a 200) and PostgreSQL refused it as 'an id' with no param: both are a 400 naming `file`."""
    body = (b'--zz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
            b"--zz\r\n" + part_headers + b"\r\nabc\r\n--zz--\r\n")
    response = await parley.http.post("/v1/files", content=body,
                                      headers={"content-type": "multipart/form-data; boundary=zz"})
    error = _error(response)
    assert (error["param"], error["code"]) == ("file", "invalid_value"), error
    assert "NUL" in error["message"]


@pytest.mark.parametrize(("query", "param"), [
    ("limit=0", "limit"), ("limit=10001", "limit"), ("order=sideways", "order"), ("purpose=nope", "purpose"),
    ("after=file-unknown", "after"),
])
async def test_bad_list_queries(parley: InProcess, query: str, param: str) -> None:
    assert _error(await parley.http.get(f"/v1/files?{query}"))["param"] == param


async def test_size_limit_is_a_413(client: AsyncOpenAI, parley: InProcess) -> None:
    limit = 4 * 1024 * 1024
    with pytest.raises(openai.APIStatusError) as caught:
        await client.files.create(file=("big.bin", b"x" * (limit + 1)), purpose="assistants")
    assert caught.value.status_code == 413
    assert caught.value.code == "request_too_large"
    exact = await client.files.create(file=("max.bin", b"x" * limit), purpose="assistants")
    assert exact.bytes == limit
    await client.files.delete(exact.id)
    blobs = parley.app.state.runtime.files._blobs
    assert [p for p in blobs.root.rglob("*.part")] == []


async def test_files_are_invisible_to_other_projects(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, embedded=EmbeddedConfig(enabled=False), auth="keys", auth_cache_ttl_s=0)
    async with in_process(settings) as app:
        store = app.app.state.runtime.store
        _, key_a = await store.create_key("project-a", "a")
        _, key_b = await store.create_key("project-b", "b")
        a, b = app.sdk(key_a), app.sdk(key_b)
        mine = await a.files.create(file=("secret.txt", b"for a only"), purpose="user_data")
        for call in (b.files.retrieve, b.files.content, b.files.delete):
            with pytest.raises(openai.NotFoundError):
                await call(mine.id)
        assert [f.id async for f in await b.files.list()] == []
        with pytest.raises(openai.BadRequestError):
            await b.files.list(after=mine.id)  # not even a cursor
        assert (await a.files.content(mine.id)).content == b"for a only"
        with pytest.raises(openai.AuthenticationError):
            await app.sdk("sk-wrong").files.create(file=("x", b"x"), purpose="user_data")
