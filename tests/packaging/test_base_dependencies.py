"""Every runtime import is declared: each `parley` module (but `parley.testing`, which needs the `testing`
extra, `parley.telemetry.otel`, which needs the `otel` one, and the embedded model's child process,
`parley.providers.embedded_server` and `embedded_grammar`, which run on llama-cpp-python from the `local` one)
imports in a virtual environment holding only the base dependencies of pyproject.toml.

The environment is built once per dependency list and cached outside the checkout
(~/.cache/parley/base-env-<hash>), so CI pays for it once.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
IMPORT_ALL = """
import importlib, pkgutil, sys
import parley
assert parley.__file__.startswith(sys.argv[1]), parley.__file__
extras = ("parley.testing", "parley.telemetry.otel", "parley.providers.embedded_server",
          "parley.providers.embedded_grammar")
names = [m.name for m in pkgutil.walk_packages(parley.__path__, "parley.") if not m.name.startswith(extras)]
for name in names:
    importlib.import_module(name)
print(len(names))
"""


def _base_env() -> Path:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    digest = hashlib.sha256("\n".join([sys.version, *sorted(dependencies)]).encode()).hexdigest()[:12]
    env = Path.home() / ".cache" / "parley" / f"base-env-{digest}"
    python = env / "bin" / "python"
    if not (env / ".complete").exists():
        venv.EnvBuilder(clear=True, with_pip=True).create(env)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *dependencies],
                       check=True, timeout=900)
        (env / ".complete").touch()
    return python


def test_every_module_imports_with_the_base_dependencies_only() -> None:
    python = _base_env()
    src = str(ROOT / "src")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PARLEY_", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = src
    result = subprocess.run([str(python), "-s", "-c", IMPORT_ALL, src], capture_output=True, text=True, env=env,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.strip()) > 50
    # The check itself can fail: a module of the dev environment is not in the base one.
    missing = subprocess.run([str(python), "-s", "-c", "import aiohttp"], capture_output=True, env=env)
    assert missing.returncode != 0
