"""`shell` with a container environment: the model's commands run in a container's sandbox on the server.

The same containers and sandboxed session as code_interpreter (tools/code_interpreter.py picks or creates the
container: a `container_reference`, or `container_auto` reusing the context's container while it runs). The
session runs each command with `/bin/sh -c` in the container's data directory (one after the other, each with
its own time limit), and the call becomes two items: `shell_call` (`action.commands`, `environment` naming the
container; `response.shell_call_command.*` events) then `shell_call_output` (stdout, stderr and an exit or timeout
outcome per command; `response.shell_call_output_content.delta` / `.done`). The model is told each command's
result. Files the commands write become container files, as code_interpreter's do.
"""

from __future__ import annotations

import json
from typing import Any

from parley.errors import ParleyError
from parley.ids import new_id
from parley.schema.client_tools import BadCall, call_item, function_for
from parley.tools.base import BuiltinCall, Citations, Following, ItemEmitter, ToolOutcome
from parley.tools.code_interpreter import CodeInterpreterTool, clip

Item = dict[str, Any]
NAME = "shell"
_MARK = "\x1eparley-shell\x1e"
DEFAULT_TIMEOUT_MS = 20_000
DEFAULT_MAX_OUTPUT = 10_000

# Run inside the sandboxed Python session: each command through /bin/sh, results as one marked JSON line.
_SCRIPT = """
def _parley_shell(commands, timeout_s, limit, mark):
    import json, os, subprocess
    out = []
    for command in commands:
        try:
            done = subprocess.run(["/bin/sh", "-c", command], capture_output=True, timeout=timeout_s, cwd=os.getcwd())
            outcome = {"type": "exit", "exit_code": done.returncode}
            stdout, stderr = done.stdout, done.stderr
        except subprocess.TimeoutExpired as expired:
            outcome = {"type": "timeout"}
            stdout, stderr = expired.stdout or b"", expired.stderr or b""
        out.append({"stdout": stdout.decode("utf-8", "replace")[-limit:],
                    "stderr": stderr.decode("utf-8", "replace")[-limit:], "outcome": outcome})
    print(mark + json.dumps(out))
"""


def function(data_path: str) -> dict[str, Any]:
    base = function_for("shell", {})
    return {**base, "name": NAME,
            "description": f"Run shell commands in a sandboxed Linux container with no internet access, one after "
                           f"the other, in {data_path} (files stay between calls). The result is each command's "
                           "stdout, stderr and exit code."}


class ShellContainerTool:
    def __init__(self, code: CodeInterpreterTool, data_path: str, max_timeout_s: float) -> None:
        self._code = code
        self._data_path = data_path
        self._max_timeout_s = max_timeout_s

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
        emit.update(item)
        timeout_s = min(action.get("timeout_ms") or DEFAULT_TIMEOUT_MS, self._max_timeout_s * 1000) / 1000
        limit = action.get("max_output_length") or DEFAULT_MAX_OUTPUT
        per_command = max(0.1, timeout_s / max(1, len(commands)))
        code = (_SCRIPT + f"\n_parley_shell({json.dumps(commands)}, {per_command!r}, {int(limit)}, "
                f"{json.dumps(_MARK)})\n")
        try:
            outcome = await self._code.runner.run(self._code.project_id, container_id, code)
        except ParleyError as err:
            return self.failed(call, err.message, item)
        logs = outcome.result.logs
        marked = logs.rfind(_MARK)
        if marked < 0:
            ended = outcome.result.ended or "no result"
            return self.failed(call, f"the commands did not finish ({ended}): {clip(logs, 2000)}", item)
        outputs = json.loads(logs[marked + len(_MARK):].splitlines()[0])
        done: Item = {**item, "status": "completed"}
        output: Item = {"id": new_id("sho"), "type": "shell_call_output", "call_id": call.call_id,
                        "status": "completed", "output": outputs, "max_output_length": limit}
        events: list[tuple[str, dict[str, Any]]] = []
        for index, out in enumerate(outputs):
            delta = {key: out[key] for key in ("stdout", "stderr") if out[key]}
            if delta:
                events.append(("response.shell_call_output_content.delta", {"command_index": index, "delta": delta}))
        events.append(("response.shell_call_output_content.done", {"command_index": max(0, len(outputs) - 1),
                                                                   "output": outputs}))
        return ToolOutcome(done, model_text(outputs, outcome.notes),
                           more_items=(Following(output, tuple(events), {**output, "status": "in_progress",
                                                                         "output": []}),))

    def failed(self, call: BuiltinCall, message: str, item: Item | None) -> ToolOutcome:
        base = item or {"id": new_id("sh"), "type": "shell_call", "call_id": call.call_id,
                        "action": {"commands": []}}
        return ToolOutcome({**base, "status": "incomplete"}, f"The commands could not run: {message}.")


def model_text(outputs: list[dict[str, Any]], notes: Any = ()) -> str:
    parts = list(notes or ())
    for index, out in enumerate(outputs):
        outcome = out.get("outcome") or {}
        ending = f"exit code {outcome.get('exit_code')}" if outcome.get("type") == "exit" else "timed out"
        parts.append(f"command {index + 1} ({ending})\nstdout:\n{out.get('stdout', '')}\nstderr:\n"
                     f"{out.get('stderr', '')}")
    return "\n\n".join(parts) or "(no output)"
