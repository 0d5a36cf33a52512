"""Client-executed tools with their own item types: computer use, local shell, shell, apply_patch, tool_search
(`execution: "client"`).

The model is offered each as a function whose schema Parley chooses; its call becomes the tool's item
(`computer_call`, `local_shell_call`, `shell_call`, `apply_patch_call`, with the SDK's fields), the client runs
it and sends back the matching `*_output` item, and on later turns both go upstream again as the function call
and its output (`replay`). No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal

import orjson

from parley.errors import InvalidRequest

Item = dict[str, Any]
ClientToolKind = Literal["computer", "local_shell", "shell", "apply_patch", "tool_search"]

# tool type in `tools` -> the tool it is (computer_use_preview is the preview of `computer`).
TOOL_KINDS: Mapping[str, ClientToolKind] = MappingProxyType({
    "computer": "computer", "computer_use_preview": "computer", "local_shell": "local_shell", "shell": "shell",
    "apply_patch": "apply_patch",
})
CALL_TYPES: Mapping[ClientToolKind, str] = MappingProxyType({
    "computer": "computer_call", "local_shell": "local_shell_call", "shell": "shell_call",
    "apply_patch": "apply_patch_call", "tool_search": "tool_search_call",
})
# tool_search with `execution: "client"` (schema/tools.py picks it; the server-run search is tools/tool_search.py).
TOOL_SEARCH_ARGUMENTS: dict[str, Any] = {
    "type": "object",
    "properties": {"query": {"type": "string", "description": "What the tools you need do, in a few words."}},
    "required": ["query"],
}

_POINT = {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}, "required": ["x", "y"]}
_ACTION = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": ["click", "double_click", "drag", "keypress", "move", "screenshot",
                                           "scroll", "type", "wait"]},
        "x": {"type": "integer"}, "y": {"type": "integer"},
        "button": {"type": "string", "enum": ["left", "right", "wheel", "back", "forward"]},
        "keys": {"type": "array", "items": {"type": "string"}},
        "path": {"type": "array", "items": _POINT},
        "scroll_x": {"type": "integer"}, "scroll_y": {"type": "integer"},
        "text": {"type": "string"},
    },
    "required": ["type"],
}


def _function(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"name": name, "description": description, "strict": None,
            "parameters": {"type": "object", "properties": properties, "required": required}}


def function_for(kind: ClientToolKind, params: dict[str, Any]) -> dict[str, Any]:
    """The function the model is offered for a declared client tool."""
    if kind == "computer":
        screen = ""
        if params.get("display_width") and params.get("display_height"):
            screen = (f" The screen is {params['display_width']}x{params['display_height']} pixels"
                      f" ({params.get('environment', 'unknown')} environment).")
        return _function("computer", "Operate the user's computer: click, type, scroll, press keys, move, drag, "
                         "take a screenshot or wait. The result is a screenshot." + screen,
                         {"actions": {"type": "array", "items": _ACTION, "minItems": 1}}, ["actions"])
    if kind == "local_shell":
        return _function("local_shell", "Run a command on the user's machine; the result is its output.", {
            "command": {"type": "array", "items": {"type": "string"}, "description": "argv, e.g. [\"ls\", \"-l\"]"},
            "env": {"type": "object", "additionalProperties": {"type": "string"}},
            "timeout_ms": {"type": "integer"}, "working_directory": {"type": "string"},
        }, ["command"])
    if kind == "shell":
        return _function("shell", "Run shell commands on the user's machine; the result is each command's "
                         "stdout, stderr and exit code.", {
                             "commands": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                             "timeout_ms": {"type": "integer"}, "max_output_length": {"type": "integer"},
                         }, ["commands"])
    if kind == "tool_search":
        return {"name": "tool_search", "strict": None,
                "description": params.get("description") or "Search for more tools by what they do; the tools "
                "found can be called on the next turn.",
                "parameters": params.get("parameters") or TOOL_SEARCH_ARGUMENTS}
    return _function("apply_patch", "Create, update or delete a file in the user's workspace. For create_file and "
                     "update_file give a V4A diff.", {
                         "type": {"type": "string", "enum": ["create_file", "update_file", "delete_file"]},
                         "path": {"type": "string"}, "diff": {"type": "string"},
                     }, ["type", "path"])


class BadCall(ValueError):
    """The model's arguments cannot make the tool's item."""


def _args(arguments: str) -> dict[str, Any]:
    try:
        data = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        raise BadCall("its arguments are not JSON") from None
    if not isinstance(data, dict):
        raise BadCall("its arguments are not a JSON object")
    return data


_INT64 = 2**63 - 1  # JSON numbers past it cannot be written back (orjson), in the stream or the store


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadCall(f"{what} is not a number")
    if not -_INT64 <= value <= _INT64:
        raise BadCall(f"{what} is out of range")
    return int(value)


def _strings(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadCall(f"{what} is not a list of strings")
    return value


def _action(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise BadCall("an action has no type")
    kind = raw["type"]
    out: dict[str, Any] = {"type": kind}
    if kind in ("click", "double_click", "move"):
        out["x"], out["y"] = _int(raw.get("x"), "x"), _int(raw.get("y"), "y")
        if kind == "click":
            button = raw.get("button", "left")
            out["button"] = button if button in ("left", "right", "wheel", "back", "forward") else "left"
    elif kind == "scroll":
        for key in ("x", "y", "scroll_x", "scroll_y"):
            out[key] = _int(raw.get(key, 0), key)
    elif kind == "drag":
        path = raw.get("path")
        if not isinstance(path, list) or not path:
            raise BadCall("a drag has no path")
        out["path"] = [{"x": _int(p.get("x") if isinstance(p, dict) else None, "x"),
                        "y": _int(p.get("y") if isinstance(p, dict) else None, "y")} for p in path]
    elif kind == "keypress":
        out["keys"] = _strings(raw.get("keys"), "keys")
    elif kind == "type":
        if not isinstance(raw.get("text"), str):
            raise BadCall("a type action has no text")
        out["text"] = raw["text"]
    elif kind not in ("screenshot", "wait"):
        raise BadCall(f"'{kind}' is not a computer action")
    if kind in ("click", "double_click", "drag", "move", "scroll") and raw.get("keys") is not None:
        out["keys"] = _strings(raw["keys"], "keys")
    return out


def call_item(kind: ClientToolKind, preview: bool, item_id: str, call_id: str, arguments: str) -> Item:
    """The tool's item for one call of its function (BadCall when the arguments cannot make one)."""
    args = _args(arguments)
    base: Item = {"id": item_id, "type": CALL_TYPES[kind], "call_id": call_id, "status": "completed"}
    if kind == "computer":
        raw = args.get("actions", [args["action"]] if "action" in args else None)
        if not isinstance(raw, list) or not raw:
            raise BadCall("no actions")
        actions = [_action(a) for a in raw]
        # computer_use_preview calls carry one `action`; the GA computer tool batches `actions`.
        shape = {"action": actions[0]} if preview else {"actions": actions}
        return {**base, "pending_safety_checks": [], **shape}
    if kind == "local_shell":
        command = args.get("command")
        if isinstance(command, str):
            command = [command]
        action: dict[str, Any] = {"type": "exec", "command": _strings(command, "command"),
                                  "env": {str(k): str(v) for k, v in (args.get("env") or {}).items()}}
        for key in ("timeout_ms",):
            if args.get(key) is not None:
                action[key] = _int(args[key], key)
        if isinstance(args.get("working_directory"), str):
            action["working_directory"] = args["working_directory"]
        return {**base, "action": action}
    if kind == "tool_search":
        return {**base, "arguments": args, "execution": "client"}
    if kind == "shell":
        commands = args.get("commands")
        if isinstance(commands, str):
            commands = [commands]
        shell: dict[str, Any] = {"commands": _strings(commands, "commands")}
        for key in ("timeout_ms", "max_output_length"):
            if args.get(key) is not None:
                shell[key] = _int(args[key], key)
        return {**base, "action": shell, "environment": {"type": "local"}}
    operation = args.get("operation", args)
    op_type = operation.get("type") if isinstance(operation, dict) else None
    if op_type not in ("create_file", "update_file", "delete_file") or not isinstance(operation.get("path"), str):
        raise BadCall("no operation with a type and a path")
    op: dict[str, Any] = {"type": op_type, "path": operation["path"]}
    if op_type != "delete_file":
        if not isinstance(operation.get("diff"), str):
            raise BadCall(f"{op_type} has no diff")
        op["diff"] = operation["diff"]
    return {**base, "operation": op}


