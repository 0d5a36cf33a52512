"""One error hierarchy. The API layer turns these into `{"error": {...}}` bodies in exactly one place."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ParleyError(Exception):
    """An error with everything the OpenAI error body needs."""

    message: str
    param: str | None = None
    code: str | None = None
    status: int = 500
    type: str = "server_error"
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def body(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(ParleyError):
    def __init__(self, message: str, param: str | None = None, code: str | None = "invalid_value") -> None:
        super().__init__(message, param, code, 400, "invalid_request_error")


class UnsupportedSchema(InvalidRequest):
    """A schema a model cannot hold its output to (the embedded model's grammar). `function`: the upstream name of
    the function whose `parameters` it is, which the request's tools then name by their place (`tools[2].parameters`);
    None for `text.format`."""

    def __init__(self, message: str, param: str, function: str | None = None) -> None:
        super().__init__(message, param, "unsupported_schema")
        self.function = function


class NotFound(ParleyError):
    def __init__(self, message: str, param: str | None = None, code: str | None = "not_found") -> None:
        super().__init__(message, param, code, 404, "invalid_request_error")


class Unauthorized(ParleyError):
    def __init__(self, message: str) -> None:
        super().__init__(message, None, "invalid_api_key", 401, "invalid_request_error")


class PermissionDenied(ParleyError):
    """The key is valid but may not do this (an admin key on a project endpoint, a project key on an admin one)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, None, "insufficient_permissions", 403, "invalid_request_error")


class RateLimited(ParleyError):
    """A Parley rate limit or budget was reached (services/limits.py): a 429 in OpenAI's shape, whose `type` says
    which limit (`requests`, `tokens`; `insufficient_quota` for a spend budget), with `retry-after`."""

    def __init__(self, message: str, kind: str, headers: dict[str, str]) -> None:
        code = "insufficient_quota" if kind == "insufficient_quota" else "rate_limit_exceeded"
        super().__init__(message, None, code, 429, kind, headers)


class Conflict(ParleyError):
    def __init__(self, message: str, param: str | None = None, code: str | None = "conflict") -> None:
        super().__init__(message, param, code, 409, "invalid_request_error")


class PayloadTooLarge(ParleyError):
    def __init__(self, message: str) -> None:
        super().__init__(message, None, "request_too_large", 413, "invalid_request_error")


class UnsupportedMediaType(ParleyError):
    """415: the body is in a form Parley does not read (a request `Content-Encoding` it does not decode)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message, None, code, 415, "invalid_request_error")


class RequestTimeout(ParleyError):
    def __init__(self, message: str) -> None:
        super().__init__(message, None, "request_timeout", 408, "invalid_request_error")


class UpstreamError(ParleyError):
    """The model upstream failed. 502 by default; the constructor helpers pick the right status.

    `upstream_status` and `upstream_text` (what the upstream said, credentials masked) are for the server
    log only (providers/upstream_http.py): they never reach a body."""

    upstream_status: int | None = None
    upstream_text: str = ""

    @classmethod
    def bad_gateway(cls, message: str, code: str = "upstream_error") -> UpstreamError:
        return cls(message, None, code, 502, "server_error")

    @classmethod
    def timeout(cls, message: str) -> UpstreamError:
        return cls(message, None, "upstream_timeout", 504, "server_error")

    @classmethod
    def rate_limited(cls, message: str, retry_after: str | None) -> UpstreamError:
        headers = {"retry-after": retry_after} if retry_after else {}
        return cls(message, None, "rate_limit_exceeded", 429, "rate_limit_error", headers)

    @classmethod
    def rejected(cls, message: str, param: str | None = None, code: str | None = None) -> UpstreamError:
        """The upstream refused the request as invalid (its 400/404/422): the caller's input is at fault."""
        return cls(message, param, code or "invalid_request", 400, "invalid_request_error")


class ModelUnavailable(ParleyError):
    """A model Parley runs itself (the embedded model) cannot answer now: 503, saying why."""

    def __init__(self, message: str, retry_after: str | None = None) -> None:
        headers = {"retry-after": retry_after} if retry_after else {}
        super().__init__(message, "model", "model_unavailable", 503, "server_error", headers)


class UnreadableFile(ParleyError):
    """A file whose text cannot be extracted (retrieval/extract.py): `unsupported_file` for a type Parley cannot
    read, `invalid_file` for one that is damaged or not what it claims to be. The codes are those of a vector
    store file's `last_error`; as a request error it is a 400 naming `param` when the caller knows it."""

    def __init__(self, message: str, code: str = "unsupported_file", param: str | None = None) -> None:
        super().__init__(message, param, code, 400, "invalid_request_error")


class UrlFetchFailed(ParleyError):
    """A server-side fetch of a URL the client gave (retrieval/fetch.py) was refused by the SSRF guard
    (`url_refused`) or failed (`url_fetch_failed`, `url_too_large`, `url_timeout`): the client's input, a 400."""

    def __init__(self, message: str, code: str = "url_fetch_failed", param: str | None = None) -> None:
        super().__init__(message, param, code, 400, "invalid_request_error")


class InternalError(ParleyError):
    def __init__(self, message: str = "The server had an error while processing your request.") -> None:
        super().__init__(message, None, "server_error", 500, "server_error")
