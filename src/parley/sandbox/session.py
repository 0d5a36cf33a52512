"""One sandboxed Python process speaking the driver's protocol (sandbox/inside/driver.py): start it, run a cell
under a wall-clock limit while watching the container's disk use, kill it.

What comes back is untrusted (the cell's code can rewrite the driver): lines are bounded, JSON is checked
field by field, images must be PNGs. A session that times out, breaks the protocol or exceeds the disk quota is
killed with its whole process tree (bubblewrap: its pid namespace; the fallback: every process of its uid, or
its process group).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from parley.sandbox import workdir
from parley.sandbox.launch import Command

log = logging.getLogger("parley.sandbox")
_PNG = b"\x89PNG\r\n\x1a\n"
_STDERR_KEEP = 4096


class SessionFailed(Exception):
    """The session could not start, or its process ended or broke the protocol."""


@dataclass(frozen=True, slots=True)
class Quota:
    """The container's directory may hold at most this much (checked while a cell runs and after it)."""

    bytes: int
    entries: int
    poll_s: float = 0.2


@dataclass(slots=True)
class CellResult:
    ok: bool
    logs: str = ""
    logs_bytes: int = 0
    images: list[bytes] = field(default_factory=list)
    error: str | None = None
    # Why the session ended during this cell (it was killed): "timeout", "disk", "exited"; None if it lives on.
    ended: str | None = None
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class ShellRequest:
    """Shell commands for the driver: each runs with `/bin/sh -c` for at most `timeout_s`, all of them within
    `deadline_s`; each may write `limit` characters of output (stdout and stderr together) to the frames."""

    commands: Sequence[str]
    timeout_s: float
    deadline_s: float
    limit: int


@dataclass(frozen=True, slots=True)
class ShellOutput:
    """Output a running command wrote (a frame)."""

    command_index: int
    stdout: str
    stderr: str


@dataclass(frozen=True, slots=True)
class ShellEnded:
    """A command ended: its exit code, or None when it was stopped at its time limit; the bytes it wrote."""

    command_index: int
    exit_code: int | None
    bytes: int


ShellFrame = ShellOutput | ShellEnded


