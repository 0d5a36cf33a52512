"""Object ids: unguessable, and increasing with time so stored rows append to the index B-trees."""

from __future__ import annotations

import re
import time

from parley.ids import new_id


def test_ids_keep_the_prefix_and_length_and_are_unique() -> None:
    ids = [new_id("resp") for _ in range(10_000)]
    assert all(re.fullmatch(r"resp_[0-9a-f]{48}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_ids_made_later_sort_later() -> None:
    earlier = [new_id("msg") for _ in range(100)]
    time.sleep(0.002)
    later = [new_id("msg") for _ in range(100)]
    assert max(earlier) < min(later)
    # The random tail still differs between ids made in the same microsecond.
    assert len({i[18:] for i in earlier + later}) == 200
