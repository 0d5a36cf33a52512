"""`parley files upload` in a subprocess against a temporary data directory; the files are then served by the
API like uploaded ones (in-process app on the same data directory)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from parley.config import EmbeddedConfig, Settings
from parley.testing.in_process import in_process


def parley(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    return subprocess.run(
        [sys.executable, "-m", "parley.cli.main", *args, "--data-dir", str(data_dir)],
        capture_output=True, text=True, env=env, timeout=60,
    )


async def test_upload_prints_one_file_object_per_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\nbuy milk\n")
    blob = tmp_path / "data.bin"
    blob.write_bytes(os.urandom(2 * 1024 * 1024 + 3))
    done = parley(data_dir, "files", "upload", str(notes), str(blob), "--project", "acme", "--purpose", "user_data",
                  "--expires-after", "7200")
    assert done.returncode == 0, done.stderr
    made = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(f["filename"], f["bytes"], f["purpose"]) for f in made] == [
        ("notes.md", notes.stat().st_size, "user_data"), ("data.bin", blob.stat().st_size, "user_data")]
    assert all(f["id"].startswith("file-") and f["expires_at"] == f["created_at"] + 7200 for f in made)

    settings = Settings(data_dir=data_dir, embedded=EmbeddedConfig(enabled=False), auth="keys", auth_cache_ttl_s=0)
    async with in_process(settings) as app:
        _, key = await app.app.state.runtime.store.create_key("acme", "acme")
        sdk = app.sdk(key)
        assert (await sdk.files.content(made[0]["id"])).content == notes.read_bytes()
        assert (await sdk.files.content(made[1]["id"])).content == blob.read_bytes()


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    missing = parley(tmp_path / "data", "files", "upload", str(tmp_path / "nope.txt"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    (tmp_path / "a.txt").write_text("a")
    wrong = parley(tmp_path / "data", "files", "upload", str(tmp_path / "a.txt"), "--purpose", "batch_output")
    assert wrong.returncode == 2
    short = parley(tmp_path / "data", "files", "upload", str(tmp_path / "a.txt"), "--expires-after", "60")
    assert short.returncode == 2


def test_a_file_over_the_limit_fails_alone(tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    config.write_text("[files]\nmax_bytes = 10\n")
    small, large = tmp_path / "small.txt", tmp_path / "large.txt"
    small.write_text("tiny")
    large.write_text("x" * 100)
    done = parley(tmp_path / "data", "files", "upload", str(large), str(small), "--config", str(config))
    assert done.returncode == 1
    assert "large.txt" in done.stderr and "limit of 10 bytes" in done.stderr
    assert [json.loads(line)["filename"] for line in done.stdout.splitlines()] == ["small.txt"]
