"""Fixtures of the fuzz test: one server (fuzz_server.FuzzServer) for the whole module."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The suite runs with --import-mode=importlib, which leaves sys.path alone: make the modules beside this file
# importable by the test module (conftest is imported before it).
sys.path.insert(0, str(Path(__file__).parent))
from fuzz_server import FuzzServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzServer]:
    with FuzzServer(tmp_path_factory.mktemp("fuzz")) as running:
        yield running

