"""Start the embedded model's server so that it dies with Parley: `python -m parley.providers.embedded_child
PARENT_PID COMMAND...` asks Linux to SIGKILL this process when its parent goes, then execs COMMAND.

A SIGKILLed Parley cannot stop its child itself; without this the child stays, holding its port and memory.
Imports only the standard library: it runs before every start of the child.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> bool:
    """PR_SET_PDEATHSIG(SIGKILL) for this process (kept across exec). False where prctl does not exist."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return False
    return int(prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)) == 0


def main(argv: list[str]) -> None:
    if len(argv) < 2 or not argv[0].isdigit():
        sys.exit("usage: python -m parley.providers.embedded_child PARENT_PID COMMAND...")
    parent, command = int(argv[0]), argv[1:]
    die_with_parent()
    # The parent may have died before prctl: the signal would never come, so stop now.
    if os.getppid() != parent:
        sys.exit(f"embedded_child: parent {parent} is gone")
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
