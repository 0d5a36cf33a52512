"""GET /console: the web console (playground, response explorer, usage, keys), three static files of Parley's own.

The files hold no secret and need none to load; every call they make is an ordinary API request carrying the key
the user pasted (kept in sessionStorage, sent as `Authorization: Bearer`), so the console can do exactly what the
key can. With no cookie or other ambient credential, a page elsewhere cannot make the browser send an
authenticated request (nothing to forge: CSRF-safe by construction). The content-security policy allows only
these files and same-origin requests: no inline script or style, no framing.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from parley.api.http import endpoint
from parley.errors import NotFound

ASSETS = {"index.html": "text/html; charset=utf-8", "console.js": "text/javascript; charset=utf-8",
          "console.css": "text/css; charset=utf-8"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@endpoint
async def console_page(request: Request, rid: str) -> Response:
    return _static("index.html", rid)


@endpoint
async def console_asset(request: Request, rid: str) -> Response:
    name = request.path_params["asset"]
    if name not in ASSETS or name == "index.html":
        raise NotFound(f"Unknown request URL: GET /console/{name}.", code="unknown_url")
    return _static(name, rid)


def _static(name: str, rid: str) -> Response:
    body = resources.files("parley.api").joinpath("console", name).read_bytes()
    return Response(body, headers={"content-type": ASSETS[name], "content-security-policy": CSP,
                                   "x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
                                   "cache-control": "no-cache", "x-request-id": rid})
