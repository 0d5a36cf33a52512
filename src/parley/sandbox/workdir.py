"""A container's working directory on the host, touched only in ways sandboxed code cannot redirect.

The code in the sandbox owns this directory: it may put a symlink where Parley expects a file (pointing at the
database, a key, /etc/shadow), swap a directory for a link between two steps, or make directories unreadable.
So every operation walks from a descriptor of the root one component at a time with O_NOFOLLOW, reads only
regular files (checked with fstat on the open descriptor), and writes through a fresh temporary name renamed
into place (a rename replaces a link, never follows it). All functions are synchronous: callers run them in
a thread.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_DEPTH = 16
MAX_NAME_BYTES = 255


class UnsafePath(ValueError):
    """A relative path that is empty, absolute, has `..`/`.` parts or over-long names."""


@dataclass(frozen=True, slots=True)
class Entry:
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class Usage:
    bytes: int
    files: int  # regular files and directories (what uses inodes)


def split(relative: str) -> list[str]:
    parts = relative.split("/")
    if not relative or relative.startswith("/") or any(
        p in ("", ".", "..") or "\x00" in p or len(p.encode()) > MAX_NAME_BYTES for p in parts
    ) or len(parts) > MAX_DEPTH:
        raise UnsafePath(relative)
    return parts


def prepare(root: Path, uid: int | None) -> None:
    """A new, empty directory owned by `uid` (when Parley may give it away), mode 700."""
    root.mkdir(mode=0o700, parents=False, exist_ok=False)
    if uid is not None:
        os.chown(root, uid, uid)


def destroy(root: Path) -> None:
    """Remove the directory and everything in it (shutil.rmtree never follows links; directories the code made
    unreadable are opened up first)."""

    def retry(function: object, path: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(path) or path, 0o700)
            os.chmod(path, 0o700, follow_symlinks=False)
        with contextlib.suppress(OSError):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)

    if root.exists() or root.is_symlink():
        shutil.rmtree(root, onerror=retry)


@contextlib.contextmanager
def _opened(root: Path) -> Iterator[int]:
    fd = os.open(root, _DIR_FLAGS)
    try:
        yield fd
    finally:
        os.close(fd)


def _walk_dir(fd: int, parts: list[str], *, create: bool, uid: int | None) -> int:
    """A new descriptor of the directory `parts` below `fd` (created if asked), never through a link."""
    current = os.dup(fd)
    try:
        for part in parts:
            if create:
                try:
                    os.mkdir(part, 0o700, dir_fd=current)
                    if uid is not None:
                        os.chown(part, uid, uid, dir_fd=current, follow_symlinks=False)
                except FileExistsError:
                    pass
            following = os.open(part, _DIR_FLAGS, dir_fd=current)
            os.close(current)
            current = following
    except BaseException:
        os.close(current)
        raise
    return current


def scan(root: Path, max_entries: int) -> dict[str, Entry] | None:
    """Every regular file below `root` by relative path (links, devices, sockets and fifos are not files of the
    container). None when there are more than `max_entries` files and directories, or directories nested deeper
    than MAX_DEPTH (whose files could otherwise hide from the disk quota)."""
    found: dict[str, Entry] = {}
    count = 0
    with _opened(root) as top:
        stack: list[tuple[int, str, int]] = [(os.dup(top), "", 0)]
        try:
            while stack:
                fd, prefix, depth = stack.pop()
                try:
                    with os.scandir(fd) as entries:
                        listed = list(entries)
                except OSError:
                    listed = []
                for entry in listed:
                    count += 1
                    if count > max_entries:
                        return None
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    path = prefix + entry.name
                    if stat.S_ISREG(info.st_mode):
                        found[path] = Entry(info.st_size, info.st_mtime_ns)
                    elif stat.S_ISDIR(info.st_mode):
                        if depth + 1 >= MAX_DEPTH:
                            return None
                        try:
                            child = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                        except OSError:
                            continue
                        stack.append((child, path + "/", depth + 1))
                os.close(fd)
        finally:
            for fd, _, _ in stack:
                os.close(fd)
    return found


def usage(root: Path, max_entries: int) -> Usage:
    """Bytes (of regular files) and entries below `root`, counting stops past `max_entries`."""
    files = scan(root, max_entries)
    if files is None:
        return Usage(0, max_entries + 1)
    return Usage(sum(entry.size for entry in files.values()), len(files))


def read_file(root: Path, relative: str, limit: int) -> bytes | None:
    """The bytes of a regular file (None if it is not one any more, or is larger than `limit`)."""
    parts = split(relative)
    with _opened(root) as top:
        try:
            directory = _walk_dir(top, parts[:-1], create=False, uid=None)
        except OSError:
            return None
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=directory)
        except OSError:
            return None
        finally:
            os.close(directory)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        chunks: list[bytes] = []
        size = 0
        while piece := os.read(fd, 1 << 20):
            size += len(piece)
            if size > limit:
                return None
            chunks.append(piece)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_file(root: Path, relative: str, data: bytes, uid: int | None) -> Entry:
    """Create or replace a file (parents created), owned by `uid`; returns its size and mtime."""
    parts = split(relative)
    with _opened(root) as top:
        directory = _walk_dir(top, parts[:-1], create=True, uid=uid)
    try:
        temporary = f".parley-{secrets.token_hex(8)}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                     dir_fd=directory)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if uid is not None:
                os.fchown(fd, uid, uid)
            info = os.fstat(fd)
        finally:
            os.close(fd)
        try:
            os.rename(temporary, parts[-1], src_dir_fd=directory, dst_dir_fd=directory)
        except OSError:  # a directory stands at that name: the file cannot be placed
            os.unlink(temporary, dir_fd=directory)
            raise
        return Entry(info.st_size, info.st_mtime_ns)
    finally:
        os.close(directory)


def remove_file(root: Path, relative: str) -> None:
    """Remove the file at `relative` if there is one (a link there is removed itself, not its target)."""
    parts = split(relative)
    with _opened(root) as top:
        try:
            directory = _walk_dir(top, parts[:-1], create=False, uid=None)
        except OSError:
            return
    try:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
            os.unlink(parts[-1], dir_fd=directory)
    finally:
        os.close(directory)
