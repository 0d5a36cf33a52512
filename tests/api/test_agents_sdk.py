"""A conversation driven by the OpenAI Agents SDK (Runner + function tool) against Parley.

The fake upstream's `tools` model calls the offered tool, then answers with the tool's result, so the
Runner performs a real loop: model turn -> local tool -> function_call_output -> model turn.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

from parley.config import EmbeddedConfig, ModelConfig, Settings
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import in_process


class Env:
    def __init__(self, client: AsyncOpenAI, fake: FakeUpstream) -> None:
        self.client = client
        self.fake = fake


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    set_tracing_disabled(True)  # the SDK would otherwise try to export traces to OpenAI
    fake = FakeUpstream()
    await fake.start()
    data_dir: Path = tmp_path_factory.mktemp("agents")
    models = [ModelConfig(id="agent-model", base_url=fake.base_url, upstream_model="tools")]
    # unknown_fields = "reject" (OpenAI's behaviour): everything the Agents SDK sends is a field Parley knows.
    settings = Settings(data_dir=data_dir, models=models, embedded=EmbeddedConfig(enabled=False),
                        unknown_fields="reject")
    async with in_process(settings) as p:
        yield Env(p.sdk(), fake)
    await fake.stop()


def _agent(env: Env, calls: list[str], store: bool) -> Agent[Any]:
    @function_tool
    def get_weather(location: str) -> str:
        """Current weather for a city."""
        calls.append(location)
        return f"sunny in {location}"

    return Agent(
        name="weather", instructions="Answer with the weather.", tools=[get_weather],
        model=OpenAIResponsesModel(model="agent-model", openai_client=env.client),
        model_settings=ModelSettings(store=store),
    )


async def test_runner_with_full_history_resend(env: Env) -> None:
    calls: list[str] = []
    result = await Runner.run(_agent(env, calls, store=False), "What's the weather in Paris?")
    assert calls == ["Paris"]
    assert result.final_output == "done: sunny in Paris"
    # The second model turn carried the whole history: the call and its output.
    messages = env.fake.requests[-1]["messages"]
    assert messages[0] == {"role": "system", "content": "Answer with the weather."}
    assert messages[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert messages[-1]["role"] == "tool" and messages[-1]["content"] == "sunny in Paris"


async def test_runner_with_previous_response_id(env: Env) -> None:
    calls: list[str] = []
    agent = _agent(env, calls, store=True)
    result = await Runner.run(agent, "What's the weather in Paris?", auto_previous_response_id=True)
    assert calls == ["Paris"] and result.final_output == "done: sunny in Paris"
    assert result.last_response_id is not None
    stored = await env.client.responses.retrieve(result.last_response_id)
    assert stored.previous_response_id is not None and stored.output_text == "done: sunny in Paris"
    # A follow-up turn continues the stored chain.
    follow = await Runner.run(agent, "Thanks!", previous_response_id=result.last_response_id)
    assert follow.final_output is not None
    assert any(m["role"] == "tool" for m in env.fake.requests[-1]["messages"])
