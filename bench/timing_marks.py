"""What a response's timeline costs (engine/timing.py), measured in isolation: the gateway benchmark cannot
resolve a few microseconds on a busy 2-core machine. It costs no database round trip (the marks ride in the usage
record's row, in the response's one final write: tests/api/test_response_usage.py counts the transactions and
reads of a streamed request); what is left is CPU and the bytes of the row.

    python -m bench.timing_marks [--responses N]

Prints one JSON document (microseconds per response, best of 5 timings, and the stored JSON's size):
- `one_turn`: a plain response — its upstream answered, first output, turn done — then the stored timeline built
  and serialised as the usage row holds it;
- `tool_loop`: two model turns with two built-in calls between them.
"""

from __future__ import annotations

import argparse
import json
import time
import timeit
from collections.abc import Callable

import orjson

from parley.engine.timing import Timing


def _one_turn() -> bytes:
    timing = Timing()
    timing.mark("upstream_opened", {"turn": 1})
    timing.first_output(1)
    timing.mark("turn_done", {"turn": 1, "finish_reason": "stop"})
    return orjson.dumps(timing.timeline("completed", time.monotonic()))


def _tool_loop() -> bytes:
    timing = Timing()
    for turn in (1, 2):
        timing.mark("upstream_opened", {"turn": turn})
        timing.first_output(turn)
        timing.mark("turn_done", {"turn": turn, "finish_reason": "tool_calls" if turn == 1 else "stop"})
        if turn == 1:
            for call_id in ("call_a", "call_b"):
                timing.mark("tool_call_started", {"name": "web_search", "call_id": call_id})
            for call_id in ("call_a", "call_b"):
                timing.mark("tool_call_done", {"name": "web_search", "call_id": call_id, "type": "web_search_call",
                                               "status": "completed"})
    return orjson.dumps(timing.timeline("completed", time.monotonic()))


def _best(run: Callable[[], object], number: int) -> float:
    return round(min(timeit.repeat(run, number=number, repeat=5)) / number * 1e6, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--responses", type=int, default=50_000)
    args = parser.parse_args()
    print(json.dumps({
        "one_turn": {"us_per_response": _best(_one_turn, args.responses), "timeline_bytes": len(_one_turn())},
        "tool_loop": {"us_per_response": _best(_tool_loop, args.responses), "timeline_bytes": len(_tool_loop())},
    }, indent=2))


if __name__ == "__main__":
    main()
