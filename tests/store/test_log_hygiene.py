"""No log line carries a client key's hash, whatever the log level: SQLAlchemy statements are logged without
their parameters, and aiosqlite's per-call debug lines (which print every call's arguments) are held back."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from parley.log_setup import configure_logging
from parley.store.sql import SqlStore, hash_key


async def test_key_lookups_leave_no_hash_in_debug_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    quiet = logging.getLogger("aiosqlite")
    statements = logging.getLogger("sqlalchemy.engine")
    saved = quiet.level, statements.level
    try:
        configure_logging("debug")  # what `parley serve --log-level debug` does
        statements.setLevel(logging.INFO)  # an operator who also turns on SQLAlchemy's statement log
        with caplog.at_level(logging.DEBUG):
            store = await SqlStore.open(f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}")
            try:
                _, secret = await store.create_key("p", "p")
                assert await store.find_key(hash_key(secret)) is not None
                assert await store.find_key(hash_key("sk-parley-wrong")) is None
            finally:
                await store.close()
    finally:
        quiet.setLevel(saved[0])
        statements.setLevel(saved[1])
    assert "api_keys" in caplog.text  # the statements were logged ...
    for value in (secret, hash_key(secret), hash_key("sk-parley-wrong")):
        assert value not in caplog.text  # ... without their parameters
    assert not [r for r in caplog.records if r.name == "aiosqlite" and r.levelno < logging.INFO]
