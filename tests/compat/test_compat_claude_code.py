"""Claude Code against a real `parley serve`, unchanged: only `ANTHROPIC_BASE_URL` points at Parley.

Claude Code (npm `@anthropic-ai/claude-code`, a native binary inside the package) is installed by this module
itself, once per version, into ~/.cache/parley/npm-claude-code-<version> (outside the checkout, so a fresh clone
reuses it). Each run is `claude -p` (one-shot, `--output-format json`) with a throwaway HOME,
`CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1` and a Parley key in `ANTHROPIC_API_KEY` (sent as `x-api-key`); the
model is the scripted fake upstream (parley.testing.fake_script_agent). No network beyond loopback is needed.
Claude Code streams one `POST /v1/messages?beta=true` per model turn with its whole conversation: a system prompt
in blocks with `cache_control`, a `role: "system"` turn, `thinking: {type: adaptive, display: omitted}`,
`context_management`, `output_config`, its tools (one of them `defer_loading`) and `max_tokens` 32000. The server
refuses unknown fields (`unknown_fields = "reject"`), so every field it sends is one Parley knows.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from compat_support import ParleyServer, create_key, model_toml

from parley.testing.fake_script_agent import ScriptUpstream, ThreadedScriptUpstream

pytestmark = pytest.mark.slow

CLAUDE_CODE_VERSION = "2.1.332"
CLAUDE_CODE_PREFIX = Path.home() / ".cache" / "parley" / f"npm-claude-code-{CLAUDE_CODE_VERSION}"


def install_claude_code(prefix: Path = CLAUDE_CODE_PREFIX) -> Path:
    """`npm install @anthropic-ai/claude-code@<pinned>` into `prefix` once (a lock orders concurrent test runs)."""
    claude = prefix / "node_modules" / ".bin" / "claude"
    done = prefix / ".complete"
    if done.exists():
        return claude
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is needed to install Claude Code (@anthropic-ai/claude-code) for these tests")
    prefix.mkdir(parents=True, exist_ok=True)
    with (prefix.parent / f"{prefix.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--no-save",
                            f"@anthropic-ai/claude-code@{CLAUDE_CODE_VERSION}"], check=True, timeout=900,
                           capture_output=True)
            version = subprocess.run([str(claude), "--version"], check=True, capture_output=True, text=True,
                                     timeout=60)
            assert CLAUDE_CODE_VERSION in version.stdout, version.stdout
            done.touch()
    return claude


@dataclass
class Run:
    returncode: int
    result: dict[str, Any]
    stderr: str

    @property
    def answer(self) -> str:
        text: str = self.result.get("result", "")
        return text


@dataclass
class ClaudeCode:
    binary: Path
    home: Path
    workdir: Path
    server: ParleyServer
    key: str

    def run(self, prompt: str, model: str = "script-agent", *flags: str) -> Run:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ANTHROPIC_", "CLAUDE_", "PARLEY_")) and k.lower() not in ("http_proxy",
                                                                                               "https_proxy")}
        env.update(HOME=str(self.home), ANTHROPIC_BASE_URL=self.server.root, ANTHROPIC_API_KEY=self.key,
                   CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1")
        done = subprocess.run([str(self.binary), "-p", "--model", model, "--output-format", "json", *flags, "--",
                               prompt], env=env, cwd=self.workdir, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=180)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        result = json.loads(lines[-1]) if lines else {}
        return Run(done.returncode, result, done.stderr)


@pytest.fixture(scope="module")
def claude_binary() -> Path:
    return install_claude_code()


@pytest.fixture(scope="module")
def upstream() -> Iterator[ScriptUpstream]:
    with ThreadedScriptUpstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def keyed_server(upstream: ScriptUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ParleyServer,
                                                                                                        str]]:
    # Claude Code's system prompt and tools are ~50 KB and it asks for max_tokens 32000: a real coding model's
    # context window. Unknown fields are refused, so its requests must be entirely understood.
    config = 'unknown_fields = "reject"\n'
    config += model_toml("script-agent", upstream.base_url, "script-agent", context_window=400_000)
    config += model_toml("script-thinker", upstream.base_url, "script-thinker", context_window=400_000)
    config += "quirks = { reasoning_passback = true }\n"
    config += "[embedded]\nenabled = false\n"
    server = ParleyServer(tmp_path_factory.mktemp("claude-code-parley"), config)
    server.data_dir.mkdir(parents=True, exist_ok=True)
    key = create_key(server.data_dir, "claude")  # keys are required from the start
    server.start()
    try:
        yield server, key
    finally:
        server.stop()


@pytest.fixture
def claude(claude_binary: Path, keyed_server: tuple[ParleyServer, str], tmp_path: Path) -> ClaudeCode:
    workdir = tmp_path / "work"
    workdir.mkdir()
    (tmp_path / "home").mkdir()
    server, key = keyed_server
    return ClaudeCode(claude_binary, tmp_path / "home", workdir, server, key)


def test_one_shot(claude: ClaudeCode, upstream: ScriptUpstream) -> None:
    start = len(upstream.requests)
    run = claude.run("Say hello to Parley")
    assert run.returncode == 0, (run.result, run.stderr[-2000:], claude.server.log()[-3000:])
    assert run.result["is_error"] is False and run.result["stop_reason"] == "end_turn"
    assert run.answer.startswith("echo: ") and run.answer.endswith("Say hello to Parley")
    assert run.result["usage"]["output_tokens"] == 5  # the upstream's usage, as Anthropic's usage
    sent = upstream.requests[start:]
    assert len(sent) == 1
    body = sent[0]
    assert body["max_tokens"] == 32000 and len(body["tools"]) >= 10 and body["stream"] is True
    assert len(json.dumps(body)) > 30_000
    roles = [m["role"] for m in body["messages"]]
    assert roles[0] == "system" and roles.count("system") >= 2  # the system prompt and Claude Code's system turn
    assert "DeferredToolPlaceholder" not in [t["function"]["name"] for t in body["tools"]]  # defer_loading


def test_a_tool_using_turn(claude: ClaudeCode, upstream: ScriptUpstream) -> None:
    start = len(upstream.requests)
    script = [{"call": "Bash", "arguments": {"command": "echo parley-$((40+2))", "description": "Print a marker"}}]
    run = claude.run(f"Run the script. SCRIPT: {json.dumps(script)}", "script-thinker", "--allowedTools", "Bash")
    assert run.returncode == 0, (run.result, run.stderr[-2000:], claude.server.log()[-3000:])
    assert run.answer == "done: parley-42" and run.result["num_turns"] == 2
    first, second = upstream.requests[start:]
    assert first["messages"][-1]["role"] != "tool"
    calls = [m for m in second["messages"] if m.get("tool_calls")]
    assert calls[-1]["tool_calls"][0]["function"]["name"] == "Bash"
    tool = second["messages"][-1] if second["messages"][-1]["role"] == "tool" else next(
        m for m in second["messages"] if m["role"] == "tool")
    assert "parley-42" in tool["content"]
    # Claude Code sent the (signed, text-omitted) thinking block back: Parley verified it and restored its text.
    assert calls[-1]["reasoning_content"] == f"Thinking about step {start + 1}."
