"""`parley vector-stores create NAME --from DIR` in a subprocess: a folder indexed into a new store (a file that
cannot be read reported, hidden files skipped), then searched through the API on the same data directory."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from parley.config import EmbeddedConfig, Settings
from parley.testing.in_process import in_process


def _create(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    return subprocess.run([sys.executable, "-m", "parley.cli.main", "vector-stores", "create", *args],
                          capture_output=True, text=True, env=env, timeout=120)


async def test_create_from_a_folder(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "guides").mkdir(parents=True)
    (docs / "guides" / "tides.md").write_text("# Tides\nThe moon's gravity raises two tidal bulges each day.\n")
    (docs / "bread.txt").write_text("Knead the dough for ten minutes, then let it rise for an hour.\n")
    (docs / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    (docs / ".cache").mkdir()
    (docs / ".cache" / "junk.txt").write_text("never indexed")
    data_dir = tmp_path / "data"
    done = await asyncio.to_thread(_create, "handbook", "--from", str(docs), "--data-dir", str(data_dir),
                                   "--project", "acme")
    assert done.returncode == 1, done.stderr  # one file failed
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["name"], summary["files"], summary["failed"], summary["chunks"]) == ("handbook", 3, 1, 2)
    assert "photo.png" in done.stderr and "3 files, 2 chunks, 1 failed" in done.stderr

    settings = Settings(data_dir=data_dir, embedded=EmbeddedConfig(enabled=False))
    async with in_process(settings) as app:
        hits = await app.app.state.runtime.vector_stores.search("acme", [summary["id"]], ["why are there tides?"])
        assert hits[0].filename == "guides/tides.md"
