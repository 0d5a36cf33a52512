"""`parley doctor` says which sandbox code_interpreter uses on this host, and fails when there is none."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PARLEY = [sys.executable, "-m", "parley.cli.main"]


def _doctor(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    return subprocess.run([*PARLEY, "doctor", "--data-dir", str(tmp_path)], capture_output=True, text=True,
                          env={**clean, **env}, timeout=60, check=False)


def test_doctor_reports_the_active_sandbox(tmp_path: Path) -> None:
    done = _doctor(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("code_interpreter sandbox: bubblewrap (")
    assert "sandbox python: " in done.stdout


def test_doctor_fails_without_a_sandbox(tmp_path: Path) -> None:
    done = _doctor(tmp_path, PARLEY_CODE_INTERPRETER__SANDBOX="bubblewrap",
                   PARLEY_CODE_INTERPRETER__BWRAP_PATH="/nonexistent/bwrap")
    assert done.returncode == 1
    assert "code_interpreter sandbox: none (bubblewrap:" in done.stdout
