"""`parley prompts create|list|show` in a subprocess against a temporary data directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def parley(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    return subprocess.run(
        [sys.executable, "-m", "parley.cli.main", *args, "--data-dir", str(data_dir)],
        capture_output=True, text=True, env=env, timeout=60,
    )


@pytest.fixture
def template(tmp_path: Path) -> Path:
    path = tmp_path / "template.json"
    path.write_text(json.dumps({"instructions": "Answer as {{persona}}.", "model": "echo",
                                "input": [{"role": "user", "content": "{{question}}"}]}))
    return path


def test_create_list_and_show(tmp_path: Path, template: Path) -> None:
    data_dir = tmp_path / "data"
    created = parley(data_dir, "prompts", "create", "--file", str(template), "--project", "acme")
    assert created.returncode == 0, created.stderr
    prompt = json.loads(created.stdout)
    assert prompt["id"].startswith("pmpt_") and prompt["version"] == "1"
    assert prompt["instructions"] == "Answer as {{persona}}." and prompt["model"] == "echo"

    listed = parley(data_dir, "prompts", "list", "--project", "acme")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [prompt["id"]]
    other = parley(data_dir, "prompts", "list")  # the default project sees nothing
    assert other.returncode == 0 and other.stdout == ""

    shown = parley(data_dir, "prompts", "show", prompt["id"], "--project", "acme", "--version", "1")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == prompt
    missing = parley(data_dir, "prompts", "show", prompt["id"], "--project", "acme", "--version", "2")
    assert missing.returncode == 1 and "(version)" in missing.stderr


def test_create_rejects_an_invalid_template(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"input": [{"role": "robot", "content": "hi"}]}))
    out = parley(tmp_path / "data", "prompts", "create", "--file", str(bad))
    assert out.returncode == 1 and "input[0].role" in out.stderr