# -- replay: stored items -> function calls and outputs for the upstream -------------------------------------------

def _call(item: Item, name: str, arguments: dict[str, Any]) -> list[Item]:
    return [{"type": "function_call", "id": item["id"], "call_id": item["call_id"], "name": name,
             "arguments": orjson.dumps(arguments).decode(), "status": "completed"}]


def _output(item: Item, text: str) -> list[Item]:
    return [{"type": "function_call_output", "id": item["id"], "call_id": _call_id(item), "output": text,
             "status": "completed"}]


def _call_id(item: Item) -> str:
    # local_shell_call_output names its call by `id` in the SDK's input type; the Agents SDK sends `call_id`.
    return str(item.get("call_id") or item["id"])


def _replay_computer_call(item: Item) -> list[Item]:
    actions = item.get("actions") or ([item["action"]] if item.get("action") else [])
    return _call(item, "computer", {"actions": actions})


def _replay_computer_output(item: Item) -> list[Item]:
    screenshot = item.get("output") or {}
    url, file_id = screenshot.get("image_url"), screenshot.get("file_id")
    if url:
        part: dict[str, Any] = {"type": "input_image", "image_url": url, "detail": "auto"}
    elif file_id:  # a File: read like any input_image by file_id (services/file_inputs.py)
        part = {"type": "input_image", "file_id": file_id, "detail": "auto"}
    else:
        raise InvalidRequest("A computer_call_output screenshot needs an image_url or a file_id.", param="input")
    image = {"type": "message", "id": item["id"] + "_screenshot", "role": "user", "status": "completed",
             "content": [part]}
    return [*_output(item, "Done. The screenshot taken after the action follows."), image]


