"""`parley usage`: the usage or costs report of `/v1/organization/...` read straight from the database, printed
as a table (one row per bucket and group; empty buckets are left out)."""

from __future__ import annotations

import calendar
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from parley.config import Settings
from parley.services.usage_reports import ReportRequest, UsageReports
from parley.store.sql import SqlStore

_USAGE_COLUMNS = (("requests", "num_model_requests"), ("input", "input_tokens"), ("cached", "input_cached_tokens"),
                  ("output", "output_tokens"), ("reasoning", "output_reasoning_tokens"))


def parse_time(text: str) -> int:
    """Unix seconds, or an ISO date/time (UTC unless it says otherwise)."""
    if text.isdigit():
        return int(text)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        return calendar.timegm(moment.timetuple())
    return int(moment.timestamp())


def default_start(days: int = 7) -> int:
    """Midnight UTC, `days` - 1 days ago: the last `days` daily buckets."""
    now = int(time.time())
    return now - now % 86400 - (days - 1) * 86400


async def collect(settings: Settings, req: ReportRequest, costs: bool) -> list[dict[str, Any]]:
    """Every bucket from start to end, following `next_page`."""
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = await SqlStore.open(settings.effective_database_url)
    try:
        reports = UsageReports(store)
        buckets: list[dict[str, Any]] = []
        page: str | None = None
        while True:
            body = await (reports.costs if costs else reports.completions)(replace(req, page=page))
            buckets += body["data"]
            page = body["next_page"]
            if not body["has_more"] or page is None:
                return buckets
    finally:
        await store.close()


def table(buckets: list[dict[str, Any]], group_by: tuple[str, ...], costs: bool) -> list[str]:
    """The report as aligned text lines: a header, then one line per result."""
    groups = [g for g in (("project_id", "line_item", "api_key_id", "model") if costs else
                          ("project_id", "api_key_id", "model")) if g in group_by]
    numbers = [("cost_usd", None)] if costs else list(_USAGE_COLUMNS)
    header = ["start (UTC)", *groups, *(label for label, _ in numbers)]
    rows: list[list[str]] = []
    for bucket in buckets:
        start = datetime.fromtimestamp(bucket["start_time"], UTC).strftime("%Y-%m-%d %H:%M")
        for result in bucket["results"]:
            values = [f"{result['amount']['value']:.6f}"] if costs else [str(result[key]) for _, key in numbers if key]
            rows.append([start, *(str(result.get(g) or "-") for g in groups), *values])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    text_columns = 1 + len(groups)

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(widths[i]) if i < text_columns else cell.rjust(widths[i])
                         for i, cell in enumerate(cells)).rstrip()

    return [line(header), *(line(row) for row in rows)]
