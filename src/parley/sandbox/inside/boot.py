"""The first program inside a sandbox: it locks the process down, then execs the Python driver.

Run as `python -I boot.py <json>` by the launcher (sandbox/launch.py). In order: die with the parent (fallback
launcher), a private network namespace (fallback, as root), resource limits (hard limits too, so code cannot
raise them), Landlock (fallback: the file system shrinks to the runtime, read-only, and the container's
directories), the unprivileged uid (when started as root), a seccomp filter (no sockets but AF_UNIX, no new
namespaces, no ptrace, no mounts, no kernel keyrings, no bpf), then `exec` of the driver. Anything that fails
here ends the process with exit status 70 and a line on stderr: code never runs in a half-built sandbox.

Standard library only (plus pyseccomp, from the read-only runtime); never imports Parley.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import json
import os
import resource
import signal
import socket
import struct
import sys
from typing import Any

_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38
_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNS = 0x00020000
_LIMITS = {"as": resource.RLIMIT_AS, "cpu": resource.RLIMIT_CPU, "nproc": resource.RLIMIT_NPROC,
           "fsize": resource.RLIMIT_FSIZE, "nofile": resource.RLIMIT_NOFILE, "core": resource.RLIMIT_CORE}

# Landlock (include/uapi/linux/landlock.h). Syscall numbers are the same on every architecture since 5.13.
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1, 2, 4, 8
_FS_ALL_V1 = (1 << 13) - 1  # execute .. make_sym
_FS_REFER, _FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_NET_BIND_TCP, _NET_CONNECT_TCP = 1, 2
_SCOPE_ABSTRACT_UNIX, _SCOPE_SIGNAL = 1, 2


def _fail(message: str) -> None:
    os.write(2, f"parley-sandbox: {message}\n".encode())
    os._exit(70)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _die_with_parent(parent: int) -> None:
    if _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        _fail("prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(70)


def _limits(limits: dict[str, int]) -> None:
    for name, value in limits.items():
        resource.setrlimit(_LIMITS[name], (value, value))


def _landlock(read_only: list[str], read_write: list[str]) -> None:
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(_SYS_CREATE_RULESET, None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    if abi < 1:
        _fail("Landlock is not available on this kernel")
    handled = _FS_ALL_V1 | (_FS_REFER if abi >= 2 else 0) | (_FS_TRUNCATE if abi >= 3 else 0) | \
        (_FS_IOCTL_DEV if abi >= 5 else 0)
    net = _NET_BIND_TCP | _NET_CONNECT_TCP if abi >= 4 else 0
    scoped = _SCOPE_ABSTRACT_UNIX | _SCOPE_SIGNAL if abi >= 6 else 0
    size = 24 if abi >= 6 else 16
    attr = ctypes.create_string_buffer(struct.pack("QQQ", handled, net, scoped)[:size], size)
    ruleset = libc.syscall(_SYS_CREATE_RULESET, attr, size, 0)
    if ruleset < 0:
        _fail(f"landlock_create_ruleset failed (errno {ctypes.get_errno()})")
    reading = _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR
    for paths, access in ((read_only, reading), (read_write, handled)):
        for path in paths:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # a runtime path this host does not have
            allowed = access if os.path.isdir(path) else access & (_FS_EXECUTE | _FS_READ_FILE | _FS_WRITE_FILE
                                                                   | _FS_TRUNCATE | _FS_IOCTL_DEV)
            rule = ctypes.create_string_buffer(struct.pack("=Qi", allowed & handled, fd), 12)
            if libc.syscall(_SYS_ADD_RULE, ruleset, 1, rule, 0) != 0:
                _fail(f"landlock_add_rule failed for {path} (errno {ctypes.get_errno()})")
            os.close(fd)
    if libc.syscall(_SYS_RESTRICT_SELF, ruleset, 0) != 0:
        _fail(f"landlock_restrict_self failed (errno {ctypes.get_errno()})")
    os.close(ruleset)


def _drop_uid(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid:
        _fail("could not switch to the sandbox uid")


def _find_library(name: str) -> str | None:
    """ctypes.util.find_library without /etc/ld.so.cache or ldconfig (neither is in the sandbox)."""
    soname = {"c": "libc.so.6", "seccomp": "libseccomp.so.2"}.get(name)
    if soname is None:
        return None
    for pattern in (f"/lib/*/{soname}", f"/usr/lib/*/{soname}", f"/lib/{soname}", f"/usr/lib/{soname}",
                    f"/lib64/{soname}", f"/usr/lib64/{soname}"):
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def _load_seccomp() -> Any:
    """pyseccomp, imported while the runtime is still readable (before the uid changes)."""
    import ctypes.util

    ctypes.util.find_library = _find_library  # pyseccomp looks its libraries up by name at import
    try:
        import pyseccomp  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        _fail("pyseccomp is not installed in the sandbox runtime")
    return pyseccomp


def _seccomp(seccomp: Any) -> None:
    denied = errno.EPERM
    rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    # Only AF_UNIX sockets (multiprocessing, asyncio's self-pipe); no IP, netlink, packet or vsock sockets.
    rules.add_rule(seccomp.ERRNO(errno.EACCES), "socket", seccomp.Arg(0, seccomp.NE, socket.AF_UNIX))
    rules.add_rule(seccomp.ERRNO(errno.EACCES), "socketpair", seccomp.Arg(0, seccomp.NE, socket.AF_UNIX))
    for call in ("ptrace", "process_vm_readv", "process_vm_writev", "unshare", "setns", "mount", "umount2",
                 "pivot_root", "chroot", "bpf", "perf_event_open", "keyctl", "add_key", "request_key",
                 "userfaultfd", "kexec_load", "init_module", "finit_module", "delete_module", "reboot",
                 "swapon", "swapoff", "acct", "open_by_handle_at", "name_to_handle_at", "fanotify_init",
                 "io_uring_setup", "mount_setattr", "move_mount", "open_tree", "fsopen", "fsmount", "fspick"):
        try:
            rules.add_rule(seccomp.ERRNO(denied), call)
        except (RuntimeError, ValueError, OSError):
            continue  # a system call this kernel or libseccomp does not know
    # New namespaces through clone(); clone3 cannot be filtered on its flags, so it reports "not implemented"
    # and the C library falls back to clone().
    rules.add_rule(seccomp.ERRNO(denied), "clone",
                   seccomp.Arg(0, seccomp.MASKED_EQ, _CLONE_NEWUSER, _CLONE_NEWUSER))
    rules.add_rule(seccomp.ERRNO(denied), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, _CLONE_NEWNS, _CLONE_NEWNS))
    rules.add_rule(seccomp.ERRNO(denied), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, _CLONE_NEWNET, _CLONE_NEWNET))
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    rules.load()


def main(config: dict[str, Any]) -> None:
    if config.get("parent"):
        _die_with_parent(int(config["parent"]))
    if config.get("unshare_net") and _libc().unshare(_CLONE_NEWNET) != 0:
        _fail("unshare(CLONE_NEWNET) failed")
    if _libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        _fail("prctl(PR_SET_NO_NEW_PRIVS) failed")
    seccomp = _load_seccomp() if config.get("seccomp", True) else None
    _limits({k: int(v) for k, v in config["limits"].items()})
    landlock = config.get("landlock")
    if landlock:
        _landlock(list(landlock["ro"]), list(landlock["rw"]))
    if config.get("uid") is not None:
        _drop_uid(int(config["uid"]), int(config["gid"]))
    if seccomp is not None:
        _seccomp(seccomp)
    os.chdir(config["cwd"])
    driver = [config["python"], "-I", "-B", config["driver"], json.dumps(config["driver_config"])]
    os.execve(config["python"], driver, dict(config["env"]))


if __name__ == "__main__":
    try:
        main(json.loads(sys.argv[1]))
    except Exception as exc:  # never run code in a half-built sandbox
        _fail(f"{type(exc).__name__}: {exc}")