def _replay_shell_output(item: Item) -> list[Item]:
    parts = []
    for index, out in enumerate(item.get("output") or ()):
        outcome = out.get("outcome") or {}
        ending = (f"exit code {outcome.get('exit_code')}" if outcome.get("type") == "exit" else "timed out")
        parts.append(f"command {index + 1} ({ending})\nstdout:\n{out.get('stdout', '')}\nstderr:\n"
                     f"{out.get('stderr', '')}")
    return _output(item, "\n\n".join(parts) or "(no output)")


def tool_search_text(tools: list[Any]) -> str:
    """What the model is told a tool search loaded (also for the server's own search, tools/tool_search.py)."""
    lines: list[str] = []
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        if tool.get("type") == "namespace":
            for member in tool.get("tools") or ():
                if isinstance(member, dict):
                    lines.append(f"- {tool.get('name')}__{member.get('name')}: {member.get('description') or ''}")
        else:
            lines.append(f"- {tool.get('name')}: {tool.get('description') or ''}")
    if not lines:
        return "No tools matched."
    return "These tools are loaded and can be called now:\n" + "\n".join(line.rstrip(": ") for line in lines)


def _replay_patch_output(item: Item) -> list[Item]:
    text = f"The patch {'was applied' if item.get('status') == 'completed' else 'failed'}."
    if item.get("output"):
        text += f"\n{item['output']}"
    return _output(item, text)


REPLAYS: Mapping[str, Callable[[Item], list[Item]]] = MappingProxyType({
    "computer_call": _replay_computer_call,
    "computer_call_output": _replay_computer_output,
    "local_shell_call": lambda item: _call(item, "local_shell", {
        k: v for k, v in (item.get("action") or {}).items() if k != "type"}),
    "local_shell_call_output": lambda item: _output(item, str(item.get("output", ""))),
    "shell_call": lambda item: _call(item, "shell", dict(item.get("action") or {})),
    "shell_call_output": _replay_shell_output,
    "apply_patch_call": lambda item: _call(item, "apply_patch", dict(item.get("operation") or {})),
    "apply_patch_call_output": _replay_patch_output,
    # tool_search (both executions): the search as a call of `tool_search`, what it loaded as its output.
    "tool_search_call": lambda item: _call({**item, "call_id": _call_id(item)}, "tool_search",
                                           dict(item.get("arguments") or {})),
    "tool_search_output": lambda item: _output(item, tool_search_text(list(item.get("tools") or ()))),
})
