"""The openai Node SDK (npm `openai`, pinned) against a real `parley serve`: the web_search tool (a fake SearXNG
over real HTTP) and the mcp tool (the operator's stdio MCP server), streamed and not, the SDK's stream helper,
and an approval round trip — every object and event checked against the Python SDK's types as well."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from compat_support import ParleyServer, model_toml
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from parley.testing.fake_search import ThreadedFakeSearch
from parley.testing.mcp_agent import ThreadedMcpAgentUpstream

pytestmark = pytest.mark.slow

NODE_OPENAI_VERSION = "7.60.0"
PREFIX = Path.home() / ".cache" / "parley" / f"npm-openai-{NODE_OPENAI_VERSION}"
SCENARIOS = Path(__file__).with_name("node_sdk_scenarios.mjs")
EVENTS = TypeAdapter(ResponseStreamEvent)


def install_node_sdk(prefix: Path = PREFIX) -> Path:
    """`npm install openai@<pinned>` into `prefix` once (a lock orders concurrent test runs); its node_modules."""
    done = prefix / ".complete"
    if not done.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is needed to install the openai Node SDK for these tests")
        prefix.mkdir(parents=True, exist_ok=True)
        with (prefix.parent / f"{prefix.name}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not done.exists():
                subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--no-save",
                                f"openai@{NODE_OPENAI_VERSION}"], check=True, timeout=600, capture_output=True)
                done.touch()
    return prefix / "node_modules"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    node_modules = install_node_sdk()
    with ThreadedMcpAgentUpstream() as upstream, ThreadedFakeSearch() as search:
        config = model_toml("web-agent", upstream.base_url, "web-agent")
        config += model_toml("mcp-agent", upstream.base_url, "mcp-agent")
        config += model_toml("agent", upstream.base_url, "call-agent")
        config += model_toml("rpm-one", upstream.base_url, "echo", requests_per_minute=1)
        config += ("[embedded]\nenabled = false\n"
                   f'[web_search]\nprovider = "searxng"\nbase_url = "{search.root}/searxng"\n'
                   "[[mcp_servers]]\nlabel = \"local\"\n"
                   f"command = {json.dumps([sys.executable, '-m', 'parley.testing.mcp_server', '--stdio'])}\n")
        server = ParleyServer(tmp_path_factory.mktemp("parley-node"), config)
        server.start()
        try:
            workdir = tmp_path_factory.mktemp("node")
            (workdir / "node_modules").symlink_to(node_modules)  # ESM resolves `openai` from the script's folder
            script = workdir / SCENARIOS.name
            shutil.copy(SCENARIOS, script)
            run = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=120, check=False,
                                 env={**os.environ, "PARLEY_BASE_URL": server.base_url})
            assert run.returncode == 0, run.stderr
            yield {line["name"]: line["value"] for line in map(json.loads, run.stdout.splitlines())}
        finally:
            server.stop()


def test_web_search_with_sources_and_citations(results: dict[str, Any]) -> None:
    response = Response.model_validate(results["web_search"])
    call, message = response.output
    assert call.type == "web_search_call" and call.status == "completed"
    assert call.action.type == "search" and call.action.query == "paris capital"
    assert call.action.sources and call.action.sources[0].url == "https://en.example.org/wiki/Paris"
    assert message.type == "message"
    [citation] = message.content[0].annotations  # type: ignore[union-attr]
    assert citation.type == "url_citation" and citation.url == "https://en.example.org/wiki/Paris"


def test_web_search_streamed_events(results: dict[str, Any]) -> None:
    events = [EVENTS.validate_python(event) for event in results["web_search_stream"]]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    assert [k for k in kinds if k.startswith("response.web_search_call.")] == [
        "response.web_search_call.in_progress", "response.web_search_call.searching",
        "response.web_search_call.completed"]
    assert "response.output_text.annotation.added" in kinds and kinds[-1] == "response.completed"
    helper = results["web_search_helper"]
    # The helper accumulates the same items, and its output_text is the answer without the citation marker.
    assert [item["type"] for item in helper["output"]] == ["web_search_call", "message"]
    assert helper["output_text"] == helper["output"][1]["content"][0]["text"]
    assert helper["output_text"] == "The answer is here ([en.example.org](https://en.example.org/wiki/Berlin))."
    assert helper["output"][1]["content"][0]["annotations"][0]["url"] == "https://en.example.org/wiki/Berlin"


def test_mcp_call_and_approval_round_trip(results: dict[str, Any]) -> None:
    called = Response.model_validate(results["mcp"])
    assert [item.type for item in called.output] == ["mcp_list_tools", "mcp_call", "message"]
    assert called.output[1].output == "7"  # type: ignore[union-attr]
    asked = Response.model_validate(results["mcp_approval"]["asked"])
    approved = Response.model_validate(results["mcp_approval"]["approved"])
    assert [item.type for item in asked.output] == ["mcp_list_tools", "mcp_approval_request"]
    assert [item.type for item in approved.output] == ["mcp_call", "message"]
    assert approved.output[0].output == "2" and approved.output[0].approval_request_id == asked.output[1].id  # type: ignore[union-attr]
    assert approved.previous_response_id == asked.id


def test_container_shell_through_the_stream_helper(results: dict[str, Any]) -> None:
    # The live shell output events (issue 18) pass through the Node SDK's accumulating stream helper.
    helper = results["shell_helper"]
    kinds = helper["events"]
    assert kinds.count("response.shell_call_output_content.done") == 2 and kinds[-1] == "response.completed"
    assert "response.shell_call_output_content.delta" in kinds
    call, output, message = helper["output"]
    assert (call["type"], output["type"], message["type"]) == ("shell_call", "shell_call_output", "message")
    assert [(o["stdout"], o["stderr"], o["outcome"]) for o in output["output"]] == [
        ("one\n", "", {"type": "exit", "exit_code": 0}), ("", "two\n", {"type": "exit", "exit_code": 4})]


def test_mcp_tool_choice_and_a_spent_deployment(results: dict[str, Any]) -> None:
    chosen = Response.model_validate(results["mcp_choice"])
    assert [item.type for item in chosen.output] == ["mcp_list_tools", "mcp_call", "message"]
    assert chosen.output[1].output == "7"  # type: ignore[union-attr]
    assert chosen.tool_choice.model_dump(exclude_none=True) == {  # type: ignore[union-attr]
        "type": "mcp", "server_label": "local", "name": "add"}
    limited = results["rate_limited"]
    assert limited is not None and limited["name"] == "RateLimitError" and limited["status"] == 429
    assert (limited["code"], limited["param"]) == ("rate_limit_exceeded", "model")
    assert 1 <= int(limited["retryAfter"]) <= 60
