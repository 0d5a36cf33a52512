"""The CLI: configuration precedence (flags > PARLEY_* env > TOML > defaults), secret redaction, keys,
and the refusal to serve a non-loopback address without keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from parley.config import load_settings

PARLEY = [sys.executable, "-m", "parley.cli.main"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    return env | extra


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PARLEY, *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def test_precedence_and_redaction(tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    config.write_text('port = 7001\nlog_level = "warning"\nhost = "127.0.0.2"\n'
                      'database_url = "postgresql+asyncpg://user:pw-secret@db/parley"\n'
                      '[[models]]\nid = "m"\nbase_url = "http://127.0.0.1:1/v1"\napi_key = "sk-very-secret"\n')
    env = _env(PARLEY_CONFIG_FILE=str(config), PARLEY_PORT="7002", PARLEY_LOG_LEVEL="error")
    shown = _run("config", "show", "--port", "7003", env=env)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["port"] == 7003  # flag beats env beats file
    assert data["log_level"] == "error"  # env beats file
    assert data["host"] == "127.0.0.2"  # file beats default
    assert data["embedded"]["enabled"] is True  # default
    assert "sk-very-secret" not in shown.stdout and "pw-secret" not in shown.stdout
    assert data["models"][0]["api_key"] == "**********"


def test_invalid_configuration_is_reported_plainly(tmp_path: Path) -> None:
    result = _run("config", "show", env=_env(PARLEY_PORT="not-a-port"))
    assert result.returncode == 2 and "invalid configuration" in result.stderr and "Traceback" not in result.stderr
    assert load_settings(port=None).port == 8080  # None flags are "not given"


def test_keys_and_remote_bind_refusal(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "data")
    env = _env(PARLEY_EMBEDDED__ENABLED="false")
    refused = _run("serve", "--host", "0.0.0.0", "--port", "0", "--data-dir", data_dir, env=env)
    assert refused.returncode == 2 and "refusing to listen" in refused.stderr
    created = _run("keys", "create", "--project", "acme", "--data-dir", data_dir, env=env)
    key = json.loads(created.stdout)
    assert key["key"].startswith("sk-parley-") and key["project"] == "acme"
    listed = [json.loads(line) for line in _run("keys", "list", "--data-dir", data_dir, env=env).stdout.splitlines()]
    assert [k["id"] for k in listed] == [key["id"]] and listed[0]["state"] == "active"
    assert key["key"] not in _run("keys", "list", "--data-dir", data_dir, env=env).stdout  # only the prefix
    assert _run("keys", "revoke", key["id"], "--data-dir", data_dir, env=env).returncode == 0
    assert _run("keys", "revoke", key["id"], "--data-dir", data_dir, env=env).returncode == 1


def test_version() -> None:
    out = _run("--version", env=_env())
    assert out.returncode == 0 and out.stdout.startswith("parley ") and out.stdout.strip().split()[1][0].isdigit()


def test_an_unknown_profile_is_one_clear_line_at_load(tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    config.write_text('[[models]]\nid = "m"\nbase_url = "http://127.0.0.1:1/v1"\nprofile = "nosuchprofile"\n')
    for command in (["config", "show"], ["serve", "--port", "0"]):
        out = _run(*command, "--config", str(config), env=_env())
        assert out.returncode == 2, out
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
        assert "models.0.profile" in lines[0] and "'vllm'" in lines[0] and "'generic'" in lines[0]


def test_profile_names_match_the_profiles() -> None:
    from typing import get_args

    from parley.config import ProfileName
    from parley.providers.native_profiles import NATIVE_PROFILES
    from parley.providers.profiles import PROFILES

    assert set(get_args(ProfileName)) == set(PROFILES) | {name for _, name in NATIVE_PROFILES}


def test_a_moved_setting_says_where_it_went(tmp_path: Path) -> None:
    config = tmp_path / "parley.toml"
    config.write_text('[web_search]\nallowed_private_hosts = ["127.0.0.1"]\n')
    out = _run("config", "show", "--config", str(config), env=_env())
    assert out.returncode == 2 and "Traceback" not in out.stderr, out
    assert "allowed_private_hosts" in out.stderr and "[fetch] allow" in out.stderr
