"""`shell` with a container environment: the model's commands run in a container's sandbox on the server.

The same containers and sandboxed session as code_interpreter (tools/code_interpreter.py picks or creates the
container: a `container_reference`, or `container_auto` reusing the context's container while it runs). The
session's driver runs each command with `/bin/sh -c` in the container's data directory, one after the other, and
streams what they write (sandbox/inside/driver.py, `ShellRunner`). The call becomes two items: `shell_call`
(`action.commands`, `environment` naming the container; `response.shell_call_command.*` events), final once the
commands are sent, then `shell_call_output`, live while they run: `response.shell_call_output_content.delta` as
output arrives, `.done` as each command ends (stdout, stderr and an exit or timeout outcome).

Limits: each command runs at most the action's `timeout_ms` (default 20 s), all of them within the server's
`cell_timeout_s`, a command past either is killed (outcome `timeout`); each command keeps at most the action's
`max_output_length` characters of stdout and stderr together (default 10,000, at most the server's
`max_output_chars`): the output item says the limit in `max_output_length` and the model is told how much was
cut. Files the commands write become container files, as code_interpreter's do. A cancelled response (or a
client that went away) kills the session, and with it the command.
"""

from __future__ import annotations

from typing import Any, Protocol

from parley.errors import ParleyError
from parley.ids import new_id
from parley.sandbox.session import ShellEnded, ShellFrame, ShellOutput, ShellRequest
from parley.schema.client_tools import BadCall, call_item, function_for
from parley.tools.base import BuiltinCall, Citations, Following, ItemEmitter, ToolOutcome
from parley.tools.code_interpreter import CodeInterpreterTool, Outcome

Item = dict[str, Any]
NAME = "shell"
DEFAULT_TIMEOUT_MS = 20_000
DEFAULT_MAX_OUTPUT = 10_000
_DELTA = "response.shell_call_output_content.delta"
_DONE = "response.shell_call_output_content.done"


class ShellRunner(Protocol):
    """What the tool needs from the containers service."""

    async def shell(self, project_id: str, container_id: str, request: ShellRequest,
                    on_frame: Any) -> Outcome: ...


def function(data_path: str) -> dict[str, Any]:
    base = function_for("shell", {})
    return {**base, "name": NAME,
            "description": f"Run shell commands in a sandboxed Linux container with no internet access, one after "
                           f"the other, in {data_path} (files stay between calls). The result is each command's "
                           "stdout, stderr and exit code."}


class ShellContainerTool:
    def __init__(self, code: CodeInterpreterTool, runner: ShellRunner, data_path: str, max_timeout_s: float,
                 max_output_chars: int) -> None:
        self._code = code
        self._runner = runner
        self._data_path = data_path
        self._max_timeout_s = max_timeout_s
        self._max_output = max_output_chars

    @property
    def upstream_name(self) -> str:
        return NAME

    def function(self) -> dict[str, Any]:
        return function(self._data_path)

    async def run(self, call: BuiltinCall, emit: ItemEmitter, citations: Citations) -> ToolOutcome:
        try:
            item = call_item("shell", False, new_id("sh"), call.call_id, call.arguments)
        except BadCall as err:
            return self.failed(call, f"the call could not be read ({err})", None)
        for key in ("timeout_ms", "max_output_length"):  # 0 is the default (below); below it is no limit at all
            if item["action"].get(key, 0) < 0:
                return self.failed(call, f"the call could not be read ({key} is negative)", None)
        try:
            container_id = await self._code.container()
        except ParleyError as err:
            return self.failed(call, f"no container could be made ({err.message})", None)
        item = {**item, "status": "in_progress", "environment": {"type": "container_reference",
                                                                 "container_id": container_id}}
        action = item["action"]
        commands: list[str] = action["commands"]
        emit.start({**item, "action": {**action, "commands": []}})
        for index, command in enumerate(commands):
            base = {"command_index": index}
            emit.progress("response.shell_call_command.added", {**base, "command": ""})
            emit.progress("response.shell_call_command.delta", {**base, "delta": command})
            emit.progress("response.shell_call_command.done", {**base, "command": command})
        limit = min(action.get("max_output_length") or DEFAULT_MAX_OUTPUT, self._max_output)
        live = LiveOutput(call.call_id, len(commands), limit)
        live.emit = emit.follow({**item, "status": "completed"}, live.item())
        request = ShellRequest(commands, min(action.get("timeout_ms") or DEFAULT_TIMEOUT_MS,
                                             self._max_timeout_s * 1000) / 1000, self._max_timeout_s, limit)
        try:
            outcome = await self._runner.shell(self._code.project_id, container_id, request, live.frame)
        except ParleyError as err:
            return self.failed(call, err.message, item)
        result = outcome.result
        if result.ended is not None or not live.complete():
            ended = result.ended or "no result"
            notes = [*outcome.notes, f"The commands did not finish ({ended}); the shell session was restarted."]
            return ToolOutcome({**item, "status": "completed"}, live.model_text(notes),
                               more_items=(Following(live.item("incomplete")),))
        return ToolOutcome({**item, "status": "completed"}, live.model_text(outcome.notes),
                           more_items=(Following(live.item("completed")),))

    def failed(self, call: BuiltinCall, message: str, item: Item | None) -> ToolOutcome:
        base = item or {"id": new_id("sh"), "type": "shell_call", "call_id": call.call_id,
                        "action": {"commands": []}}
        return ToolOutcome({**base, "status": "incomplete"}, f"The commands could not run: {message}.")


