"""The usage and costs reports in OpenAI's shapes (`GET /v1/organization/usage/completions`,
`GET /v1/organization/costs`, `parley usage`): usage records summed per time bucket and group, a page of
buckets at a time.

Buckets are aligned to UTC minutes, hours or days (the first is the one holding `start_time`); records count
from `start_time` (inclusive) to `end_time` (exclusive; default: now). Every bucket of a page is listed, an
empty one with no results. `next_page` is the cursor of the next page of buckets.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

from parley.errors import InvalidRequest
from parley.store.base import UsageGroup, UsageQuery, UsageTotals

BucketWidth = Literal["1m", "1h", "1d"]
# width in seconds, default and maximum buckets per page (OpenAI's for the usage endpoints)
BUCKETS: dict[str, tuple[int, int, int]] = {"1m": (60, 60, 1440), "1h": (3600, 24, 168), "1d": (86400, 7, 31)}
COSTS_MAX_LIMIT = 180  # buckets per page of the costs endpoint (OpenAI's maximum)
USAGE_GROUPS: tuple[str, ...] = ("project_id", "api_key_id", "model")
COSTS_GROUPS: tuple[str, ...] = ("project_id", "line_item", "api_key_id", "model")
_LINE_ITEMS = (("input_cost", "input"), ("cached_cost", "cached input"), ("output_cost", "output"),
               ("tool_cost", "tool calls"))


class UsageStore(Protocol):
    async def usage_totals(self, query: UsageQuery) -> list[UsageTotals]: ...


@dataclass(frozen=True, slots=True)
class ReportRequest:
    """The query parameters both reports take."""

    start_time: int
    end_time: int | None = None
    bucket_width: str = "1d"
    group_by: tuple[str, ...] = ()
    project_ids: tuple[str, ...] = ()
    api_key_ids: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    limit: int | None = None
    page: str | None = None


def _cursor(start: int) -> str:
    return "page_" + base64.urlsafe_b64encode(str(start).encode()).decode().rstrip("=")


def _uncursor(page: str) -> int:
    try:
        raw = page.removeprefix("page_")
        return int(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest("Invalid value for 'page': not a cursor this server returned.", param="page") from None


@dataclass(frozen=True, slots=True)
class _Page:
    origin: int  # start of the bucket holding start_time
    width: int
    first: int  # start of this page's first bucket
    count: int  # buckets on this page
    end: int  # end of the whole range (exclusive)
    has_more: bool


class UsageReports:
    def __init__(self, store: UsageStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    async def completions(self, req: ReportRequest) -> dict[str, Any]:
        _check_groups(req.group_by, USAGE_GROUPS)
        page = self._page(req, BUCKETS[req.bucket_width][2])
        groups = _usage_groups(req.group_by)
        totals = await self._totals(req, page, groups)
        return _page_body(page, totals, lambda t: [_usage_result(t, groups)])

    async def costs(self, req: ReportRequest) -> dict[str, Any]:
        _check_groups(req.group_by, COSTS_GROUPS)
        page = self._page(req, COSTS_MAX_LIMIT)
        by_line = "line_item" in req.group_by
        groups = _usage_groups((*req.group_by, "model") if by_line else req.group_by)
        totals = await self._totals(req, page, groups)
        shown = tuple(g for g in groups if g in req.group_by)
        return _page_body(page, totals, lambda t: _cost_results(t, shown, by_line))

    def _page(self, req: ReportRequest, max_limit: int) -> _Page:
        width, default_limit, _ = BUCKETS[req.bucket_width]
        limit = req.limit if req.limit is not None else default_limit
        if not 1 <= limit <= max_limit:
            raise InvalidRequest(f"Invalid value for 'limit': expected 1 to {max_limit} buckets with bucket_width "
                                 f"'{req.bucket_width}'.", param="limit")
        end = req.end_time if req.end_time is not None else int(self._clock()) + 1
        if end <= req.start_time:
            if req.end_time is None:  # the client sent no end_time: its start_time is the wrong one
                raise InvalidRequest("Invalid value for 'start_time': it is in the future (end_time defaults to now).",
                                     param="start_time")
            raise InvalidRequest("'end_time' must be after 'start_time'.", param="end_time")
        origin = req.start_time - req.start_time % width
        first = origin if req.page is None else _uncursor(req.page)
        if first < origin or (first - origin) % width or first >= end:
            raise InvalidRequest("Invalid value for 'page': it does not belong to this query.", param="page")
        remaining = math.ceil((end - first) / width)
        return _Page(origin, width, first, min(limit, remaining), end, remaining > limit)

    async def _totals(self, req: ReportRequest, page: _Page, groups: tuple[UsageGroup, ...]) -> list[UsageTotals]:
        query = UsageQuery(
            start=max(req.start_time, page.first), end=min(page.end, page.first + page.count * page.width),
            origin=page.origin, width=page.width, group_by=groups, project_ids=req.project_ids,
            api_key_ids=req.api_key_ids, models=req.models,
        )
        return await self._store.usage_totals(query)


def _usage_groups(names: tuple[str, ...]) -> tuple[UsageGroup, ...]:
    """The usage_records columns among `names`, in a fixed order."""
    return tuple(cast(UsageGroup, name) for name in USAGE_GROUPS if name in names)


def _check_groups(group_by: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    for value in group_by:
        if value not in allowed:
            raise InvalidRequest(f"Invalid value for 'group_by': '{value}' (expected {', '.join(allowed)}).",
                                 param="group_by")


def _page_body(page: _Page, totals: list[UsageTotals],
               results: Callable[[UsageTotals], list[dict[str, Any]]]) -> dict[str, Any]:
    by_bucket: dict[int, list[dict[str, Any]]] = {}
    for total in totals:
        by_bucket.setdefault(page.origin + total.bucket * page.width, []).extend(results(total))
    data = []
    for index in range(page.count):
        start = page.first + index * page.width
        data.append({"object": "bucket", "start_time": start, "end_time": start + page.width,
                     "results": by_bucket.get(start, [])})
    next_start = page.first + page.count * page.width
    return {"object": "page", "data": data, "has_more": page.has_more,
            "next_page": _cursor(next_start) if page.has_more else None}


def _usage_result(total: UsageTotals, groups: tuple[UsageGroup, ...]) -> dict[str, Any]:
    return {
        "object": "organization.usage.completions.result",
        "input_tokens": total.input_tokens,
        "output_tokens": total.output_tokens,
        "input_cached_tokens": total.cached_tokens,
        "input_audio_tokens": 0,
        "output_audio_tokens": 0,
        "num_model_requests": total.requests,
        "project_id": total.group.get("project_id") if "project_id" in groups else None,
        "user_id": None,
        "api_key_id": total.group.get("api_key_id") if "api_key_id" in groups else None,
        "model": total.group.get("model") if "model" in groups else None,
        "batch": None,
        # Parley's own: what OpenAI's result has no field for.
        "input_cache_write_tokens": total.cache_write_tokens,
        "output_reasoning_tokens": total.reasoning_tokens,
    }


def _amount(nanos: int) -> dict[str, Any]:
    return {"value": nanos / 1e9, "currency": "usd"}


def _cost_results(total: UsageTotals, shown: tuple[str, ...], by_line: bool) -> list[dict[str, Any]]:
    base = {"object": "organization.costs.result", "line_item": None,
            **{name: total.group.get(name) if name in shown else None for name in ("project_id", "api_key_id",
                                                                                   "model")}}
    if not by_line:
        cost = total.input_cost + total.cached_cost + total.output_cost + total.tool_cost
        return [{**base, "amount": _amount(cost)}]
    model = total.group.get("model") or ""
    return [{**base, "amount": _amount(getattr(total, field)), "line_item": f"{model}, {label}"}
            for field, label in _LINE_ITEMS if getattr(total, field)]
