"""The OpenAI Codex CLI against a real `parley serve`, with only its provider's `base_url` changed.

Codex (npm `@openai/codex`, a native binary inside the package) is installed by this module itself, once per
version, into ~/.cache/parley/npm-codex-<version> (outside the checkout, so a fresh clone reuses it). Each run
is `codex exec --json` (non-interactive) with a throwaway HOME/CODEX_HOME whose config.toml declares a model
provider pointing at Parley; the model is the fake agent upstream (parley.testing.fake_agent). No network
beyond loopback is needed. Codex always streams, sends `store: false` with the whole history, its `web_search`
tool with `external_web_access: false` (live access in its full-access sandbox), `namespace` tools, and
`include: ["reasoning.encrypted_content"]`.

Every scenario runs twice: over HTTP, and over WebSocket mode (the provider's `supports_websockets = true`,
which is how Codex 0.171 turns its `responses_websockets` transport on). Over the WebSocket Codex first sends a
`generate: false` warm-up, then each turn as a `store: false` continuation of the last (`previous_response_id`
with only the new items), which Parley serves from the connection's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from compat_support import ParleyServer, model_toml

from parley.store.base import WebPageRecord
from parley.store.sql import SqlStore
from parley.testing.fake_agent import AgentUpstream, ThreadedAgentUpstream
from parley.testing.fake_search import FakeSearch, ThreadedFakeSearch

pytestmark = pytest.mark.slow

CODEX_VERSION = "0.171.0"
CODEX_PREFIX = Path.home() / ".cache" / "parley" / f"npm-codex-{CODEX_VERSION}"
TRANSPORTS = ["http", "websocket"]
ACCEPTED = '"WebSocket /v1/responses" [accepted]'  # uvicorn's line for an accepted upgrade (info level)
EIFFEL = WebPageRecord("https://en.example.org/wiki/Eiffel_Tower", "Eiffel Tower",
                       "The Eiffel Tower in Paris was completed in 1889.", 0)


def install_codex(prefix: Path = CODEX_PREFIX) -> Path:
    """`npm install @openai/codex@<pinned>` into `prefix` once (a lock orders concurrent test runs)."""
    codex = prefix / "node_modules" / ".bin" / "codex"
    done = prefix / ".complete"
    if done.exists():
        return codex
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is needed to install the Codex CLI (@openai/codex) for these tests")
    prefix.mkdir(parents=True, exist_ok=True)
    with (prefix.parent / f"{prefix.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--no-save",
                            f"@openai/codex@{CODEX_VERSION}"], check=True, timeout=600, capture_output=True)
            version = subprocess.run([str(codex), "--version"], check=True, capture_output=True, text=True)
            assert CODEX_VERSION in version.stdout, version.stdout
            done.touch()
    return codex


@dataclass
class Run:
    returncode: int
    events: list[dict[str, Any]]
    stderr: str
    seconds: float

    def items(self, kind: str) -> list[dict[str, Any]]:
        return [e["item"] for e in self.events if e["type"] == "item.completed" and e["item"]["type"] == kind]

    @property
    def thread_id(self) -> str:
        started = next(e for e in self.events if e["type"] == "thread.started")
        thread: str = started["thread_id"]
        return thread

    @property
    def answer(self) -> str:
        text: str = self.items("agent_message")[-1]["text"]
        return text


@dataclass
class Codex:
    binary: Path
    home: Path
    workdir: Path
    transport: str = "http"
    server: ParleyServer | None = None

    def configure(self, server: ParleyServer, model: str = "echo") -> None:
        self.server = server
        (self.home / ".codex").mkdir(parents=True, exist_ok=True)
        websocket = "supports_websockets = true\n" if self.transport == "websocket" else ""
        (self.home / ".codex" / "config.toml").write_text(
            f'model = "{model}"\nmodel_provider = "parley"\n\n'
            f'[model_providers.parley]\nname = "Parley"\nbase_url = "{server.base_url}"\n'
            'env_key = "PARLEY_API_KEY"\nwire_api = "responses"\n' + websocket)

    def exec(self, *args: str) -> Run:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("OPENAI_", "CODEX_", "PARLEY_")) and k.lower() not in ("http_proxy", "https_proxy")}
        env.update(HOME=str(self.home), CODEX_HOME=str(self.home / ".codex"), PARLEY_API_KEY="sk-codex-test")
        started = time.monotonic()
        upgrades = self._upgrades()
        done = subprocess.run([str(self.binary), "exec", "--json", "--skip-git-repo-check", "-C", str(self.workdir),
                               *args], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        # The transport under test is the one Codex used: a WebSocket upgrade per run, or none over HTTP.
        upgraded = self._upgrades() - upgrades
        assert (upgraded >= 1) if self.transport == "websocket" else (upgraded == 0), (self.transport, upgraded)
        return Run(done.returncode, events, done.stderr, time.monotonic() - started)

    def _upgrades(self) -> int:
        return self.server.log().count(ACCEPTED) if self.server is not None else 0


@pytest.fixture(scope="module")
def codex_binary() -> Path:
    return install_codex()


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentUpstream]:
    with ThreadedAgentUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def search() -> Iterator[FakeSearch]:
    with ThreadedFakeSearch() as fake:
        yield fake


def _models(agent: AgentUpstream) -> str:
    # Codex's instructions and tools are ~40 KB: a context window the size of a real coding model's.
    return "".join(model_toml(name, agent.base_url, name, context_window=400000)
                   for name in ("echo", "shell-agent", "web-agent")) + "[embedded]\nenabled = false\n"


def _seed_page_cache(server: ParleyServer) -> None:
    """Put one page in the (not yet running) server's page cache, as if it had been read before."""
    async def seed() -> None:
        store = await SqlStore.open(f"sqlite+aiosqlite:///{server.data_dir / 'parley.db'}")
        try:
            page = WebPageRecord(EIFFEL.url, EIFFEL.title, EIFFEL.text, int(time.time()))
            await store.put_web_page("default", page, keep_s=86400.0)
        finally:
            await store.close()

    server.data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(seed())


