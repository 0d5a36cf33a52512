"""The `code_interpreter` tool: the model runs Python in a container's persistent, sandboxed session.

Offered as a function `python(code)`. Each call is a `code_interpreter_call` item (`code`, `container_id`,
`status`, `outputs`: logs and images) with the events `in_progress` → `code.delta` / `code.done` →
`interpreting` → `completed`. What the code prints (and its last expression) comes back to the model; an
exception is a traceback it can fix, a timeout or a crash a note that the session was restarted. Files the code
writes in /mnt/data become container files, numbered for the model; a marker it writes becomes a
`container_file_citation` spanning a `sandbox:/mnt/data/...` link, as in OpenAI's answers. Open matplotlib
figures are `image` outputs (PNG data URLs).

`container` is an id, or `auto`: the container an earlier call of the chain or conversation used while it still
runs (found by services/builtin_tools.py), else a new one, created at the first call.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from parley.errors import ParleyError
from parley.ids import new_id
from parley.tools.base import BuiltinCall, Citations, ItemEmitter, Source, ToolOutcome, function_pair

Item = dict[str, Any]
NAME = "python"
_IMAGE_URL = "data:image/png;base64,"


class RunResult(Protocol):
    @property
    def logs(self) -> str: ...
    @property
    def logs_bytes(self) -> int: ...
    @property
    def images(self) -> Sequence[bytes]: ...
    @property
    def ended(self) -> str | None:
        """Why the session ended during the call (timeout, disk, exited); None if it lives on."""


class WrittenFile(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def bytes(self) -> int: ...


class Outcome(Protocol):
    @property
    def container_id(self) -> str: ...
    @property
    def result(self) -> RunResult: ...
    @property
    def files(self) -> Sequence[WrittenFile]: ...
    @property
    def notes(self) -> Sequence[str]: ...


class ContainerRunner(Protocol):
    """What the tool needs from the containers service."""

    async def run(self, project_id: str, container_id: str, code: str) -> Outcome: ...

    async def create_auto(self, project_id: str, file_ids: list[str], memory_limit: str | None) -> str:
        """A new container for this response; its id."""
        ...

    async def ensure_files(self, project_id: str, container_id: str, file_ids: list[str]) -> None:
        """Copy in those of the Files the container does not have yet."""
        ...


def function(data_path: str, timeout_s: float) -> dict[str, Any]:
    return {
        "name": NAME,
        "description": (
            "Run Python code in a persistent session (like a Jupyter notebook): variables, imports and files stay "
            "between calls. numpy, pandas and matplotlib are installed; there is no internet access. Print what "
            f"you need to see; the last expression's value is shown. The user's files, and files you write, are "
            f"in {data_path}. A call may run {timeout_s:g} seconds at most."
        ),
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "The Python code to run."}},
            "required": ["code"],
            "additionalProperties": False,
        },
    }


def parse_code(arguments: str) -> str:
    """The call's code: `{"code": ...}`, or (small models) the raw text when it is not such JSON."""
    try:
        data = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return arguments
    if isinstance(data, dict):
        code = data.get("code", data.get("input"))
        return code if isinstance(code, str) else ""
    return data if isinstance(data, str) else arguments


