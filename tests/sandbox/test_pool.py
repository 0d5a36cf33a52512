"""Start-up clean-up: the working copies of a process that is gone are removed; a live process's stay."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from parley.sandbox.pool import SessionPool


def test_leftovers_of_dead_processes_are_removed(tmp_path: Path) -> None:
    dead, alive = tmp_path / "111-dead", tmp_path / "222-alive"
    for directory in (dead, alive):
        (directory / "cntr_x-1").mkdir(parents=True)
        (directory / "cntr_x-1" / "file").write_text("left over")
        (tmp_path / f"{directory.name}.lock").touch()
    holder = os.open(tmp_path / "222-alive.lock", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        assert SessionPool.clean_leftovers(tmp_path) == 1
        assert not dead.exists() and not (tmp_path / "111-dead.lock").exists()
        assert (alive / "cntr_x-1" / "file").exists()
    finally:
        os.close(holder)
    assert SessionPool.clean_leftovers(tmp_path) == 1
    assert list(tmp_path.iterdir()) == []