class PythonSession:
    def __init__(self, process: asyncio.subprocess.Process, command: Command, workdir: Path, uid: int | None,
                 kill_by_uid: bool) -> None:
        self._process = process
        self.command = command
        self.workdir = workdir
        self.watched = [workdir]  # directories the disk quota covers (the fallback's /tmp too)
        self._uid = uid
        self._kill_by_uid = kill_by_uid
        self.last_used = time.monotonic()
        self._seq = 0

    @classmethod
    async def start(cls, command: Command, workdir: Path, uid: int | None, *, kill_by_uid: bool,
                    timeout_s: float, max_line_bytes: int) -> PythonSession:
        process = await asyncio.create_subprocess_exec(
            *command.argv, cwd=command.cwd, env=command.env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
            limit=max_line_bytes,
        )
        session = cls(process, command, workdir, uid, kill_by_uid)
        try:
            async with asyncio.timeout(timeout_s):
                assert process.stdout is not None
                line = await process.stdout.readline()
        except (TimeoutError, ValueError, asyncio.LimitOverrunError):
            await session.kill()
            raise SessionFailed(f"the sandbox did not start within {timeout_s:g} s") from None
        except BaseException:
            await session.kill()
            raise
        message = _json(line)
        if message is None or message.get("ready") is not True:
            await session.kill()
            raise SessionFailed(f"the sandbox failed to start: {await session._stderr() or 'no output'}")
        return session

    @property
    def alive(self) -> bool:
        return self._process.returncode is None

    async def run(self, code: str, timeout_s: float, quota: Quota | None) -> CellResult:
        """Run one cell. The result's `ended` says if the session was lost on the way (it is then dead)."""
        return await self._cell({"code": code}, timeout_s, quota, None)

    async def shell(self, request: ShellRequest, timeout_s: float, quota: Quota | None,
                    on_frame: Callable[[ShellFrame], None]) -> CellResult:
        """Run shell commands; `on_frame` gets their output and endings (checked) while they run."""
        shell = {"commands": list(request.commands), "timeout_s": request.timeout_s,
                 "deadline_s": request.deadline_s, "limit": request.limit}
        return await self._cell({"shell": shell}, timeout_s, quota, on_frame)

    async def _cell(self, message: dict[str, Any], timeout_s: float, quota: Quota | None,
                    on_frame: Callable[[ShellFrame], None] | None) -> CellResult:
        started = time.monotonic()
        self.last_used = started
        process = self._process
        assert process.stdin is not None and process.stdout is not None
        reply = asyncio.ensure_future(self._exchange(message, on_frame))
        watch = asyncio.ensure_future(self._watch(quota)) if quota is not None else None
        try:
            waiting = {reply} if watch is None else {reply, watch}
            done, _ = await asyncio.wait(waiting, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled with its response: the cell must not run on unwatched
            reply.cancel()
            await self.kill()
            raise
        finally:
            if watch is not None:
                watch.cancel()
        elapsed = time.monotonic() - started
        if reply not in done:
            reply.cancel()
            await self.kill()
            ended = "disk" if watch is not None and watch in done else "timeout"
            return CellResult(False, error=ended, ended=ended, seconds=elapsed)
        try:
            line = reply.result()
        except (ValueError, asyncio.LimitOverrunError, OSError):
            line = b""
        result = _cell_result(_json(line)) if line else None
        if result is None:
            await self.kill()
            return CellResult(False, error="exited", ended="exited", seconds=elapsed)
        result.seconds = elapsed
        return result

    async def _exchange(self, request: dict[str, Any], on_frame: Callable[[ShellFrame], None] | None) -> bytes:
        """The answer to this cell (lines of other numbers, which a cell's code may write, are skipped); its
        frames go to `on_frame` as they come. A frame that does not check out breaks the protocol (b"")."""
        process = self._process
        assert process.stdin is not None and process.stdout is not None
        self._seq += 1
        process.stdin.write(orjson.dumps({**request, "seq": self._seq}) + b"\n")
        await process.stdin.drain()
        foreign = 0
        while foreign < 100:
            line = await process.stdout.readline()
            message = _json(line) if line else None
            if message is None:
                return line
            if message.get("seq") != self._seq:
                foreign += 1
                continue
            if "frame" not in message:
                return line
            frame = _shell_frame(message["frame"])
            if frame is None or on_frame is None:
                return b""
            on_frame(frame)
        return b""

    async def _watch(self, quota: Quota) -> None:
        """Returns (ending the wait) when the directory holds more than the quota allows."""
        while True:
            await asyncio.sleep(quota.poll_s)
            for directory in self.watched:
                used = await asyncio.to_thread(workdir.usage, directory, quota.entries)
                if used.bytes > quota.bytes or used.files > quota.entries:
                    return

    async def kill(self) -> None:
        """End the session and every process it started."""
        process = self._process
        if self._kill_by_uid and self._uid is not None:
            await asyncio.to_thread(_kill_uid, self._uid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(process.wait(), 5)
        if process.stdin is not None:
            process.stdin.close()

    async def _stderr(self) -> str:
        process = self._process
        if process.stderr is None:
            return ""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1):
                data = await process.stderr.read(_STDERR_KEEP)
                return data.decode("utf-8", "replace").strip()
        return ""


def _json(line: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _shell_frame(data: Any) -> ShellFrame | None:
    """A shell frame, checked field by field (None: not one)."""
    if not isinstance(data, dict):
        return None
    index = _int(data.get("command_index"))
    if index is None or index < 0:
        return None
    outcome = data.get("outcome")
    if outcome is None:
        stdout, stderr = data.get("stdout", ""), data.get("stderr", "")
        if not isinstance(stdout, str) or not isinstance(stderr, str):
            return None
        return ShellOutput(index, stdout, stderr)
    size = _int(data.get("bytes"))
    if not isinstance(outcome, dict) or size is None or size < 0:
        return None
    if outcome.get("type") == "timeout":
        return ShellEnded(index, None, size)
    code = _int(outcome.get("exit_code"))
    return ShellEnded(index, code, size) if outcome.get("type") == "exit" and code is not None else None


def _cell_result(data: dict[str, Any] | None) -> CellResult | None:
    """The driver's answer, checked field by field (None: not an answer)."""
    if data is None or not isinstance(data.get("ok"), bool):
        return None
    logs = data.get("logs")
    size = data.get("logs_bytes")
    error = data.get("error")
    images: list[bytes] = []
    for raw in data.get("images") or ():
        if not isinstance(raw, str):
            continue
        try:
            image = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            continue
        if image.startswith(_PNG):
            images.append(image)
    return CellResult(
        data["ok"], logs if isinstance(logs, str) else "",
        size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else 0,
        images, error if isinstance(error, str) else None,
    )


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of `uid` (the fallback sandbox has no pid namespace to tear down)."""
    for _ in range(3):
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.stat(f"/proc/{entry}").st_uid != uid:
                    continue
                os.kill(int(entry), signal.SIGKILL)
                found = True
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
        if not found:
            return
        time.sleep(0.01)

