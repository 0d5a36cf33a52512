"""The usage meter that also reports each finished response to the app's telemetry.

services/usage.py makes one usage record per response that ran a model, when it ends — foreground (when it is
stored) and background (with its final event-log flush), however it ended. That is exactly once per response, so
the response counters (tokens, cost, latency, time to first token, status) and the end of its trace span hang
off it here, from the record's own data, rather than from each path that finishes a response.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from parley.engine.timing import Timing
from parley.services.limits import Limiter
from parley.services.usage import Deployment, Meter, UsageOrigin
from parley.store.base import UsageRecord
from parley.telemetry.observe import Telemetry


class ObservedMeter(Meter):
    def __init__(self, models: Mapping[str, Deployment], limiter: Limiter | None, telemetry: Telemetry) -> None:
        super().__init__(models, limiter)
        self._telemetry = telemetry

    def record(self, origin: UsageOrigin, response: dict[str, Any], timing: Timing | None) -> UsageRecord:
        record = super().record(origin, response, timing)
        self._telemetry.response_recorded(record, response)
        return record