@contextlib.contextmanager
def _serving(workdir: Path, config: str, seed: bool = False) -> Iterator[ParleyServer]:
    server = ParleyServer(workdir, config, log_level="info")  # info: uvicorn logs each WebSocket upgrade
    if seed:
        _seed_page_cache(server)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def bare_server(agent: AgentUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ParleyServer]:
    """No search provider configured: what Codex's default (cached) web search gets."""
    with _serving(tmp_path_factory.mktemp("codex-parley"), _models(agent), seed=True) as server:
        yield server


@pytest.fixture(params=TRANSPORTS)
def codex(codex_binary: Path, bare_server: ParleyServer, tmp_path: Path, request: pytest.FixtureRequest) -> Codex:
    workdir = tmp_path / "work"
    workdir.mkdir()
    client = Codex(codex_binary, tmp_path / "home", workdir, request.param)
    client.configure(bare_server)
    return client


def _requests_since(agent: AgentUpstream, start: int) -> list[dict[str, Any]]:
    return agent.requests[start:]


def test_a_plain_streamed_turn(codex: Codex, agent: AgentUpstream) -> None:
    start = len(agent.requests)
    run = codex.exec("Say hello to Parley")
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.answer == "echo: Say hello to Parley"
    assert any(e["type"] == "turn.completed" and e["usage"]["output_tokens"] > 0 for e in run.events)
    sent = _requests_since(agent, start)
    assert len(sent) == 1 and sent[0]["stream"] is True  # Codex streams; Parley streamed from the upstream
    offered = {t["function"]["name"] for t in sent[0]["tools"]}
    assert {"exec_command", "web_search"} <= offered  # Codex's tools and the (cache-only) web_search


