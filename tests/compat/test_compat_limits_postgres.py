"""Two `parley serve` processes on one PostgreSQL database hold a rate limit and a budget together: what one
process admitted and spent counts on the other once their counters have synced (every 0.2 s here), and every
response of both is in the usage report."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from compat_support import ParleyServer, metric, model_toml, run_parley, wait_for
from sqlalchemy.engine import make_url
from tests.pg_support import new_database

from parley.testing.fake_upstream import FakeUpstream

SYNC_S = 0.2


def _database(postgres_server: Any) -> str:
    """A new, empty database on the session's server (other tests use the default one)."""
    return asyncio.run(new_database(postgres_server, "parley_limits"))


def _config(fake: FakeUpstream, database_url: str) -> str:
    return (f'database_url = "{database_url}"\n' + model_toml("echo", fake.base_url, "echo")
            + "[models.price]\ninput = 1.0\noutput = 1.0\n"
            + "[embedded]\nenabled = false\n"
            + f"[limits]\nsync_interval_s = {SYNC_S}\n"
            + "[limits.projects.team]\nrequests_per_minute = 4\n"
            + "[limits.projects.budget]\nspend_per_day_usd = 0.000001\n")


def _key(database_url: str, *args: str) -> str:
    out = run_parley("keys", "create", "--database-url", database_url, *args)
    assert out.returncode == 0, out.stderr
    return str(json.loads(out.stdout.strip().splitlines()[-1])["key"])


def _shared(database_url: str, scope: str, period: str) -> tuple[int, int]:
    """(requests, cost) of `scope`'s latest `period` window in the counters the processes share."""
    async def read() -> tuple[int, int]:
        url = make_url(database_url)
        conn = await asyncpg.connect(host=str(url.query["host"]), user=url.username, database=url.database)
        try:
            row = await conn.fetchrow("SELECT requests, cost FROM rate_counters WHERE scope = $1 AND period = $2 "
                                      "ORDER BY window_start DESC LIMIT 1", scope, period)
        finally:
            await conn.close()
        return (int(row["requests"]), int(row["cost"])) if row is not None else (0, 0)

    return asyncio.run(read())


def _synced(counted: Callable[[], bool], reader: ParleyServer) -> None:
    """Wait (instead of sleeping a few sync intervals) until the shared counters hold what a process counted, then
    until `reader` has synced since: two more of its group commits (an idle server's only writes are these syncs;
    the first may have been in flight before, the second began after). The limits fail a sync that never comes."""
    assert wait_for(counted, timeout=60)
    seen = metric(reader, "parley_store_write_batch_size_count")
    assert wait_for(lambda: metric(reader, "parley_store_write_batch_size_count") >= seen + 2, timeout=60)


def _post(server: ParleyServer, key: str) -> httpx.Response:
    return httpx.post(server.base_url + "/responses", json={"model": "echo", "input": "one two"},
                      headers={"authorization": f"Bearer {key}"}, timeout=30)


@pytest.mark.slow
def test_two_processes_share_rate_limits_and_budgets(fake: FakeUpstream, postgres_server: Any,
                                                     tmp_path: Path) -> None:
    database_url = _database(postgres_server)
    team = _key(database_url, "--project", "team")
    budget = _key(database_url, "--project", "budget")
    admin = _key(database_url, "--role", "admin")
    first = ParleyServer(tmp_path / "a", _config(fake, database_url))
    second = ParleyServer(tmp_path / "b", _config(fake, database_url))
    first.start()
    second.start()
    try:
        if time.time() % 60 > 45:  # all within one minute window
            time.sleep(61 - time.time() % 60)
        for remaining in ("3", "2", "1"):
            answer = _post(first, team)
            assert answer.status_code == 200 and answer.headers["x-ratelimit-remaining-requests"] == remaining
        _synced(lambda: _shared(database_url, "project:team", "minute")[0] == 3, second)  # first adds, second reads
        last = _post(second, team)
        assert last.status_code == 200 and last.headers["x-ratelimit-remaining-requests"] == "0"
        refused = _post(second, team)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
        _synced(lambda: _shared(database_url, "project:team", "minute")[0] == 4, first)
        assert _post(first, team).status_code == 429  # the second process's request counts here too

        assert _post(first, budget).status_code == 200  # spends the whole day's budget
        _synced(lambda: _shared(database_url, "project:budget", "day")[1] > 0, second)
        over = _post(second, budget)
        assert over.status_code == 429 and over.json()["error"]["type"] == "insufficient_quota"
        assert int(over.headers["retry-after"]) > 0

        start = int(time.time()) - 300
        report = httpx.get(second.base_url + "/organization/usage/completions", timeout=30,
                           params={"start_time": start, "group_by": "project_id"},
                           headers={"authorization": f"Bearer {admin}"}).json()
        requests = {r["project_id"]: r["num_model_requests"] for b in report["data"] for r in b["results"]}
        assert requests == {"team": 4, "budget": 1}  # refused requests record nothing
    finally:
        first.stop()
        second.stop()