class LiveOutput:
    """The `shell_call_output` item of one call, built from the session's frames as they come: each frame's
    output is a delta event (within the per-command `limit`, checked here too: the frames are untrusted), each
    command's end a `.done` event with its output."""

    def __init__(self, call_id: str, commands: int, limit: int) -> None:
        self.id = new_id("sho")
        self.call_id = call_id
        self.limit = limit
        self.emit: ItemEmitter | None = None
        self._out = [{"stdout": "", "stderr": ""} for _ in range(commands)]
        self._outcomes: list[dict[str, Any] | None] = [None] * commands
        self._written = [0] * commands  # bytes each command wrote, past the limit too

    def item(self, status: str = "in_progress") -> Item:
        output = [{**out, "outcome": outcome or {"type": "timeout"}}
                  for out, outcome in zip(self._out, self._outcomes, strict=True)
                  if outcome is not None or status != "in_progress"]
        return {"id": self.id, "type": "shell_call_output", "call_id": self.call_id, "status": status,
                "output": output, "max_output_length": self.limit}

    def complete(self) -> bool:
        return all(outcome is not None for outcome in self._outcomes)

    def frame(self, frame: ShellFrame) -> None:
        index = frame.command_index
        if index >= len(self._out) or self._outcomes[index] is not None or self.emit is None:
            return  # not a command of this call, or one that already ended
        out = self._out[index]
        if isinstance(frame, ShellOutput):
            room = self.limit - len(out["stdout"]) - len(out["stderr"])
            stdout = frame.stdout[:max(0, room)]
            stderr = frame.stderr[:max(0, room - len(stdout))]
            delta = {key: text for key, text in (("stdout", stdout), ("stderr", stderr)) if text}
            if delta:
                out["stdout"] += stdout
                out["stderr"] += stderr
                self.emit.progress(_DELTA, {"command_index": index, "delta": delta})
            return
        assert isinstance(frame, ShellEnded)
        for earlier in range(index):  # the driver runs commands in order: an earlier one without an end never ran
            if self._outcomes[earlier] is None:
                self._end(earlier, None, 0)
        self._end(index, frame.exit_code, frame.bytes)

    def _end(self, index: int, exit_code: int | None, written: int) -> None:
        assert self.emit is not None
        outcome = {"type": "timeout"} if exit_code is None else {"type": "exit", "exit_code": exit_code}
        self._outcomes[index] = outcome
        self._written[index] = written
        self.emit.progress(_DONE, {"command_index": index, "output": [{**self._out[index], "outcome": outcome}]})
        self.emit.update(self.item())

    def model_text(self, notes: Any = ()) -> str:
        parts = list(notes or ())
        for index, (out, outcome) in enumerate(zip(self._out, self._outcomes, strict=True)):
            if outcome is None:
                parts.append(f"command {index + 1} did not run")
                continue
            ending = f"exit code {outcome['exit_code']}" if outcome["type"] == "exit" else "timed out"
            kept = len(out["stdout"]) + len(out["stderr"])
            cut = (f"\n[output cut to its first {self.limit} characters; the command wrote {self._written[index]} "
                   "bytes]") if kept >= self.limit and self._written[index] > kept else ""
            parts.append(f"command {index + 1} ({ending})\nstdout:\n{out['stdout']}\nstderr:\n{out['stderr']}{cut}")
        return "\n\n".join(parts) or "(no output)"
