"""The code_interpreter tool without a sandbox (a scripted runner): its item and events, what the model reads,
citable files, failures as outcomes, and replay."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from parley.errors import InvalidRequest
from parley.tools.base import BuiltinCall
from parley.tools.code_interpreter import CodeInterpreterTool, clip, parse_code, replay


@dataclass
class Result:
    logs: str = ""
    logs_bytes: int = 0
    images: list[bytes] = field(default_factory=list)
    ended: str | None = None


@dataclass
class Written:
    id: str
    path: str
    bytes: int


@dataclass
class Outcome:
    container_id: str
    result: Result
    files: list[Written] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Runner:
    def __init__(self, outcome: Outcome | Exception) -> None:
        self.outcome = outcome
        self.created: list[list[str]] = []
        self.codes: list[str] = []

    async def run(self, project_id: str, container_id: str, code: str) -> Outcome:
        self.codes.append(code)
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome

    async def create_auto(self, project_id: str, file_ids: list[str], memory_limit: str | None) -> str:
        self.created.append(file_ids)
        return "cntr_new"

    async def ensure_files(self, project_id: str, container_id: str, file_ids: list[str]) -> None:
        return None


class Emitter:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.item: dict[str, Any] = {}

    def start(self, item: dict[str, Any]) -> None:
        self.events.append("added")
        self.item = item

    def progress(self, kind: str, fields: dict[str, Any] | None = None) -> None:
        self.events.append(kind.removeprefix("response."))

    def update(self, item: dict[str, Any]) -> None:
        self.item = item


class Markers:
    def __init__(self) -> None:
        self.n = 0

    def next_marker(self) -> int:
        self.n += 1
        return self.n


def call(code: str) -> BuiltinCall:
    return BuiltinCall("call_1", "python", orjson.dumps({"code": code}).decode())


async def test_a_call_with_output_images_and_files() -> None:
    outcome = Outcome("cntr_new", Result("4\n", 2, [b"\x89PNG..."]), [Written("cfile_1", "/mnt/data/a b.png", 9)],
                      ["Note: new session."])
    runner = Runner(outcome)
    tool = CodeInterpreterTool("p", runner, container_id=None, auto_file_ids=["file-1"])
    emit = Emitter()
    done = await tool.run(call("2 + 2"), emit, Markers())
    assert emit.events == ["added", "code_interpreter_call.in_progress", "code_interpreter_call_code.delta",
                           "code_interpreter_call_code.done", "code_interpreter_call.interpreting",
                           "code_interpreter_call.completed"]
    assert runner.created == [["file-1"]] and runner.codes == ["2 + 2"]
    assert done.item["status"] == "completed" and done.item["container_id"] == "cntr_new"
    assert done.item["outputs"][0] == {"type": "logs", "logs": "4\n"}
    assert done.item["outputs"][1]["url"].startswith("data:image/png;base64,")
    assert done.model_text.startswith("Note: new session.\n\nOutput:\n4\n")
    assert "[1] /mnt/data/a b.png (9 bytes)" in done.model_text and "1 image(s)" in done.model_text
    source = done.sources[1]
    assert source.inline == "[a b.png](sandbox:/mnt/data/a%20b.png)"
    assert source.annotation == {"type": "container_file_citation", "container_id": "cntr_new", "file_id": "cfile_1",
                                 "filename": "a b.png"}


async def test_timeouts_failures_and_empty_code() -> None:
    stopped = await CodeInterpreterTool("p", Runner(Outcome("c", Result(ended="timeout"))), container_id="c",
                                        timeout_s=3).run(call("while True: pass"), Emitter(), Markers())
    assert stopped.item["status"] == "incomplete" and "stopped after 3 seconds" in stopped.model_text
    emit = Emitter()
    failed = await CodeInterpreterTool("p", Runner(InvalidRequest("Container 'c' has expired.")),
                                       container_id="c").run(call("1"), emit, Markers())
    assert failed.item["status"] == "failed" and "has expired" in failed.model_text
    empty = await CodeInterpreterTool("p", Runner(Outcome("c", Result())), container_id="c").run(
        BuiltinCall("call_2", "python", "{}"), Emitter(), Markers())
    assert empty.item["status"] == "failed"


def test_arguments_clipping_and_replay() -> None:
    assert parse_code('{"code": "x = 1"}') == "x = 1"
    assert parse_code("print('raw code')") == "print('raw code')"
    assert parse_code('"quoted"') == "quoted"
    assert clip("a" * 50, 20).count("characters cut") == 1 and clip("short", 20) == "short"
    item = {"id": "ci_1", "type": "code_interpreter_call", "code": "1 + 1", "container_id": "c",
            "status": "completed", "outputs": [{"type": "logs", "logs": "2\n"}, {"type": "image", "url": "data:"}]}
    function_call, output = replay(item)
    assert function_call["name"] == "python" and orjson.loads(function_call["arguments"]) == {"code": "1 + 1"}
    assert output["output"] == "Output:\n2\n\n\n1 image(s) were shown to the user."
    assert replay({**item, "status": "failed"})[1]["output"] == "The code could not run."
