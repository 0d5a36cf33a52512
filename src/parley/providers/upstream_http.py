"""Upstream failures -> ParleyError, for every provider, and the one warning each failure is logged with.

An upstream's own words never reach a client or a stored response verbatim: the client gets the upstream's
HTTP status, its error type and code, and its message with anything shaped like a credential masked
(providers/redact.py); the whole text, masked too, goes to the server log. A rejection of Parley's own
credentials is a 502 naming the server's configuration (DESIGN.md §5), never the client's `invalid_api_key`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from parley.errors import ParleyError, UpstreamError
from parley.log_context import current_request_id
from parley.providers.http1 import (
    BodyTooLarge,
    ConnectFailed,
    Disconnected,
    HttpError,
    InvalidResponse,
    ReadTimeout,
)
from parley.providers.redact import SecretMasker
from parley.rate_windows import LONGEST_WAIT_S, reset_seconds

log = logging.getLogger("parley.upstream")

_MAX_MESSAGE = 500  # of the upstream's message, in what the client sees
_MAX_LOGGED = 2000  # of the upstream's whole text, in the log line
# An upstream error type or code is passed on only if it looks like one (an identifier, not prose).
_IDENTIFIER = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
# The upstream refused the credentials Parley sent (OpenAI answers 401, some compatible servers 400).
_AUTH_CODES = frozenset({"invalid_api_key", "invalid_authentication", "authentication_error", "unauthorized"})


@dataclass(frozen=True, slots=True)
class UpstreamReport:
    """What an upstream said about a failure: message (unmasked), and its type, code and param if any."""

    message: str
    type: str | None = None
    code: str | None = None
    param: str | None = None


def _identifier(value: Any) -> str | None:
    return value if isinstance(value, str) and _IDENTIFIER.fullmatch(value) else None


def error_report(data: Any) -> UpstreamReport | None:
    """The report in an error object: `{"error": {...}}` (OpenAI's shape), `{"error": "..."}`, or a
    `{"message"|"detail": "..."}` body; None if `data` is none of these."""
    if not isinstance(data, dict):
        return None
    err = data.get("error")
    if isinstance(err, dict):
        message = err.get("message")
        return UpstreamReport(str(message) if message is not None else "", _identifier(err.get("type")),
                              _identifier(err.get("code")), _identifier(err.get("param")))
    if isinstance(err, str):
        return UpstreamReport(err)
    for key in ("message", "detail"):
        if isinstance(data.get(key), str):
            return UpstreamReport(data[key], _identifier(data.get("type")), _identifier(data.get("code")))
    if err is not None:  # an error of any other shape: its JSON text
        return UpstreamReport(orjson.dumps(err).decode())
    return None


def _report(body: bytes) -> UpstreamReport:
    try:
        report = error_report(orjson.loads(body))
    except orjson.JSONDecodeError:
        report = None
    return report or UpstreamReport(body.decode("utf-8", "replace").strip())


def _said(status: int | None, report: UpstreamReport) -> str:
    parts = [f"HTTP {status}"] if status is not None else []
    parts += [f"{name} {value}" for name, value in (("type", report.type), ("code", report.code)) if value]
    return ", ".join(parts)


def _is_context_error(message: str) -> bool:
    lowered = message.lower()
    return "context" in lowered and ("length" in lowered or "window" in lowered)


def credentials_refused(model: str, said: str) -> UpstreamError:
    return UpstreamError.bad_gateway(
        f"The upstream for model '{model}' refused the server's credentials ({said}); this is the server's "
        "configuration (the model's api_key or api_key_env), not the request's key.",
        code="upstream_auth_failed",
    )


def status_error(
    model: str, status: int, body: bytes, headers: Mapping[str, str], masker: SecretMasker
) -> UpstreamError:
    """An upstream's non-200 answer as the error the client gets (masked), with the whole text for the log."""
    report = _report(body)
    message = masker.mask(report.message)[:_MAX_MESSAGE].strip()
    where = f"The upstream for model '{model}'"
    said = _said(status, report)
    if status in (401, 403) or report.code in _AUTH_CODES:
        err = credentials_refused(model, said)
    elif status == 429:
        err = UpstreamError.rate_limited(f"{where} is rate limiting requests ({said}): "
                                         f"{message or 'too many requests'}", None)
        err.headers.update(_retry_after(headers) or _rate_reset(headers))
    elif status == 529 or report.type == "overloaded_error":
        # Anthropic's "overloaded" (HTTP 529, https://docs.anthropic.com/en/api/errors): a temporary lack of
        # capacity, not a failure of this request: a 503 the client may retry, keeping any retry-after.
        err = UpstreamError(f"{where} is overloaded ({said}): {message or 'try again later'}", None,
                            "upstream_overloaded", 503, "server_error", _retry_after(headers))
    elif status in (408, 504):
        err = UpstreamError.timeout(f"{where} timed out ({said}).")
    elif 400 <= status < 500:
        code = "context_length_exceeded" if _is_context_error(message) else report.code
        err = UpstreamError.rejected(f"{where} rejected the request ({said}): {message}".rstrip(": "),
                                     report.param, code)
    else:
        err = UpstreamError.bad_gateway(f"{where} failed ({said}): {message}".rstrip(": "))
        err.headers.update(_retry_after(headers))  # a 503 saying when it is back
    err.upstream_status = status
    err.upstream_text = masker.mask(body[: _MAX_LOGGED * 2].decode("utf-8", "replace"))[:_MAX_LOGGED]
    return err


def _retry_after(headers: Mapping[str, str]) -> dict[str, str]:
    """The upstream's wait hints, kept for the client and for routing: `retry-after` (seconds or an HTTP date)
    and OpenAI's and Azure's `retry-after-ms`. A number that is not finite (`inf`, `nan`, `1e400`) is dropped and
    one over LONGEST_WAIT_S is cut to it: a broken upstream must not park a deployment for ever (or crash the
    arithmetic on it)."""
    kept: dict[str, str] = {}
    for name, scale in (("retry-after", 1.0), ("retry-after-ms", 1000.0)):
        value = headers.get(name)
        if not value:
            continue
        try:
            number = float(value)
        except ValueError:
            kept[name] = value  # an HTTP date (or unreadable: routing reads it as no wait)
            continue
        if math.isfinite(number):
            kept[name] = value if number <= LONGEST_WAIT_S * scale else str(int(LONGEST_WAIT_S * scale))
    return kept


def _rate_reset(headers: Mapping[str, str]) -> dict[str, str]:
    """A 429 without retry-after: when OpenAI's `x-ratelimit-reset-requests` / `-tokens` say the exhausted limit
    (its `x-ratelimit-remaining-*` is 0; else the later of the two) resets, as `retry-after-ms` and `retry-after`,
    so routing and the client wait for it as they would for a retry-after
    (https://platform.openai.com/docs/guides/rate-limits#rate-limits-in-headers)."""
    resets: list[tuple[bool, float]] = []  # (exhausted, seconds)
    for kind in ("requests", "tokens"):
        text = headers.get(f"x-ratelimit-reset-{kind}")
        seconds = reset_seconds(text) if text else None
        if seconds is not None:
            resets.append((headers.get(f"x-ratelimit-remaining-{kind}", "").strip() == "0", seconds))
    if not resets:
        return {}
    wait = max(seconds for exhausted, seconds in resets if exhausted or not any(e for e, _ in resets))
    wait = min(wait, LONGEST_WAIT_S)
    return {"retry-after-ms": str(math.ceil(wait * 1000)), "retry-after": str(math.ceil(wait))}


def reported_error(model: str, report: UpstreamReport, masker: SecretMasker) -> UpstreamError:
    """An error the upstream reported inside a 200 reply (a mid-stream error event, or an error body)."""
    said = _said(None, report)
    if report.code in _AUTH_CODES:
        return credentials_refused(model, said)
    message = masker.mask(report.message)[:_MAX_MESSAGE].strip()
    err = UpstreamError.bad_gateway(
        f"The upstream for model '{model}' reported an error mid-stream{f' ({said})' if said else ''}: "
        f"{message or 'no message'}")
    err.upstream_status = 200
    err.upstream_text = masker.mask(report.message)[:_MAX_LOGGED]
    return err


def transport_error(model: str, exc: BaseException) -> UpstreamError:
    where = f"the upstream for model '{model}'"
    if isinstance(exc, ReadTimeout | asyncio.TimeoutError):
        err = UpstreamError.timeout(f"{where} did not answer in time.")
    elif isinstance(exc, ConnectFailed):
        err = UpstreamError.bad_gateway(f"Could not connect to {where}.", code="upstream_unreachable")
    elif isinstance(exc, BodyTooLarge):
        err = reply_too_large(model, f"more than {exc.limit} bytes (max_upstream_reply_bytes)")
    elif isinstance(exc, InvalidResponse):
        err = UpstreamError.bad_gateway(f"{where} sent an invalid HTTP response.")
    elif isinstance(exc, Disconnected):
        err = UpstreamError.bad_gateway(f"{where} closed the connection before finishing.")
    else:
        err = UpstreamError.bad_gateway(f"Error talking to {where}: {type(exc).__name__}.")
    err.upstream_text = str(exc)
    return err


def coded_reply(model: str, headers: Mapping[str, str]) -> UpstreamError | None:
    """A 200 whose body has a content coding (gzip, ...) though the request asked for `identity` (http1.py):
    unreadable, and said so rather than as invalid JSON or a stream that ended early."""
    coding = headers.get("content-encoding", "identity").strip().lower()
    if coding in ("identity", ""):
        return None
    return UpstreamError.bad_gateway(
        f"The upstream for model '{model}' sent its reply with content-encoding {coding}, which was not asked for.")


def reply_too_large(model: str, what: str) -> UpstreamError:
    return UpstreamError.bad_gateway(
        f"The upstream for model '{model}' sent a reply of {what}, over this server's limit; it was cut.",
        code="upstream_reply_too_large",
    )


def log_failure(model: str, err: ParleyError, started: float) -> None:
    """The one log line of an upstream failure: model, upstream status, latency, request id, what the client
    was told and (masked) what the upstream said."""
    status = getattr(err, "upstream_status", None)
    text = getattr(err, "upstream_text", "")
    log.warning(
        "upstream failure: model=%s upstream_status=%s latency_ms=%d request=%s -> %d %s: %s%s",
        model, status if status is not None else "-", (time.monotonic() - started) * 1000, current_request_id(),
        err.status, err.code, err.message, f" | upstream said: {text}" if text else "",
    )


TRANSPORT_ERRORS = (HttpError, asyncio.TimeoutError)
