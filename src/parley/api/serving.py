"""How uvicorn serves the app: its options, shared by `parley serve` and the in-process test server.

HTTP goes through uvicorn's httptools protocol with a deadline for request headers (api/http_protocol.py); a
WebSocket upgrade request passes that same deadline, then is handed to the `websockets` Sans-I/O protocol
(WebSocket mode, api/websocket.py). Frames are not compressed: per-message deflate costs CPU on every frame
and the SDK does not ask for it; a frame may be as large as a request body.
"""

from __future__ import annotations

import functools
from typing import Any

from parley.api.http_protocol import HeaderDeadlineProtocol
from parley.config import Settings


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of `uvicorn.run` / `uvicorn.Config` for the protocols and per-request behaviour."""
    return {
        "http": functools.partial(HeaderDeadlineProtocol, header_timeout_s=settings.header_timeout_s),
        "ws": "websockets-sansio" if settings.websocket.enabled else "none",
        "ws_max_size": settings.max_body_bytes,
        "ws_per_message_deflate": False,
        "loop": "uvloop",
        "lifespan": "on",
        "access_log": False,
        # No proxy-header rewriting (Parley does not trust forwarded addresses) and no per-response
        # Server/Date headers: measured per-request CPU on the hot path (bench/README.md).
        "proxy_headers": False,
        "server_header": False,
        "date_header": False,
    }
