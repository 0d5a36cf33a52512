"""How a sandboxed Python session is started: the command line of each launcher.

- `bubblewrap`: new mount, pid, network, IPC and UTS namespaces. The file system is a fresh tmpfs holding only
  the Python runtime (read-only), the in-sandbox scripts (read-only), the container's directory at /mnt/data
  and a size-limited /tmp; no /etc, no data dir, no config, an empty environment. Run by root, bwrap needs no
  user namespace and the boot script drops to the session's own uid; run by anyone else, bwrap maps the
  caller to uid 65534 in a new user namespace (and forbids further ones).
- `fallback` (hosts that refuse namespaces to bwrap): the boot script alone: rlimits, Landlock (the same
  paths, plus the container's directories, nothing else), seccomp, a network namespace and the session's
  own uid when run by root, and death with Parley.
- `insecure`: rlimits only. Named so in the settings because it is not a sandbox.

Every launcher runs `boot.py`, which sets the limits and execs `driver.py` (sandbox/inside/).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

INSIDE_DIR = Path(__file__).resolve().parent / "inside"
SANDBOX_DATA = "/mnt/data"
SANDBOX_SCRIPTS = "/opt/parley-sandbox"
NOBODY = 65534
LauncherKind = Literal["bubblewrap", "fallback", "insecure"]
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_DEVICES_RO = ("/dev/urandom", "/dev/random", "/dev/zero")
_CONFIG_RO = ("/etc/fonts",)  # fontconfig's configuration (matplotlib lists fonts through it); no secrets
_DEVICES_RW = ("/dev/null",)


@dataclass(frozen=True, slots=True)
class Runtime:
    """The Python the sandbox runs (a venv with the data libraries) and what it needs to read."""

    python: str  # the interpreter's path as called (a venv's bin/python)
    read_only: tuple[str, ...]  # directories bound read-only (the venv, its base installation)

    @classmethod
    def of(cls, python: str | None = None) -> Runtime:
        """This process's interpreter and venv, or another interpreter's (given by path)."""
        exe = python or sys.executable
        prefixes = [sys.prefix, sys.base_prefix] if python is None else [str(Path(exe).resolve().parent.parent),
                                                                          str(Path(exe).parent.parent)]
        return cls(exe, tuple(dict.fromkeys(str(Path(p).resolve()) for p in prefixes)))


@dataclass(frozen=True, slots=True)
class Limits:
    memory_bytes: int  # address space (RLIMIT_AS): the container's memory_limit
    cpu_s: int  # CPU seconds over the session's life
    processes: int  # RLIMIT_NPROC of the session's uid
    file_bytes: int  # largest file the code may write (RLIMIT_FSIZE)
    open_files: int = 256
    tmp_bytes: int = 256 * 1024 * 1024  # the private /tmp (bubblewrap: a tmpfs of this size)


@dataclass(frozen=True, slots=True)
class SessionSpec:
    workdir: Path  # the container's directory on the host (/mnt/data inside bubblewrap)
    tmpdir: Path  # the fallback's /tmp on the host (bubblewrap uses a tmpfs instead)
    uid: int | None  # the session's own uid (Parley runs as root), else None
    limits: Limits
    max_log_bytes: int = 64 * 1024
    max_image_bytes: int = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Command:
    argv: list[str]
    cwd: str
    env: dict[str, str] = field(default_factory=dict)
    data_path: str = SANDBOX_DATA  # where the code finds the container's files


def _env(home: str, tmp: str) -> dict[str, str]:
    """The whole environment of sandboxed code: nothing of Parley's (keys, database URL, config)."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8",
        "MPLBACKEND": "Agg", "MPLCONFIGDIR": f"{tmp}/matplotlib", "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "0", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1", "PWD": home,
    }


def _limits(limits: Limits) -> dict[str, int]:
    return {"as": limits.memory_bytes, "cpu": limits.cpu_s, "nproc": limits.processes,
            "fsize": limits.file_bytes, "nofile": limits.open_files, "core": 0}


