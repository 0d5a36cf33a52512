"""Secret hygiene (a real `parley serve` at --log-level debug, over parley.testing.faulty_upstream): with
recognisable upstream keys and client keys configured, every error path reachable from outside — upstream
400/401/403/429/500/503 with JSON and plain-text bodies, an upstream refusing Parley's credentials, a
mid-stream error, failed background responses, wrong and revoked client keys — and neither the secrets nor a
client key's SHA-256 appear in any response body, stored object, the database file or any log line."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from compat_support import ParleyServer, model_toml, run_parley, wait_for

from parley.testing.faulty_upstream import FaultyUpstream, ThreadedFaultyUpstream

UPSTREAM_KEY = "upstream-hygiene-Secret-7731"  # no credential shape: only exact masking catches it
UPSTREAM_SK_KEY = "sk-hygiene-upstream-Qm4f"  # a second model's key, shaped like OpenAI's
WRONG_CLIENT_KEY = "sk-parley-wrong-client-key-Lx09"
FAILING = ["leak-400-json", "leak-400-text", "leak-401-json", "leak-403-text", "leak-429-json", "leak-429-text",
           "leak-500-json", "leak-500-text", "leak-503-json", "badkey-400", "badkey-401", "leak-midstream",
           "shape-list", "reset"]


@dataclass
class Hygiene:
    server: ParleyServer
    key: str
    revoked_key: str
    seen: list[str] = field(default_factory=list)  # every response body the clients received

    def request(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {key or self.key}"}
        resp = httpx.request(method, self.server.base_url + path, headers=headers, timeout=30, **kwargs)
        self.seen.append(resp.text)
        return resp

    def secrets(self) -> dict[str, str]:
        found = {"upstream key": UPSTREAM_KEY, "upstream sk key": UPSTREAM_SK_KEY}
        for name, key in (("client key", self.key), ("revoked key", self.revoked_key),
                          ("wrong key", WRONG_CLIENT_KEY)):
            found[name] = key
            found[f"{name} sha256"] = hashlib.sha256(key.encode()).hexdigest()
        return found


@pytest.fixture(scope="module")
def faulty() -> Iterator[FaultyUpstream]:
    with ThreadedFaultyUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def hygiene(faulty: FaultyUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hygiene]:
    config = "auth_cache_ttl_s = 0.1\n"
    config += "".join(model_toml(name, faulty.base_url, name, api_key=UPSTREAM_KEY, read_timeout_s=5.0)
                      for name in FAILING)
    config += model_toml("sk-model", faulty.base_url, "leak-500-json", api_key=UPSTREAM_SK_KEY)
    config += "[embedded]\nenabled = false\n"
    server = ParleyServer(tmp_path_factory.mktemp("parley-hygiene"), config, log_level="debug")
    keys = []
    for project in ("hygiene", "other"):
        out = run_parley("keys", "create", "--project", project, "--data-dir", str(server.data_dir))
        keys.append(json.loads(out.stdout.strip().splitlines()[-1]))
    server.start()
    try:
        yield Hygiene(server, keys[0]["key"], keys[1]["key"])
    finally:
        server.stop()


def _wait_failed(env: Hygiene, response_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120  # a bound on the wait (the run ends in well under a second)
    while time.monotonic() < deadline:
        body: dict[str, Any] = env.request("GET", f"/responses/{response_id}").json()
        if body["status"] in ("failed", "completed", "cancelled"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"background response {response_id} did not end")


def _exercise(env: Hygiene) -> None:
    for model in [*FAILING, "sk-model"]:
        resp = env.request("POST", "/responses", json={"model": model, "input": "hi"})
        assert resp.status_code >= 400, (model, resp.text)
        stream = env.request("POST", "/responses", json={"model": model, "input": "hi", "stream": True})
        if stream.status_code == 200:  # failed mid-stream: the stored response is failed too
            assert stream.text.endswith("data: [DONE]\n\n") and "event: response.failed" in stream.text
            failed = json.loads(stream.text.split("event: response.failed\ndata: ")[1].split("\n")[0])
            assert env.request("GET", f"/responses/{failed['response']['id']}").json()["status"] == "failed"
    for model in ("leak-500-json", "leak-midstream", "badkey-400", "shape-list"):
        created = env.request("POST", "/responses", json={"model": model, "input": "hi", "background": True}).json()
        assert _wait_failed(env, created["id"])["status"] == "failed"
        env.request("GET", f"/responses/{created['id']}", params={"stream": "true"})
        env.request("GET", f"/responses/{created['id']}/input_items")
    # Wrong, missing and (after a revocation while the server runs) revoked client keys.
    assert env.request("GET", "/models", key=WRONG_CLIENT_KEY).status_code == 401
    assert env.request("POST", "/responses", key=WRONG_CLIENT_KEY, json={"model": "reset", "input": "hi"}
                       ).status_code == 401
    assert env.request("GET", "/models", key=env.revoked_key).status_code == 200
    listed = run_parley("keys", "list", "--data-dir", str(env.server.data_dir))
    other_id = next(json.loads(line)["id"] for line in listed.stdout.splitlines() if '"other"' in line)
    assert run_parley("keys", "revoke", other_id, "--data-dir", str(env.server.data_dir)).returncode == 0
    # Refused once the server has read its key again (auth_cache_ttl_s), which the test waits for, not sleeps on.
    assert wait_for(lambda: env.request("GET", "/models", key=env.revoked_key).status_code == 401, timeout=60)


def test_no_secret_in_bodies_stored_objects_or_logs(hygiene: Hygiene) -> None:
    _exercise(hygiene)
    log = hygiene.server.log()
    assert "upstream failure" in log  # the failures were logged (masked), ...
    assert "executing functools.partial" not in log  # ... aiosqlite's per-call debug lines were not
    database = b"".join(path.read_bytes() for path in Path(hygiene.server.data_dir).glob("parley.db*"))
    for name, secret in hygiene.secrets().items():
        for index, body in enumerate(hygiene.seen):
            assert secret not in body, f"{name} in response body #{index}: {body[:300]}"
        leaked = [line for line in log.splitlines() if secret in line]
        assert not leaked, f"{name} in the server log: {leaked[:3]}"
        if "sha256" not in name:  # key hashes are what the api_keys table stores, by design
            assert secret.encode() not in database, f"{name} in the database"
