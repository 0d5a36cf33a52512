"""`parley keys` with roles, expiry, allowed models and limits, and `parley usage` printing the usage and costs
reports as tables (subprocesses against a temporary data directory)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from parley.ids import new_id
from parley.store.base import UsageRecord
from parley.store.sql import SqlStore


def parley(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    return subprocess.run([sys.executable, "-m", "parley.cli.main", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, env=env, timeout=60)


def test_keys_with_role_expiry_models_and_limits(tmp_path: Path) -> None:
    before = int(time.time())
    created = parley(tmp_path, "keys", "create", "--project", "team", "--name", "ci", "--expires-in-days", "30",
                     "--allow-model", "echo", "--allow-model", "gpt", "--rpm", "60", "--spend-per-day", "2.5")
    after = time.time()
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert (key["project"], key["role"], key["allowed_models"]) == ("team", "project", ["echo", "gpt"])
    assert key["limits"] == {"requests_per_minute": 60, "spend_per_day_usd": 2.5}
    # 30 days from when the command ran (between these two readings of the clock, however long it took)
    assert before + 30 * 86400 <= key["expires_at"] <= after + 30 * 86400 and key["key"].startswith("sk-parley-")

    updated = parley(tmp_path, "keys", "update", key["id"], "--tpm", "1000", "--all-models", "--never-expires")
    assert updated.returncode == 0, updated.stderr
    after = json.loads(updated.stdout)
    assert after["limits"] == {"requests_per_minute": 60, "tokens_per_minute": 1000, "spend_per_day_usd": 2.5}
    assert after["allowed_models"] is None and after["expires_at"] is None and after["name"] == "ci"
    cleared = json.loads(parley(tmp_path, "keys", "update", key["id"], "--no-limits").stdout)
    assert cleared["limits"] is None

    admin = parley(tmp_path, "keys", "create", "--role", "admin")
    assert admin.returncode == 0 and json.loads(admin.stdout)["key"].startswith("sk-parley-admin-")
    refused = parley(tmp_path, "keys", "create", "--role", "admin", "--rpm", "5")
    assert refused.returncode == 2 and "admin key" in refused.stderr
    listed = [json.loads(line) for line in parley(tmp_path, "keys", "list").stdout.splitlines()]
    assert [(k["role"], k["state"]) for k in listed] == [("project", "active"), ("admin", "active")]
    assert all("key" not in k for k in listed)


def _seed(data_dir: Path, day: int) -> None:
    async def run() -> None:
        store = await SqlStore.open(f"sqlite+aiosqlite:///{data_dir / 'parley.db'}")
        try:
            for offset, model, project in ((60, "gpt", "team"), (120, "gpt", "team"), (3700, "echo", "lab")):
                store.record_usage(UsageRecord(new_id("resp"), day + offset, project, "key_1", model, model, "h",
                                               "completed", False, 1000, 200, 0, 50, 10, {}, 800_000, 100_000,
                                               500_000, 0, 30, 10))
        finally:
            await store.close()  # commits what is queued

    data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(run())


def test_usage_prints_the_report_as_a_table(tmp_path: Path) -> None:
    day = int(time.time()) // 86400 * 86400 - 86400
    _seed(tmp_path, day)
    out = parley(tmp_path, "usage", "--start", str(day), "--end", str(day + 7200), "--bucket-width", "1h",
                 "--group-by", "model")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    stamp = time.strftime("%Y-%m-%d", time.gmtime(day))
    assert lines[0].split() == ["start", "(UTC)", "model", "requests", "input", "cached", "output", "reasoning"]
    assert lines[1].split() == [stamp, "00:00", "gpt", "2", "2000", "400", "100", "20"]
    assert lines[2].split() == [stamp, "01:00", "echo", "1", "1000", "200", "50", "10"]
    assert len(lines) == 3

    costs = parley(tmp_path, "usage", "--costs", "--start", stamp, "--group-by", "project_id",
                   "--group-by", "line_item")
    assert costs.returncode == 0, costs.stderr
    rows = [line.split() for line in costs.stdout.splitlines()]
    assert rows[0] == ["start", "(UTC)", "project_id", "line_item", "cost_usd"]
    assert [stamp, "00:00", "team", "gpt,", "input", "0.001600"] in rows
    assert [stamp, "00:00", "lab", "echo,", "output", "0.000500"] in rows

    bad = parley(tmp_path, "usage", "--group-by", "user_id")
    assert bad.returncode == 2 and "group_by" in bad.stderr
