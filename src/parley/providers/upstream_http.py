"""Upstream HTTP failures -> ParleyError, for every provider. Keys and stack traces never leak."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson

from parley.errors import ParleyError, UpstreamError
from parley.providers.http1 import ConnectFailed, Disconnected, HttpError, ReadTimeout

_MAX_MESSAGE = 500


def _upstream_message(body: bytes) -> tuple[str, str | None, str | None]:
    """(message, code, param) from an OpenAI-shaped error body, else the raw text (truncated)."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")[:_MAX_MESSAGE].strip(), None, None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        code = err.get("code")
        param = err.get("param")
        return (
            str(err.get("message") or "")[:_MAX_MESSAGE],
            code if isinstance(code, str) else None,
            param if isinstance(param, str) else None,
        )
    if isinstance(err, str):
        return err[:_MAX_MESSAGE], None, None
    if isinstance(data, dict) and isinstance(data.get("detail"), str):
        return data["detail"][:_MAX_MESSAGE], None, None
    return body.decode("utf-8", "replace")[:_MAX_MESSAGE], None, None


def status_error(model: str, status: int, body: bytes, headers: Mapping[str, str]) -> ParleyError:
    message, code, param = _upstream_message(body)
    where = f"the upstream for model '{model}'"
    if status in (401, 403):
        # Our credentials are wrong: that is Parley's misconfiguration, not the caller's (DESIGN.md §5).
        return UpstreamError.bad_gateway(
            f"{where} rejected Parley's credentials (HTTP {status}); check the model's api_key_env.",
            code="upstream_auth_failed",
        )
    if status == 429:
        return UpstreamError.rate_limited(
            f"{where} is rate limiting requests: {message or 'too many requests'}", headers.get("retry-after")
        )
    if status in (408, 504):
        return UpstreamError.timeout(f"{where} timed out (HTTP {status}).")
    if 400 <= status < 500:
        if "context" in message.lower() and ("length" in message.lower() or "window" in message.lower()):
            code = "context_length_exceeded"
        return UpstreamError.rejected(message or f"{where} rejected the request (HTTP {status}).", param, code)
    return UpstreamError.bad_gateway(f"{where} failed (HTTP {status}): {message}".rstrip(": "))


def transport_error(model: str, exc: BaseException) -> ParleyError:
    where = f"the upstream for model '{model}'"
    if isinstance(exc, ReadTimeout | asyncio.TimeoutError):
        return UpstreamError.timeout(f"{where} did not answer in time.")
    if isinstance(exc, ConnectFailed):
        return UpstreamError.bad_gateway(f"Could not connect to {where}.", code="upstream_unreachable")
    if isinstance(exc, Disconnected):
        return UpstreamError.bad_gateway(f"{where} closed the connection before finishing.")
    return UpstreamError.bad_gateway(f"Error talking to {where}: {type(exc).__name__}.")


TRANSPORT_ERRORS = (HttpError, asyncio.TimeoutError)