class CodeInterpreterTool:
    def __init__(self, project_id: str, runner: ContainerRunner, *, container_id: str | None,
                 auto_file_ids: list[str] | None = None, memory_limit: str | None = None,
                 data_path: str = "/mnt/data", timeout_s: float = 30.0, max_output_chars: int = 20_000) -> None:
        self.project_id = project_id
        self._runner = runner
        self.container_id = container_id
        self._auto_file_ids = auto_file_ids or []
        self._memory_limit = memory_limit
        self._data_path = data_path
        self._timeout_s = timeout_s
        self._max_chars = max_output_chars
        self._creating = asyncio.Lock()
        self._files_placed = not self._auto_file_ids

    @property
    def upstream_name(self) -> str:
        return NAME

    @property
    def runner(self) -> ContainerRunner:
        return self._runner

    def function(self) -> dict[str, Any]:
        return function(self._data_path, self._timeout_s)

    async def container(self) -> str:
        """The container calls run in (created at the first call for `auto`)."""
        async with self._creating:  # parallel calls of one turn share the new container
            if self.container_id is None:
                self.container_id = await self._runner.create_auto(self.project_id, self._auto_file_ids,
                                                                   self._memory_limit)
            elif not self._files_placed:  # an earlier turn's container: the tool entry's files join it
                await self._runner.ensure_files(self.project_id, self.container_id, self._auto_file_ids)
            self._files_placed = True
            return self.container_id

    async def run(self, call: BuiltinCall, emit: ItemEmitter, citations: Citations) -> ToolOutcome:
        code = parse_code(call.arguments)
        item: Item = {"id": new_id("ci"), "type": "code_interpreter_call", "status": "in_progress", "code": code,
                      "container_id": self.container_id or "", "outputs": None}
        try:
            item["container_id"] = await self.container()
        except ParleyError as err:
            return self.failed(call, f"no container could be made ({err.message})", item)
        emit.start(item)
        emit.progress("response.code_interpreter_call.in_progress")
        emit.progress("response.code_interpreter_call_code.delta", {"delta": code})
        emit.progress("response.code_interpreter_call_code.done", {"code": code})
        if not code.strip():
            return self.failed(call, "the call had no code (expected {\"code\": \"...\"})", item)
        item = {**item, "status": "interpreting"}
        emit.update(item)
        emit.progress("response.code_interpreter_call.interpreting")
        try:
            outcome = await self._runner.run(self.project_id, item["container_id"], code)
        except ParleyError as err:
            return self.failed(call, err.message, item)
        result = outcome.result
        outputs: list[dict[str, str]] = []
        if result.logs:
            outputs.append({"type": "logs", "logs": result.logs})
        outputs += [{"type": "image", "url": _IMAGE_URL + base64.b64encode(png).decode()} for png in result.images]
        status = "completed" if result.ended is None else "incomplete"
        item = {**item, "status": status, "outputs": outputs}
        emit.update(item)
        if status == "completed":
            emit.progress("response.code_interpreter_call.completed")
        markers = [citations.next_marker() for _ in outcome.files]
        sources = {marker: file_source(outcome.container_id, f.id, f.path)
                   for marker, f in zip(markers, outcome.files, strict=True)}
        return ToolOutcome(item, self.model_text(outcome, markers), sources)

    def failed(self, call: BuiltinCall, message: str, item: Item | None) -> ToolOutcome:
        base = item or {"id": new_id("ci"), "type": "code_interpreter_call", "code": parse_code(call.arguments),
                        "container_id": self.container_id or ""}
        failed = {**base, "status": "failed", "outputs": None}
        return ToolOutcome(failed, f"The code could not run: {message}.")

    def model_text(self, outcome: Outcome, markers: list[int]) -> str:
        result = outcome.result
        lines = list(outcome.notes)
        logs = clip(result.logs, self._max_chars)
        if result.logs_bytes > len(result.logs.encode()):
            logs += f"\n[output cut: {result.logs_bytes} bytes in all]"
        if logs:
            lines.append("Output:\n" + logs)
        lines += _ended(result, self._timeout_s)
        if result.images:
            lines.append(f"{len(result.images)} image(s) were shown to the user.")
        if outcome.files:
            listed = "\n".join(f"[{marker}] {f.path} ({f.bytes} bytes)"
                               for marker, f in zip(markers, outcome.files, strict=True))
            lines.append(f"Files written:\n{listed}\nTo give the user a file, cite it with its marker, e.g. "
                         f"[{markers[0]}].")
        if not lines:
            lines.append("The code ran without output.")
        return "\n\n".join(lines)


def _ended(result: RunResult, timeout_s: float) -> list[str]:
    if result.ended == "timeout":
        return [f"The code was stopped after {timeout_s:g} seconds (the time limit). The Python session was "
                "restarted: variables are gone; files written before the stop were kept."]
    if result.ended == "disk":
        return ["The code was stopped: the container's files went past the disk quota. The session was "
                "restarted and the files this call wrote were discarded."]
    if result.ended == "exited":
        return ["The Python process ended (the code exited, or ran out of memory or CPU time). The session was "
                "restarted: variables are gone; files in /mnt/data were kept."]
    return []


def clip(text: str, limit: int) -> str:
    """At most `limit` characters: the head and the tail, with a marker where text was cut."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"


def file_source(container_id: str, file_id: str, path: str) -> Source:
    """A citable container file: the marker becomes a Markdown link `[name](sandbox:/mnt/data/...)`."""
    name = path.rsplit("/", 1)[-1]
    link = path.replace(" ", "%20").replace("(", "%28").replace(")", "%29")
    return Source({"type": "container_file_citation", "container_id": container_id, "file_id": file_id,
                   "filename": name}, inline=f"[{name}](sandbox:{link})")


def replay(item: Item) -> list[Item]:
    """A stored code_interpreter_call as the function call the model made and what it was shown."""
    code = item.get("code") or ""
    outputs = item.get("outputs") or []
    if item.get("status") == "failed":
        output = "The code could not run."
    else:
        logs = "".join(o.get("logs", "") for o in outputs if isinstance(o, dict) and o.get("type") == "logs")
        images = sum(1 for o in outputs if isinstance(o, dict) and o.get("type") == "image")
        parts = ["Output:\n" + clip(logs, 20_000)] if logs else []
        if images:
            parts.append(f"{images} image(s) were shown to the user.")
        if item.get("status") == "incomplete":
            parts.append("The code was stopped before it finished; the session was restarted.")
        output = "\n\n".join(parts) or "The code ran without output."
    return function_pair(str(item.get("id") or new_id("ci")), NAME, orjson.dumps({"code": code}).decode(), output)
