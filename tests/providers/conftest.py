"""Fixtures of the provider tests: the fake upstreams of every wire format, started once per session."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parley.testing.fake_anthropic import FakeAnthropic
from parley.testing.fake_gemini import FakeGemini
from parley.testing.fake_responses_upstream import FakeResponsesUpstream
from parley.testing.fake_upstream import FakeUpstream

# --import-mode=importlib leaves sys.path alone: make the helper modules beside this file importable.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
async def fake_chat() -> AsyncIterator[FakeUpstream]:
    server = FakeUpstream()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
async def fake_responses() -> AsyncIterator[FakeResponsesUpstream]:
    server = FakeResponsesUpstream()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
async def fake_anthropic() -> AsyncIterator[FakeAnthropic]:
    server = FakeAnthropic()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
async def fake_gemini() -> AsyncIterator[FakeGemini]:
    server = FakeGemini()
    await server.start()
    yield server
    await server.stop()
