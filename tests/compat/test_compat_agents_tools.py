"""The Agents SDK's own tools, unchanged, against a real `parley serve` (issue 18): ComputerTool with a scripted
computer returning real PNG screenshots, LocalShellTool, ShellTool (local and in a container), ApplyPatchTool
applying the patch to a temporary directory, ToolSearchTool over deferred function tools, ImageGenerationTool
against a fake images upstream returning real PNGs. The model is the scripted `call-agent` (parley.testing.
fake_agent): it calls the tool the input names, then answers "done: <what the tool returned>"."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from agents import (
    Agent,
    ApplyPatchTool,
    ComputerTool,
    ImageGenerationTool,
    LocalShellTool,
    Runner,
    ShellTool,
    ToolSearchTool,
    function_tool,
    set_tracing_disabled,
)
from agents.apply_diff import apply_diff
from agents.computer import AsyncComputer
from agents.editor import ApplyPatchOperation, ApplyPatchResult
from agents.models.openai_responses import OpenAIResponsesModel
from agents.tool import ShellCallOutcome, ShellCommandOutput, ShellCommandRequest, ShellResult
from compat_support import ParleyServer
from openai import AsyncOpenAI

from parley.testing.fake_agent import AgentUpstream, ThreadedAgentUpstream
from parley.testing.fake_images import FakeImages, png
from parley.testing.fake_server import Threaded


@pytest.fixture(scope="module")
def agent_upstream() -> Iterator[AgentUpstream]:
    with ThreadedAgentUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def images() -> Iterator[FakeImages]:
    with Threaded(FakeImages, "fake-images") as upstream:
        yield upstream


@pytest.fixture(scope="module")
def server(agent_upstream: AgentUpstream, images: FakeImages,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ParleyServer]:
    config = (f'[embedded]\nenabled = false\n[images]\nbase_url = "{images.base_url}"\nmodel = "img-1"\n'
              f'[[models]]\nid = "agent"\nbase_url = "{agent_upstream.base_url}"\nupstream_model = "call-agent"\n')
    served = ParleyServer(tmp_path_factory.mktemp("agents-tools"), config)
    served.start()
    try:
        yield served
    finally:
        served.stop()


def _agent(server: ParleyServer, tools: list[Any]) -> Agent[Any]:
    set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=server.base_url, api_key="local", max_retries=0)
    return Agent(name="tools", model=OpenAIResponsesModel(model="agent", openai_client=client), tools=tools)


def _ask(call: str, arguments: dict[str, Any]) -> str:
    return json.dumps({"call": call, "arguments": arguments})


class ScriptedComputer(AsyncComputer):
    """A 64x48 screen whose colour changes with each action: screenshots are real PNGs."""

    def __init__(self) -> None:
        self.actions: list[tuple[Any, ...]] = []

    @property
    def environment(self) -> Literal["linux"]:
        return "linux"

    @property
    def dimensions(self) -> tuple[int, int]:
        return (64, 48)

    async def screenshot(self) -> str:
        shade = (40 * len(self.actions)) % 256
        return base64.b64encode(png(64, 48, (shade, 0, 0))).decode()

    async def click(self, x: int, y: int, button: str) -> None:
        self.actions.append(("click", x, y, button))

    async def double_click(self, x: int, y: int) -> None:
        self.actions.append(("double_click", x, y))

    async def scroll(self, x: int, y: int, scroll_x: int, scroll_y: int) -> None:
        self.actions.append(("scroll", x, y, scroll_x, scroll_y))

    async def type(self, text: str) -> None:
        self.actions.append(("type", text))

    async def wait(self) -> None:
        self.actions.append(("wait",))

    async def move(self, x: int, y: int) -> None:
        self.actions.append(("move", x, y))

    async def keypress(self, keys: list[str]) -> None:
        self.actions.append(("keypress", *keys))

    async def drag(self, path: list[tuple[int, int]]) -> None:
        self.actions.append(("drag", *path))


async def test_computer_tool(server: ParleyServer, agent_upstream: AgentUpstream) -> None:
    computer = ScriptedComputer()
    agent = _agent(server, [ComputerTool(computer=computer)])
    result = await Runner.run(agent, _ask("computer", {"actions": [
        {"type": "click", "x": 10, "y": 20, "button": "left"}, {"type": "type", "text": "hello"}]}))
    assert computer.actions == [("click", 10, 20, "left"), ("type", "hello")]
    assert result.final_output.endswith("(with an image)")  # the screenshot reached the model as an image
    image = agent_upstream.requests[-1]["messages"][-1]["content"][0]["image_url"]["url"]
    assert base64.b64decode(image.split(",", 1)[1]) == png(64, 48, (80, 0, 0))


async def test_local_shell_tool(server: ParleyServer) -> None:
    ran: list[list[str]] = []

    def executor(request: Any) -> str:
        ran.append(list(request.data.action.command))
        return "local-ok"

    result = await Runner.run(_agent(server, [LocalShellTool(executor=executor)]),
                              _ask("local_shell", {"command": ["uname"]}))
    assert ran == [["uname"]] and result.final_output == "done: local-ok"


async def test_shell_tool_local(server: ParleyServer) -> None:
    seen: list[list[str]] = []

    def executor(request: ShellCommandRequest) -> ShellResult:
        seen.append(list(request.data.action.commands))
        return ShellResult(output=[ShellCommandOutput(stdout="a b\n", outcome=ShellCallOutcome(type="exit",
                                                                                                exit_code=0))])

    result = await Runner.run(_agent(server, [ShellTool(executor=executor)]), _ask("shell", {"commands": ["ls"]}))
    assert seen == [["ls"]]
    assert "exit code 0" in result.final_output and "a b" in result.final_output


async def test_shell_tool_in_a_container(server: ParleyServer) -> None:
    tool = ShellTool(environment={"type": "container_auto"})
    result = await Runner.run(_agent(server, [tool]), _ask("shell", {"commands": ["echo from-the-container"]}))
    assert "from-the-container" in result.final_output and "exit code 0" in result.final_output
    kinds = [item.type for item in result.new_items]
    assert "tool_call_item" in kinds


class DirectoryEditor:
    def __init__(self, root: Path) -> None:
        self.root = root

    def create_file(self, operation: ApplyPatchOperation) -> ApplyPatchResult:
        path = self.root / operation.path
        path.write_text(apply_diff("", operation.diff or "", mode="create"))
        return ApplyPatchResult(output=f"created {operation.path}")

    def update_file(self, operation: ApplyPatchOperation) -> ApplyPatchResult:
        path = self.root / operation.path
        path.write_text(apply_diff(path.read_text(), operation.diff or ""))
        return ApplyPatchResult(output=f"updated {operation.path}")

    def delete_file(self, operation: ApplyPatchOperation) -> ApplyPatchResult:
        (self.root / operation.path).unlink()
        return ApplyPatchResult(output=f"deleted {operation.path}")


async def test_apply_patch_tool(server: ParleyServer, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("one\ntwo\n")
    agent = _agent(server, [ApplyPatchTool(editor=DirectoryEditor(tmp_path))])
    created = await Runner.run(agent, _ask("apply_patch", {"type": "create_file", "path": "hello.txt",
                                                           "diff": "+hello\n+world\n"}))
    assert (tmp_path / "hello.txt").read_text() == "hello\nworld"
    assert "created hello.txt" in created.final_output
    await Runner.run(agent, _ask("apply_patch", {"type": "update_file", "path": "notes.txt",
                                                 "diff": "@@\n one\n-two\n+three\n"}))
    assert (tmp_path / "notes.txt").read_text() == "one\nthree\n"


async def test_tool_search_tool(server: ParleyServer, agent_upstream: AgentUpstream) -> None:
    called: list[str] = []

    @function_tool(defer_loading=True)
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        called.append(city)
        return f"sunny in {city}"

    agent = _agent(server, [get_weather, ToolSearchTool()])
    plan = json.dumps([{"call": "tool_search", "arguments": {"query": "weather"}},
                       {"call": "get_weather", "arguments": {"city": "Oslo"}}])
    result = await Runner.run(agent, plan)
    assert called == ["Oslo"] and result.final_output == "done: sunny in Oslo"
    first = next(r for r in agent_upstream.requests if r["messages"][-1].get("content") == plan)
    assert [t["function"]["name"] for t in first["tools"]] == ["tool_search"]


async def test_image_generation_tool(server: ParleyServer, images: FakeImages) -> None:
    tool = ImageGenerationTool(tool_config={"type": "image_generation", "size": "32x32", "quality": "low"})
    result = await Runner.run(_agent(server, [tool]), _ask("image_generation", {"prompt": "a lighthouse"}))
    assert result.final_output.startswith("done: The image was generated")
    calls = [item.raw_item for item in result.new_items if getattr(item.raw_item, "type", None) ==
             "image_generation_call"]
    assert len(calls) == 1 and base64.b64decode(calls[0].result)[:8] == b"\x89PNG\r\n\x1a\n"  # type: ignore[union-attr]
    assert images.requests[-1]["size"] == "32x32" and images.requests[-1]["model"] == "img-1"
