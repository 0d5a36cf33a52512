"""JSON log lines (`log_format = "json"`): one object per line, for log pipelines that index fields.

Every line has `time` (UTC, ISO 8601), `level`, `logger`, `message` and `request_id` (parley/log_context.py);
lines that carry structured fields (`extra={"fields": {...}}`, e.g. the access lines of telemetry/observe.py:
project, model, status, timings, tokens) add them as top-level keys. The formatter adds nothing else: what a line
says is decided where it is logged, so no prompt, output or key reaches a line unless `log_content` asked for it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from parley.log_context import current_request_id

_BASE = ("time", "level", "logger", "message", "request_id")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or current_request_id(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update((key, value) for key, value in fields.items() if key not in _BASE)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()
