"""The OpenAI Agents SDK's `HostedMCPTool` against Parley: the Runner declares an `mcp` tool, Parley lists and calls
the real MCP test server; with approvals, the SDK's `on_approval_request` answers and the Runner continues (by
resending the history, or along `previous_response_id`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from agents import Agent, HostedMCPTool, ModelSettings, OpenAIResponsesModel, Runner, set_tracing_disabled
from agents.model_settings import MCPToolChoice
from openai import AsyncOpenAI

from parley.config import EmbeddedConfig, FetchConfig, ModelConfig, Settings
from parley.testing.in_process import in_process
from parley.testing.mcp_agent import McpAgentUpstream
from parley.testing.mcp_server import McpTestServer, serving


class Env:
    def __init__(self, client: AsyncOpenAI, server: McpTestServer, upstream: McpAgentUpstream) -> None:
        self.client = client
        self.server = server
        self.upstream = upstream


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    set_tracing_disabled(True)
    upstream = McpAgentUpstream()
    await upstream.start()
    async with serving() as server:
        settings = Settings(data_dir=tmp_path_factory.mktemp("agents-mcp"), embedded=EmbeddedConfig(enabled=False),
                            models=[ModelConfig(id="mcp-agent", base_url=upstream.base_url)],
                            fetch=FetchConfig(allow=["127.0.0.1/32"]), unknown_fields="reject")
        async with in_process(settings) as app:
            yield Env(app.sdk(), server, upstream)
    await upstream.stop()


def _agent(env: Env, require_approval: str, approvals: list[str] | None = None, store: bool = True) -> Agent[Any]:
    def approve(request: Any) -> dict[str, Any]:
        assert approvals is not None
        approvals.append(request.data.name)
        return {"approve": True}

    tool = HostedMCPTool(
        tool_config={"type": "mcp", "server_label": "srv", "server_url": env.server.url(),
                     "require_approval": require_approval},  # type: ignore[typeddict-item]
        on_approval_request=approve if approvals is not None else None,  # type: ignore[arg-type]
    )
    return Agent(name="mcp", instructions="Use the tools.", tools=[tool],
                 model=OpenAIResponsesModel(model="mcp-agent", openai_client=env.client),
                 model_settings=ModelSettings(store=store))


def _prompt(*calls: tuple[str, dict[str, Any]]) -> str:
    return json.dumps([[{"call": name, "arguments": arguments}] for name, arguments in calls])


async def test_hosted_mcp_tool_without_approval(env: Env) -> None:
    result = await Runner.run(_agent(env, "never"), _prompt(("srv__add", {"a": 2, "b": 3})))
    assert result.final_output == "done: 5"
    raw = [item.raw_item for item in result.new_items]
    kinds = [getattr(r, "type", None) or r.get("type") for r in raw]  # type: ignore[union-attr]
    assert "mcp_list_tools" in kinds and "mcp_call" in kinds


@pytest.mark.parametrize("chained", [False, True])
async def test_hosted_mcp_tool_with_approvals(env: Env, chained: bool) -> None:
    approvals: list[str] = []
    calls = len(env.server.stats.calls)
    agent = _agent(env, "always", approvals, store=chained)
    prompt = _prompt(("srv__write_note", {"text": "from the agent"}), ("srv__echo", {"text": "next"}))
    result = await Runner.run(agent, prompt, auto_previous_response_id=chained)
    assert approvals == ["write_note", "echo"]
    assert env.server.stats.calls[calls:] == [("write_note", {"text": "from the agent"}), ("echo", {"text": "next"})]
    assert result.final_output == "done: saved: from the agent | next"


async def test_the_agents_sdk_mcp_tool_choice_forces_the_servers_tool(env: Env) -> None:
    # ModelSettings(tool_choice=MCPToolChoice(...)) is how the Agents SDK names one tool of a hosted MCP server: it
    # sends {"type": "mcp", "server_label", "name"}, forced on the first model turn as the tool's function.
    agent = _agent(env, "never")
    agent.model_settings = ModelSettings(tool_choice=MCPToolChoice(server_label="srv", name="add"))
    result = await Runner.run(agent, _prompt(("srv__add", {"a": 2, "b": 3})))
    assert result.final_output == "done: 5"
    first_turn, second_turn = env.upstream.requests[-2:]
    assert first_turn["tool_choice"] == {"type": "function", "function": {"name": "srv__add"}}
    assert second_turn["tool_choice"] == "auto"
