"""The fallback launcher's mechanisms, on hosts where bubblewrap works too: the boot script's Landlock rules,
seccomp filter, network namespace (as root) and rlimits confine a session with no mount namespace. On this
machine the runtime lives under /root, which a separate uid cannot enter, so the session keeps Parley's uid here
and Landlock alone keeps it from Parley's files; detection reports the fallback unavailable for that reason."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parley.sandbox import workdir
from parley.sandbox.detect import detect
from parley.sandbox.launch import Limits, Runtime, SessionSpec, fallback_command
from parley.sandbox.session import PythonSession


@pytest.fixture
async def session(tmp_path: Path) -> AsyncIterator[tuple[PythonSession, Path]]:
    os.chmod(tmp_path, 0o755)
    data, scratch = tmp_path / "data", tmp_path / "tmp"
    workdir.prepare(data, None)
    workdir.prepare(scratch, None)
    spec = SessionSpec(data, scratch, None, Limits(1 << 30, 60, 64, 1 << 20, tmp_bytes=1 << 20))
    command = fallback_command(Runtime.of(), spec, as_root=os.geteuid() == 0, parent_pid=os.getpid())
    started = await PythonSession.start(command, data, None, kill_by_uid=False, timeout_s=20, max_line_bytes=1 << 22)
    try:
        yield started, tmp_path
    finally:
        await started.kill()


async def test_fallback_confines_files_network_and_signals(session: tuple[PythonSession, Path]) -> None:
    running, tmp_path = session
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    code = f"""
import os, signal, socket
print(os.getcwd() == {str(tmp_path / 'data')!r})
open("mine.txt", "w").write("ok")
for path in [{str(secret)!r}, "/etc/hostname", {str(Path.cwd() / 'pyproject.toml')!r}]:
    try:
        open(path).read()
        print("READ", path)
    except OSError:
        print("denied")
try:
    open({str(tmp_path / 'planted')!r}, "w")
    print("WROTE")
except OSError:
    print("denied")
try:
    socket.create_connection(("127.0.0.1", 22), timeout=1)
    print("CONNECTED")
except OSError:
    print("denied")
try:
    os.kill({os.getpid()}, 0)
    print("SIGNALLED")
except OSError:
    print("denied")
"""
    result = await running.run(code, 20, None)
    assert result.logs.splitlines() == ["True"] + ["denied"] * 6, result.logs
    assert (tmp_path / "data" / "mine.txt").read_text() == "ok"


async def test_detection_explains_an_unusable_fallback(tmp_path: Path) -> None:
    sandbox = await detect("fallback", bwrap=None, python=None, uid_base=200_000, private=[tmp_path])
    if os.geteuid() == 0 and Runtime.of().python.startswith("/root/"):
        assert not sandbox.available and "cannot enter /root" in sandbox.reason
    assert sandbox.kind in ("fallback", None)
