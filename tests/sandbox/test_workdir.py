"""The host side of a container's directory resists what sandboxed code may plant there: links to host files,
links in place of directories, unreadable directories, and over-long or escaping paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from parley.sandbox import workdir


@pytest.fixture
def root(tmp_path: Path) -> Path:
    directory = tmp_path / "container"
    workdir.prepare(directory, None)
    return directory


def test_scan_reads_regular_files_only(root: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("host secret")
    (root / "a.txt").write_text("a")
    (root / "sub").mkdir()
    (root / "sub" / "b.txt").write_text("bb")
    os.symlink(secret, root / "link.txt")
    os.symlink(tmp_path, root / "dirlink")
    os.mkfifo(root / "fifo")
    found = workdir.scan(root, 100)
    assert found is not None and sorted(found) == ["a.txt", "sub/b.txt"]
    assert workdir.read_file(root, "link.txt", 1000) is None
    assert workdir.read_file(root, "dirlink/secret", 1000) is None
    assert workdir.read_file(root, "fifo", 1000) is None
    assert workdir.read_file(root, "sub/b.txt", 1000) == b"bb"
    assert workdir.read_file(root, "sub/b.txt", 1) is None  # larger than the limit
    assert workdir.scan(root, 2) is None  # too many entries
    assert workdir.usage(root, 100).bytes == 3


def test_writes_never_follow_links(root: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    os.symlink(victim, root / "file.txt")
    os.symlink(tmp_path, root / "dir")
    workdir.write_file(root, "file.txt", b"new", None)
    assert victim.read_text() == "untouched" and not (root / "file.txt").is_symlink()
    assert (root / "file.txt").read_bytes() == b"new"
    with pytest.raises(OSError):
        workdir.write_file(root, "dir/planted.txt", b"x", None)
    assert not (tmp_path / "planted.txt").exists()
    workdir.remove_file(root, "dir")  # removes the link itself
    assert tmp_path.exists() and not (root / "dir").exists()
    workdir.write_file(root, "deep/er/c.txt", b"c", None)
    assert (root / "deep" / "er" / "c.txt").read_bytes() == b"c"


@pytest.mark.parametrize("path", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a\x00b", "x" * 300])
def test_unsafe_paths(root: Path, path: str) -> None:
    with pytest.raises(workdir.UnsafePath):
        workdir.write_file(root, path, b"x", None)


def test_destroy_opens_up_locked_directories(root: Path) -> None:
    (root / "locked").mkdir()
    (root / "locked" / "f").write_text("f")
    os.chmod(root / "locked", 0)
    workdir.destroy(root)
    assert not root.exists()


def test_directories_too_deep_count_as_over_quota(root: Path) -> None:
    deep = root / "/".join(["d"] * workdir.MAX_DEPTH)
    deep.mkdir(parents=True)
    (deep / "hidden").write_bytes(b"x" * 1000)
    assert workdir.scan(root, 1000) is None
    assert workdir.usage(root, 1000).files > 1000
