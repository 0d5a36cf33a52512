"""GET /openapi.json describes every route of the app (a route without an entry in api/endpoint_docs.py fails
here) and validates as OpenAPI 3.1; GET /docs renders it offline under a strict content-security policy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from openapi_spec_validator import validate
from starlette.responses import Response
from starlette.routing import Route

from parley.api.endpoint_docs import DOCS, WEBSOCKETS
from parley.api.openapi import SCHEMAS, openapi_document
from parley.api.routes import routes, websocket_routes
from parley.config import EmbeddedConfig, Settings
from parley.testing.in_process import InProcess, in_process


@pytest.fixture(scope="module")
async def parley(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcess]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("openapi"), embedded=EmbeddedConfig(enabled=False))
    async with in_process(settings) as app:
        yield app


def _operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item}


def test_every_route_has_its_description() -> None:
    """Add an entry to api/endpoint_docs.py for each new route: summary, tag, body model, answer."""
    document = openapi_document(routes())
    undocumented = sorted(f"{method} {path}" for path, item in document["paths"].items()
                          for method, operation in item.items() if operation.get("x-parley-undocumented"))
    assert undocumented == []
    for (method, path), doc in DOCS.items():
        assert doc.returns in SCHEMAS, f"{method} {path}: unknown answer schema {doc.returns}"
    assert set(WEBSOCKETS) == set(websocket_routes())  # each WebSocket door is described


async def test_the_document_lists_every_route_and_validates(parley: InProcess) -> None:
    resp = await parley.http.get("/openapi.json")
    assert resp.status_code == 200
    document = resp.json()
    validate(document)  # OpenAPI 3.1 (openapi-spec-validator picks the version from the document)
    assert document["openapi"] == "3.1.0"
    table = {(method, route.path.replace(":path", "")) for route in parley.app.router.routes
             if isinstance(route, Route) for method in (route.methods or set()) - {"HEAD"}}
    table |= {("GET", path) for path in websocket_routes()}  # WebSocket doors: a GET that upgrades
    assert _operations(document) == table
    create = document["paths"]["/v1/responses"]["post"]
    ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"model", "input", "stream", "background", "tools"} <= set(schema["properties"])
    assert "text/event-stream" in create["responses"]["200"]["content"]
    upgrade = document["paths"]["/v1/responses"]["get"]
    assert set(upgrade["responses"]) == {"101", "default"} and upgrade["security"] == [{"bearer": []}]
    events = [document["components"]["schemas"][one["$ref"].rsplit("/", 1)[1]]
              for one in upgrade["x-websocket"]["client_events"]["oneOf"]]
    assert [event["properties"]["type"]["const"] for event in events] == ["response.create", "response.steer"]
    assert {"model", "input", "stream_id", "generate", "previous_response_id"} <= set(events[0]["properties"])
    assert "ResponsesServerEvent" in upgrade["x-websocket"]["server_events"]
    keys = document["paths"]["/v1/organization/keys"]["post"]
    assert keys["security"] == [{"bearer": []}] and "admin key" in keys["description"]
    assert document["paths"]["/health"]["get"]["security"] == []


def test_a_route_without_a_description_still_appears_marked() -> None:
    async def handler(request: object) -> Response:
        return Response()

    document = openapi_document([*routes(), Route("/v1/new_things/{thing_id}", handler, methods=["GET"])])
    operation = document["paths"]["/v1/new_things/{thing_id}"]["get"]
    assert operation["x-parley-undocumented"] is True
    assert operation["parameters"][0]["name"] == "thing_id"
    validate(document)


async def test_the_docs_page_is_served_with_its_assets(parley: InProcess) -> None:
    page = await parley.http.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert '<script src="/docs/docs.js"' in page.text and "http" not in page.text.replace("/openapi.json", "")
    script = await parley.http.get("/docs/docs.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert 'fetch("/openapi.json")' in script.text
    assert (await parley.http.get("/docs/docs.css")).status_code == 200
    assert (await parley.http.get("/docs/secret.txt")).status_code == 404
