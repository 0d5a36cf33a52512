"""Fixtures of the compat suite: a fake upstream in-process and real `parley serve` processes, one per config.

Every server starts once per session. Tests drive them with the official `openai` SDK (sync and async)
and with raw httpx where the wire itself is under test.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from openai import AsyncOpenAI, OpenAI

from parley.testing.fake_upstream import FakeUpstream, ThreadedFakeUpstream

# The suite runs with --import-mode=importlib, which leaves sys.path alone: make the helper module
# beside this file importable by the test modules (conftest is imported before them).
sys.path.insert(0, str(Path(__file__).parent))
from compat_support import (
    UPSTREAM_SECRET,
    KeyedServer,
    ParleyServer,
    free_port,
    model_toml,
)
from compat_support import keyed_server as keyed  # (the fixture below has the name)

# Public model id -> the fake upstream's behaviour (see parley.testing.fake_upstream).
FAKE_MODELS = ("echo", "slow", "length", "reasoning", "tools", "nousage", "drop",
               "error-429", "error-500", "error-403")


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeUpstream]:
    with ThreadedFakeUpstream() as upstream:
        yield upstream


def _serve(workdir: Path, config: str) -> Iterator[ParleyServer]:
    server = ParleyServer(workdir, config)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def server(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ParleyServer]:
    """The main server: one model per fake-upstream behaviour, no API keys (local development mode)."""
    config = "".join(model_toml(name, fake.base_url, name, read_timeout_s=5.0) for name in FAKE_MODELS)
    # Upstream credentials Parley sends: a 401 from the upstream must not leak them back to the caller.
    config += model_toml("error-401", fake.base_url, "error-401", api_key=UPSTREAM_SECRET)
    config += model_toml("hang", fake.base_url, "hang", read_timeout_s=1.0)
    # Streams all but its last word, then holds until its client (Parley) goes away: a disconnect test's upstream call
    # is still open however late the test acts (the default read timeout, 600 s, never ends it first).
    config += model_toml("text-held", fake.base_url, "text-held")
    config += model_toml("unreachable", f"http://127.0.0.1:{free_port()}/v1", "echo", connect_timeout_s=2.0)
    config += "[embedded]\nenabled = false\n"
    yield from _serve(tmp_path_factory.mktemp("parley-main"), config)


@pytest.fixture(scope="session")
def small_body_server(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ParleyServer]:
    config = "max_body_bytes = 4096\n" + model_toml("echo", fake.base_url, "echo")
    config += "[embedded]\nenabled = false\n"
    yield from _serve(tmp_path_factory.mktemp("parley-small-body"), config)


@pytest.fixture(scope="session")
def keyed_server(fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyedServer]:
    """A server whose data dir holds keys for projects A and B, created before it starts."""
    config = model_toml("echo", fake.base_url, "echo") + "[embedded]\nenabled = false\n"
    with keyed(tmp_path_factory.mktemp("parley-keyed"), config) as server:
        yield server


@pytest.fixture(scope="session")
def client(server: ParleyServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=server.base_url, api_key="sk-local", max_retries=0, timeout=30.0) as sdk:
        yield sdk


@pytest.fixture(scope="session")
async def aclient(server: ParleyServer) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=server.base_url, api_key="sk-local", max_retries=0, timeout=30.0) as sdk:
        yield sdk
