"""Process-wide logging of `parley serve` (and of each of its worker processes): level, format, and the
third-party loggers kept from writing secrets.

At debug level `aiosqlite` logs every call it runs with its arguments (so each client key's SHA-256, looked
up on every request, would land in the log); it is held at INFO. SQLAlchemy's own statement logging is
given no parameters at all (`hide_parameters` in store/sql.py), which also keeps them out of its error texts.
The MCP SDK (`mcp`, debug) and its HTTP client (`httpx2`, info) log the URLs of MCP servers, which a client may
have given with a token in them: they are held at INFO and WARNING.

Every line names the request it was written for (`[req_...]`, the `x-request-id` its client got; a background
run's lines name its response; `-` outside any request), from parley/log_context.py. `log_format = "json"` writes
each line as a JSON object instead (parley/log_json.py).
"""

from __future__ import annotations

import logging

from parley.log_context import current_request_id
from parley.log_json import JsonFormatter

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
# Loggers whose debug output carries query parameters (key hashes among them).
_PARAMETER_LOGGERS = ("aiosqlite",)
# Loggers that write the URLs of MCP servers below these levels.
_URL_LOGGERS = {"mcp": logging.INFO, "httpx2": logging.WARNING}


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to each record: the request being served where the line was written."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id()
        return True


def configure_logging(level: str, log_format: str = "text") -> None:
    logging.basicConfig(level=level.upper(), format=FORMAT)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())
        if log_format == "json":
            handler.setFormatter(JsonFormatter())
    for name in _PARAMETER_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.INFO:  # its own level (NOTSET follows the root, which may go to DEBUG later)
            logger.setLevel(logging.INFO)
    for name, floor in _URL_LOGGERS.items():
        logger = logging.getLogger(name)
        if logger.level < floor:
            logger.setLevel(floor)