def test_the_exec_command_round_trip(codex: Codex, agent: AgentUpstream) -> None:
    start = len(agent.requests)
    run = codex.exec("-m", "shell-agent", "run: echo parley-$((6*7))")
    assert run.returncode == 0, run.stderr[-2000:]
    [command] = run.items("command_execution")
    assert command["exit_code"] == 0 and command["aggregated_output"] == "parley-42\n"
    assert run.answer.startswith("done: ") and "parley-42" in run.answer
    first, second = _requests_since(agent, start)
    assert first["messages"][-1]["role"] == "user"
    call = next(m for m in second["messages"] if m.get("tool_calls"))["tool_calls"][0]["function"]
    assert call["name"] == "exec_command" and json.loads(call["arguments"]) == {"cmd": "echo parley-$((6*7))"}
    assert "parley-42" in second["messages"][-1]["content"]  # the output Codex sent back


def test_offline_web_search_and_resume(codex: Codex, agent: AgentUpstream) -> None:
    """Codex's default web search is cache-only: Parley searches its page cache, Codex shows the
    web_search_call, the answer cites the page; `codex exec resume` resends it all and goes on."""
    run = codex.exec("-m", "web-agent", "eiffel tower")
    assert run.returncode == 0, run.stderr[-2000:]
    [search] = run.items("web_search")
    assert search["action"] == {"type": "search", "query": "eiffel tower"}
    assert run.answer == f"The answer is here ([en.example.org]({EIFFEL.url}))."
    assert "completed in 1889" in agent.requests[-1]["messages"][-1]["content"]

    start = len(agent.requests)
    resumed = codex.exec("-m", "echo", "resume", run.thread_id, "What did you find?")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumed.answer == "echo: What did you find?"
    [sent] = _requests_since(agent, start)
    history = sent["messages"]
    assert any(m["role"] == "user" and "eiffel tower" in json.dumps(m["content"]) for m in history)
    replayed = next(m for m in history if m.get("tool_calls"))["tool_calls"][0]["function"]
    assert replayed["name"] == "web_search" and json.loads(replayed["arguments"])["query"] == "eiffel tower"
    assert any(m["role"] == "assistant" and "The answer is here" in json.dumps(m["content"]) for m in history)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_full_access_sends_live_web_search(codex_binary: Path, agent: AgentUpstream, search: FakeSearch,
                                           bare_server: ParleyServer, tmp_path: Path, transport: str) -> None:
    """In its full-access sandbox Codex asks for live web search: a server without a provider says so in a
    400 naming the tool; with one (a SearXNG here) it searches."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    client = Codex(codex_binary, tmp_path / "home", workdir, transport)
    client.configure(bare_server)
    refused = client.exec("-s", "danger-full-access", "hello")
    assert refused.returncode != 0
    assert any("no search provider configured" in e.get("message", "") and "tools[" in e.get("message", "")
               for e in refused.events if e["type"] == "error")
    config = _models(agent) + f'[web_search]\nprovider = "searxng"\nbase_url = "{search.root}/searxng"\n'
    with _serving(tmp_path / "live-parley", config) as live:
        client.configure(live)
        run = client.exec("-s", "danger-full-access", "-m", "web-agent", "paris capital")
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.items("web_search")[0]["action"]["query"] == "paris capital"
    assert run.answer.startswith("The answer is here ([")
    assert search.requests[-1]["params"]["q"] == "paris capital"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_codex_against_a_server_that_rejects_unknown_fields(codex_binary: Path, agent: AgentUpstream,
                                                            tmp_path: Path, transport: str) -> None:
    """`unknown_fields = "reject"` (OpenAI's behaviour): what Codex sends must all be fields Parley knows."""
    with _serving(tmp_path / "strict-parley", 'unknown_fields = "reject"\n' + _models(agent)) as strict:
        workdir = tmp_path / "work"
        workdir.mkdir()
        client = Codex(codex_binary, tmp_path / "home", workdir, transport)
        client.configure(strict)
        run = client.exec("Say hello to Parley")
        assert run.returncode == 0, str(run.events)[-3000:]
        assert run.answer == "echo: Say hello to Parley"
