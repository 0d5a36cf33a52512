"""Fold the rounds of a gateway benchmark into the JSON report: per target, per scenario, targets met; and what
every benchmark reports the same way (Parley's process, the JSON output)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.load import RoundResult, percentile
from bench.procs import ProcSample

PROCESSES = ("parley", "upstream", "load_generator")
ADDED_LATENCY_LIMIT_MS = 1.0  # target: Parley adds <= 1 ms p50 at concurrency 1
THROUGHPUT_RATIO_MIN = 0.25  # target: Parley sustains >= 25% of the upstream's requests/s at concurrency 64
# A stored request on PostgreSQL (issue 14): at most 1.5 ms added at c=1, at least 20% of direct at c=64.
POSTGRES_LATENCY_LIMIT_MS = 1.5
POSTGRES_RATIO_MIN = 0.20


@dataclass(slots=True)
class TargetRuns:
    """Every measured round of one target in one scenario, with the CPU each process used meanwhile."""

    rounds: list[RoundResult] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PROCESSES, 0.0))
    machine_cpu_s: float = 0.0

    def add(self, result: RoundResult, cpu_s: dict[str, float]) -> None:
        """`cpu_s`: CPU seconds used during the round per process in PROCESSES (and "database" when the database
        is a server of its own), plus "machine" (all)."""
        self.rounds.append(result)
        for name, used in cpu_s.items():
            if name != "machine":
                self.cpu_s[name] = self.cpu_s.get(name, 0.0) + used
        self.machine_cpu_s += cpu_s["machine"]


def _ms(value: float) -> float | None:
    return None if math.isnan(value) else round(value * 1000, 3)


def _distribution(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    mean = sum(ordered) / len(ordered) if ordered else math.nan
    return {
        "p50": _ms(percentile(ordered, 50)),
        "p90": _ms(percentile(ordered, 90)),
        "p99": _ms(percentile(ordered, 99)),
        "mean": _ms(mean),
        "max": _ms(ordered[-1] if ordered else math.nan),
    }


def summarize_target(runs: TargetRuns, stream: bool) -> dict[str, Any]:
    latencies = [x for r in runs.rounds for x in r.latencies]
    first_events = [x for r in runs.rounds for x in r.first_event]
    elapsed = sum(r.elapsed_s for r in runs.rounds)
    requests = len(latencies)
    errors = sum(r.errors for r in runs.rounds)
    return {
        "requests": requests,
        "errors": errors,
        "error_samples": [s for r in runs.rounds for s in r.error_samples][:3],
        "rps": round(requests / elapsed, 1) if elapsed else 0.0,
        "rps_rounds": [round(len(r.latencies) / r.elapsed_s, 1) if r.elapsed_s else 0.0 for r in runs.rounds],
        "latency_ms": _distribution(latencies),
        "first_event_ms": _distribution(first_events) if stream else None,
        # CPU seconds each process used during this target's rounds, per completed request (ms) and as
        # a share of one core (1.0 = one core busy the whole time): shows which process was the bottleneck.
        "cpu_ms_per_request": {
            name: round(used * 1000 / requests, 3) if requests else None for name, used in runs.cpu_s.items()
        },
        "cpu_cores_busy": _cores_busy(runs, elapsed),
    }


def _cores_busy(runs: TargetRuns, elapsed: float) -> dict[str, float | None]:
    if not elapsed:
        return dict.fromkeys([*PROCESSES, "other", "machine"], None)
    busy: dict[str, float | None] = {name: round(used / elapsed, 2) for name, used in runs.cpu_s.items()}
    other = runs.machine_cpu_s - sum(runs.cpu_s.values())
    busy["other"] = round(max(0.0, other) / elapsed, 2)
    busy["machine"] = round(runs.machine_cpu_s / elapsed, 2)
    return busy


def _diff(parley: float | None, direct: float | None) -> float | None:
    return None if parley is None or direct is None else round(parley - direct, 3)


def summarize_scenario(name: str, stream: bool, concurrency: int, runs: dict[str, TargetRuns]) -> dict[str, Any]:
    direct = summarize_target(runs["direct"], stream)
    parley = summarize_target(runs["parley"], stream)
    scenario: dict[str, Any] = {
        "name": name,
        "stream": stream,
        "concurrency": concurrency,
        "added_latency_ms_p50": _diff(parley["latency_ms"]["p50"], direct["latency_ms"]["p50"]),
        "added_latency_ms_p99": _diff(parley["latency_ms"]["p99"], direct["latency_ms"]["p99"]),
        "added_first_event_ms_p50": None,
        "added_first_event_ms_p99": None,
        "throughput_ratio": round(parley["rps"] / direct["rps"], 3) if direct["rps"] else None,
        "direct": direct,
        "parley": parley,
    }
    if stream:
        scenario["added_first_event_ms_p50"] = _diff(parley["first_event_ms"]["p50"], direct["first_event_ms"]["p50"])
        scenario["added_first_event_ms_p99"] = _diff(parley["first_event_ms"]["p99"], direct["first_event_ms"]["p99"])
    return scenario


def targets(scenarios: list[dict[str, Any]], *, latency_limit_ms: float = ADDED_LATENCY_LIMIT_MS,
            ratio_min: float = THROUGHPUT_RATIO_MIN) -> dict[str, Any]:
    """The two goals, checked on whichever of the c=1 and c=64 scenarios were run (the core targets by default;
    PostgreSQL's are POSTGRES_LATENCY_LIMIT_MS and POSTGRES_RATIO_MIN)."""
    latency = {s["name"]: s["added_latency_ms_p50"] for s in scenarios if s["concurrency"] == 1}
    ratio = {s["name"]: s["throughput_ratio"] for s in scenarios if s["concurrency"] == 64}
    return {
        "added_latency_ms_p50_at_c1": {
            "limit": latency_limit_ms,
            "values": latency,
            "met": all(v is not None and v <= latency_limit_ms for v in latency.values()) if latency else None,
        },
        "throughput_ratio_at_c64": {
            "limit": ratio_min,
            "values": ratio,
            "met": all(v is not None and v >= ratio_min for v in ratio.values()) if ratio else None,
        },
    }


def process_summary(startup_s: float, idle: ProcSample, end: ProcSample) -> dict[str, float]:
    """Parley's process over a run: start-up until /health answered, RSS idle / at the end / peak, CPU used."""
    return {"startup_s": round(startup_s, 2), "rss_mb_idle": round(idle.rss_mb, 1), "rss_mb_end": round(end.rss_mb, 1),
            "rss_mb_peak": round(end.rss_peak_mb, 1), "cpu_s_total": round(end.cpu_s - idle.cpu_s, 2)}


def emit(report: dict[str, Any], output: Path | None) -> None:
    """The report as JSON on stdout, and in `output` when given."""
    text = json.dumps(report, indent=2)
    if output is not None:
        output.write_text(text + "\n")
    print(text)
