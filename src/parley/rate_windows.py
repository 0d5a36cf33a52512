"""The fixed UTC windows rate limits count in, and OpenAI's way of writing when one resets.

Shared by the project and key limits (services/limits.py) and the per-deployment limits of routes
(providers/routing.py), so both count a minute the same way: from one UTC minute boundary to the next.
"""

from __future__ import annotations

import calendar
import math
import re
import time
from dataclasses import dataclass

# The longest wait an upstream's 429 is believed for (a day: OpenAI's longest limits are per day), so a broken or
# hostile upstream's `retry-after: 1e300` cannot park a deployment for ever.
LONGEST_WAIT_S = 86400.0


@dataclass(frozen=True, slots=True)
class Windows:
    """The current fixed windows: period -> (start, end), Unix seconds, UTC."""

    bounds: dict[str, tuple[int, int]]

    @classmethod
    def at(cls, now: float) -> Windows:
        t = int(now)
        day = t - t % 86400
        year, month = time.gmtime(t)[:2]
        month_start = calendar.timegm((year, month, 1, 0, 0, 0))
        month_end = calendar.timegm((year + month // 12, month % 12 + 1, 1, 0, 0, 0))
        return cls({"minute": minute_window(now), "day": (day, day + 86400), "month": (month_start, month_end)})

    def start(self, period: str) -> int:
        return self.bounds[period][0]

    def end(self, period: str) -> int:
        return self.bounds[period][1]


def minute_window(now: float) -> tuple[int, int]:
    """The UTC minute `now` falls in, (start, end): `Windows.at(now)`'s minute, without the day and month."""
    start = int(now) - int(now) % 60
    return start, start + 60


def reset_text(seconds: float) -> str:
    """A duration as OpenAI writes `x-ratelimit-reset-*`: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest}s"


_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def reset_seconds(text: str) -> float | None:
    """An `x-ratelimit-reset-*` duration read back (`20ms`, `1.5s`, `6m0s`, `1h2m3s`); None if it is not one."""
    text = text.strip()
    parts = list(_PART.finditer(text))
    if not parts or "".join(p.group(0) for p in parts) != text:
        return None
    seconds = sum(float(p.group(1)) * _UNIT_S[p.group(2)] for p in parts)
    return seconds if math.isfinite(seconds) else None  # 400 nines is no duration
