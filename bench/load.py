"""The load generator: closed-loop workers on one pooled keep-alive aiohttp session per target.

Each of `concurrency` workers sends a request, reads the whole answer, records its latency (and for
SSE the time until the first complete `data:` line), and sends the next until the round's deadline.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

import aiohttp

_JSON_HEADERS = {"content-type": "application/json", "authorization": "Bearer bench"}
_TAIL = 64
_MARKER_TAIL = 4096  # a native stream's last event (for Responses, a whole Response) holds its end marker


@dataclass(frozen=True, slots=True)
class Target:
    """One logical request sent to one server: `direct` (the upstream's own API) or `parley` (Responses)."""

    name: str
    url: str
    body: bytes
    stream: bool
    # How a complete stream ends: None for `data: [DONE]` (Chat Completions, Parley); otherwise bytes found in its
    # last event (native streams have no [DONE]: Anthropic's `message_stop`, Gemini's last chunk, ...).
    end_marker: bytes | None = None


@dataclass(slots=True)
class RoundResult:
    """What one round of one target measured; times in seconds."""

    latencies: list[float] = field(default_factory=list)
    first_event: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 3:
            self.error_samples.append(message[:300])


def session(max_connections: int) -> aiohttp.ClientSession:
    """One pool per target, sized to the highest concurrency so every worker keeps its own connection."""
    connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=0, keepalive_timeout=120)
    return aiohttp.ClientSession(
        connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding"),
        timeout=aiohttp.ClientTimeout(total=60),
    )


async def _read_json(resp: aiohttp.ClientResponse) -> str | None:
    body = await resp.read()
    if resp.status != 200:
        return f"HTTP {resp.status}: {body[:200]!r}"
    if not body.startswith(b"{"):
        return f"not a JSON object: {body[:200]!r}"
    return None


async def _read_sse(resp: aiohttp.ClientResponse, started: float, result: RoundResult,
                    end_marker: bytes | None = None) -> str | None:
    """Drain the stream without splitting lines; note when the first `data:` line is complete."""
    if resp.status != 200:
        return f"HTTP {resp.status}: {(await resp.read())[:200]!r}"
    content = resp.content
    head = b""
    while True:
        chunk = await content.readany()
        if not chunk:
            return f"stream ended before any data line: {head[:200]!r}"
        head += chunk
        at = head.find(b"data:")
        if at >= 0 and head.find(b"\n", at) >= 0:
            result.first_event.append(time.perf_counter() - started)
            break
    keep = _TAIL if end_marker is None else _MARKER_TAIL
    tail = head[-keep:]
    while chunk := await content.readany():
        tail = (tail + chunk)[-keep:]
    if end_marker is not None:
        return None if end_marker in tail else f"stream did not end with {end_marker!r}: {tail[-200:]!r}"
    if not tail.rstrip().endswith(b"data: [DONE]"):
        return f"stream did not end with data: [DONE]: {tail!r}"
    return None


async def _worker(http: aiohttp.ClientSession, target: Target, deadline: float, result: RoundResult) -> float:
    """Send requests back to back until the deadline; returns when the last answer completed."""
    last = time.perf_counter()
    while last < deadline:
        started = time.perf_counter()
        try:
            async with http.post(target.url, data=target.body, headers=_JSON_HEADERS) as resp:
                problem = await (_read_sse(resp, started, result, target.end_marker) if target.stream
                                 else _read_json(resp))
        except (TimeoutError, aiohttp.ClientError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        last = time.perf_counter()
        if problem is None:
            result.latencies.append(last - started)
        else:
            result.error(problem)
            await asyncio.sleep(0.01)  # a failing server must not turn the worker into a busy loop
    return last


async def run_round(http: aiohttp.ClientSession, target: Target, concurrency: int, duration_s: float) -> RoundResult:
    """`concurrency` closed-loop workers for `duration_s`; elapsed runs until the last answer completed."""
    result = RoundResult()
    started = time.perf_counter()
    deadline = started + duration_s
    ends = await asyncio.gather(*(_worker(http, target, deadline, result) for _ in range(concurrency)))
    result.elapsed_s = max(ends) - started
    return result


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]
