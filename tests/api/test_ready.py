"""GET /ready and GET /health: the database and every configured upstream (one down here), the embedded model's
state; cached and shared between concurrent probes so they cannot multiply the load."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from parley.config import EmbeddedConfig, ModelConfig, Settings
from parley.providers.base import ModelStatus
from parley.providers.http1 import Http1Pool
from parley.services.readiness import Readiness, ReadinessChecks
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import in_process


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_ready_names_the_upstream_that_is_down(tmp_path: Path) -> None:
    upstream = FakeUpstream()
    await upstream.start()
    down = f"http://127.0.0.1:{_closed_port()}/v1"
    models = [ModelConfig(id="up", base_url=upstream.base_url), ModelConfig(id="also-up", base_url=upstream.base_url),
              ModelConfig(id="down", base_url=down)]
    settings = Settings(data_dir=tmp_path, models=models, embedded=EmbeddedConfig(enabled=False), auth="keys")
    try:
        async with in_process(settings) as parley:
            resp = await parley.http.get("/ready")  # no key needed, as for /health
            assert resp.status_code == 503
            assert resp.json() == {"status": "not_ready", "checks": {
                "database": "ok", "models": {"up": "ok", "also-up": "ok", "down": "unreachable"}}}
            assert "127.0.0.1" not in resp.text  # no URL or host is shown
            assert (await parley.http.get("/health")).json() == {"status": "ok"}
    finally:
        await upstream.stop()


async def test_ready_when_everything_answers(tmp_path: Path) -> None:
    upstream = FakeUpstream()
    await upstream.start()
    settings = Settings(data_dir=tmp_path, models=[ModelConfig(id="up", base_url=upstream.base_url)],
                        embedded=EmbeddedConfig(enabled=False))
    try:
        async with in_process(settings) as parley:
            resp = await parley.http.get("/ready")
            assert resp.status_code == 200 and resp.json()["status"] == "ready"
    finally:
        await upstream.stop()


class _Counting:
    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay

    async def __call__(self) -> None:
        self.calls += 1
        await asyncio.sleep(self.delay)


async def test_checks_are_cached_and_shared() -> None:
    database = _Counting(delay=0.05)
    state = ModelStatus("starting", "loading the model")
    readiness = Readiness(ReadinessChecks(database, (), (("local", lambda: state),)), Http1Pool(),
                          timeout_s=60.0, cache_s=60.0)  # a check that must not time out (the machine may be slow)
    reports = await asyncio.gather(*(readiness.report() for _ in range(20)))
    assert database.calls == 1  # twenty concurrent probes, one check
    assert reports[0] == {"status": "not_ready", "checks": {"database": "ok", "models": {"local": "starting"}}}
    await readiness.report()
    assert database.calls == 1  # answered from the cache


async def test_a_check_that_hangs_times_out() -> None:
    readiness = Readiness(ReadinessChecks(_Counting(delay=3600.0), (), (("local", lambda: ModelStatus("ready")),)),
                          Http1Pool(), timeout_s=0.05, cache_s=0.0)
    report = await readiness.report()
    assert report == {"status": "not_ready", "checks": {"database": "timeout", "models": {"local": "ready"}}}
