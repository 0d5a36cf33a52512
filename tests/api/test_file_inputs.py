"""File inputs in messages on any upstream (issue 9): `input_file` by `file_id`, `file_data` and `file_url`,
`input_image` by `file_id`. An upstream whose profile reads files natively gets the file's bytes; any other
gets its extracted text. Server-side fetches go through the SSRF guard."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from openai import AsyncOpenAI

from parley.config import EmbeddedConfig, FetchConfig, ModelConfig, Settings
from parley.testing.documents import make_pdf
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import InProcess, in_process

PDF = make_pdf([["The launch code is tangerine."], ["Page two says nothing."]])
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC")


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeUpstream]:
    upstream = FakeUpstream()
    await upstream.start()
    yield upstream
    await upstream.stop()


@pytest.fixture(scope="module")
async def site() -> AsyncIterator[str]:
    """A web server on loopback serving a PDF and a zip archive."""
    async def pdf(_: web.Request) -> web.Response:
        return web.Response(body=PDF, content_type="application/pdf")

    async def archive(_: web.Request) -> web.Response:
        return web.Response(body=b"PK\x03\x04junk", content_type="application/zip")

    app = web.Application()
    app.router.add_get("/doc.pdf", pdf)
    app.router.add_get("/archive.zip", archive)
    runner = web.AppRunner(app)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def _settings(tmp: Any, fake: FakeUpstream, allow: list[str]) -> Settings:
    return Settings(
        data_dir=tmp, embedded=EmbeddedConfig(enabled=False), fetch=FetchConfig(allow=allow),
        models=[ModelConfig(id="fake", base_url=fake.base_url, upstream_model="echo"),
                ModelConfig(id="native", base_url=fake.base_url, upstream_model="echo", profile="openai")],
    )


@pytest.fixture(scope="module")
async def app(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcess]:
    async with in_process(_settings(tmp_path_factory.mktemp("file-inputs"), fake, ["127.0.0.1/32"])) as running:
        yield running


@pytest.fixture(scope="module")
def sdk(app: InProcess) -> AsyncOpenAI:
    return app.sdk()


def _message(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "input_text", "text": "What does it say?"}, *parts]}]


def _sent_parts(fake: FakeUpstream) -> list[Any]:
    content = fake.requests[-1]["messages"][-1]["content"]
    return content if isinstance(content, list) else [{"type": "text", "text": content}]


async def test_a_pdf_by_file_id_reaches_the_model_as_text(sdk: AsyncOpenAI, fake: FakeUpstream) -> None:
    uploaded = await sdk.files.create(file=("report.pdf", PDF, "application/pdf"), purpose="user_data")
    response = await sdk.responses.create(model="fake", input=_message(  # type: ignore[arg-type]
        {"type": "input_file", "file_id": uploaded.id}))
    assert response.status == "completed"
    text = " ".join(p.get("text", "") for p in _sent_parts(fake))
    assert "[Contents of the file report.pdf]" in text and "tangerine" in text
    # The stored input keeps the part as sent.
    items = await sdk.responses.input_items.list(response.id)
    assert items.data[0].content[1].file_id == uploaded.id  # type: ignore[union-attr]
    # Along the chain the file is given again (from the cache).
    follow = await sdk.responses.create(model="fake", input="and again?", previous_response_id=response.id)
    assert follow.status == "completed"
    assert "tangerine" in str(fake.requests[-1]["messages"])


async def test_a_native_upstream_gets_the_file_itself(sdk: AsyncOpenAI, fake: FakeUpstream) -> None:
    data = "data:application/pdf;base64," + base64.b64encode(PDF).decode()
    await sdk.responses.create(model="native", input=_message(  # type: ignore[arg-type]
        {"type": "input_file", "file_data": data, "filename": "r.pdf"}))
    file_part = next(p for p in _sent_parts(fake) if p["type"] == "file")
    assert file_part["file"] == {"filename": "r.pdf", "file_data": data}


async def test_file_url_is_fetched_through_the_guard(sdk: AsyncOpenAI, fake: FakeUpstream, site: str,
                                                     app: InProcess) -> None:
    await sdk.responses.create(model="fake", input=_message(  # type: ignore[arg-type]
        {"type": "input_file", "file_url": site + "/doc.pdf"}))
    assert "tangerine" in str(_sent_parts(fake))
    unreadable = await app.http.post("/v1/responses", json={"model": "fake", "input": _message(
        {"type": "input_file", "file_url": site + "/archive.zip"})})
    assert unreadable.status_code == 400
    assert unreadable.json()["error"]["param"] == "input[0].content[1].file_url"


async def test_loopback_is_refused_unless_allowed(fake: FakeUpstream, site: str, tmp_path: Any) -> None:
    async with in_process(_settings(tmp_path, fake, [])) as strict:
        refused = await strict.http.post("/v1/responses", json={"model": "fake", "input": _message(
            {"type": "input_file", "file_url": site + "/doc.pdf"})})
    error = refused.json()["error"]
    assert refused.status_code == 400 and error["code"] == "url_refused"
    assert error["param"] == "input[0].content[1].file_url"


async def test_an_image_by_file_id_becomes_a_data_url(sdk: AsyncOpenAI, fake: FakeUpstream) -> None:
    uploaded = await sdk.files.create(file=("dot.png", PNG, "image/png"), purpose="vision")
    await sdk.responses.create(model="fake", input=_message(  # type: ignore[arg-type]
        {"type": "input_image", "file_id": uploaded.id, "detail": "low"}))
    image = next(p for p in _sent_parts(fake) if p["type"] == "image_url")
    assert image["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(PNG).decode()


@pytest.mark.parametrize(("part", "param", "status"), [
    ({"type": "input_file", "file_id": "file-nope"}, "input[0].content[1].file_id", 404),
    ({"type": "input_file", "file_data": "data:application/pdf;base64,!!!"}, "input[0].content[1].file_data", 400),
    ({"type": "input_file"}, "input[0].content[1]", 400),
    ({"type": "input_file", "file_data": base64.b64encode(b"\x00\x01\x02zip").decode(), "filename": "a.zip"},
     "input[0].content[1].file_data", 400),
])
async def test_bad_file_inputs(app: InProcess, part: dict[str, Any], param: str, status: int) -> None:
    response = await app.http.post("/v1/responses", json={"model": "fake", "input": _message(part)})
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param


async def test_a_deleted_file_is_not_served_from_the_cache(sdk: AsyncOpenAI, app: InProcess) -> None:
    uploaded = await sdk.files.create(file=("notes.txt", b"remember the milk", "text/plain"), purpose="user_data")
    part = {"type": "input_file", "file_id": uploaded.id}
    assert (await sdk.responses.create(model="fake", input=_message(part))).status == "completed"  # type: ignore[arg-type]
    await sdk.files.delete(uploaded.id)
    gone = await app.http.post("/v1/responses", json={"model": "fake", "input": _message(part)})
    assert gone.status_code == 404
