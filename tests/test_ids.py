"""Ids (parley/ids.py): time-prefixed, 136 random bits from the OS's CSPRNG read in batches, every piece handed
out once (also across threads), and a forked child never repeats its parent's pieces."""

from __future__ import annotations

import os
import re
import threading

from parley.ids import RandomHex, id_time_us, new_id, random_hex


def test_ids_keep_their_shape_and_never_repeat() -> None:
    ids = [new_id("resp") for _ in range(1000)]  # several batches
    assert all(re.fullmatch(r"resp_[0-9a-f]{48}", i) for i in ids)
    assert len(set(ids)) == 1000
    assert len({i[-34:] for i in ids}) == 1000  # the random parts themselves
    assert id_time_us(ids[0]) is not None
    assert re.fullmatch(r"[0-9a-f]{32}", random_hex(32))


def test_threads_never_get_the_same_piece() -> None:
    source = RandomHex()
    taken: list[list[str]] = [[] for _ in range(8)]

    def take(out: list[str]) -> None:
        for _ in range(2000):
            out.append(source.take())

    threads = [threading.Thread(target=take, args=(out,)) for out in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pieces = [piece for out in taken for piece in out]
    assert len(pieces) == 16000 and len(set(pieces)) == 16000


def test_a_forked_child_does_not_repeat_the_parent() -> None:
    new_id("x")  # the parent has a batch in hand
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next piece and leave at once
        os.write(write, new_id("x")[-34:].encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 34 and child != new_id("x")[-34:]