def _boot_config(runtime: Runtime, spec: SessionSpec, *, scripts: str, cwd: str, tmp: str,
                 extra: dict[str, Any]) -> str:
    config = {
        "limits": _limits(spec.limits), "python": runtime.python, "driver": f"{scripts}/driver.py", "cwd": cwd,
        "env": _env(cwd, tmp), "seccomp": True,
        "driver_config": {"tmp": tmp, "max_log_bytes": spec.max_log_bytes, "max_image_bytes": spec.max_image_bytes},
        **extra,
    }
    return orjson.dumps(config).decode()


def _outermost(paths: list[str]) -> list[str]:
    """The paths, without those inside another one of them (a bind inside a read-only bind cannot be made)."""
    unique = sorted(dict.fromkeys(os.path.normpath(p) for p in paths))
    kept: list[str] = []
    for path in unique:
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def bubblewrap_command(bwrap: str, runtime: Runtime, spec: SessionSpec, *, as_root: bool) -> Command:
    args = [bwrap, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--hostname", "sandbox", "--clearenv"]
    if as_root:  # no user namespace: the boot script switches to the session's uid itself
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        args += ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY), "--disable-userns"]
    binds: list[str] = []
    for directory in _SYSTEM_DIRS:
        if os.path.islink(directory):
            args += ["--symlink", os.readlink(directory), directory]
        elif os.path.isdir(directory):
            binds.append(directory)
    binds = _outermost(binds + list(runtime.read_only) + [d for d in _CONFIG_RO if os.path.isdir(d)])
    # The private /tmp first: a runtime that lives under the host's /tmp (a checkout there) is bound over it.
    args += ["--size", str(spec.limits.tmp_bytes), "--perms", "1777", "--tmpfs", "/tmp"]
    # bwrap makes the parents of mount points mode 700; the unprivileged uid must be able to pass through them.
    parents = sorted({str(parent) for path in [*binds, SANDBOX_SCRIPTS, SANDBOX_DATA]
                      for parent in Path(path).parents if str(parent) not in ("/", "/tmp")},
                     key=lambda p: p.count("/"))
    for parent in parents:
        if not any(parent == b or parent.startswith(b + "/") for b in binds):
            args += ["--perms", "0755", "--dir", parent]
    for path in binds:
        args += ["--ro-bind", path, path]
    args += ["--ro-bind", str(INSIDE_DIR), SANDBOX_SCRIPTS, "--bind", str(spec.workdir), SANDBOX_DATA,
             "--proc", "/proc", "--dev", "/dev", "--chdir", SANDBOX_DATA]
    extra: dict[str, Any] = {"uid": spec.uid, "gid": spec.uid} if as_root and spec.uid is not None else {}
    boot = _boot_config(runtime, spec, scripts=SANDBOX_SCRIPTS, cwd=SANDBOX_DATA, tmp="/tmp", extra=extra)
    args += [runtime.python, "-I", "-B", f"{SANDBOX_SCRIPTS}/boot.py", boot]
    return Command(args, cwd="/")


def fallback_command(runtime: Runtime, spec: SessionSpec, *, as_root: bool, parent_pid: int) -> Command:
    data, tmp = str(spec.workdir), str(spec.tmpdir)
    read_only = [*(d for d in _SYSTEM_DIRS if os.path.isdir(d)), *runtime.read_only, str(INSIDE_DIR),
                 *_DEVICES_RO, *_CONFIG_RO]
    extra: dict[str, Any] = {
        "parent": parent_pid,
        "landlock": {"ro": _outermost(read_only), "rw": [data, tmp, *_DEVICES_RW]},
        "unshare_net": as_root,
    }
    if as_root and spec.uid is not None:
        extra.update(uid=spec.uid, gid=spec.uid)
    boot = _boot_config(runtime, spec, scripts=str(INSIDE_DIR), cwd=data, tmp=tmp, extra=extra)
    return Command([runtime.python, "-I", "-B", str(INSIDE_DIR / "boot.py"), boot], cwd=data, data_path=data)


def insecure_command(runtime: Runtime, spec: SessionSpec) -> Command:
    data, tmp = str(spec.workdir), str(spec.tmpdir)
    extra: dict[str, Any] = {"seccomp": False}
    boot = _boot_config(runtime, spec, scripts=str(INSIDE_DIR), cwd=data, tmp=tmp, extra=extra)
    return Command([runtime.python, "-I", "-B", str(INSIDE_DIR / "boot.py"), boot], cwd=data, data_path=data)
