"""Input items of the client-executed tools (computer, local shell, shell, apply_patch, tool_search) and a resent
image_generation_call, validated as the SDK types them: a client resending history or returning a tool's output
gets a 400 naming the field, never a malformed item stored and failing later turns."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from parley.schema.id_fields import BodyId


class _Keep(BaseModel):
    model_config = ConfigDict(extra="allow")


CallId = Annotated[BodyId, Field(min_length=1, max_length=64)]
Status = Literal["in_progress", "completed", "incomplete"]


class SafetyCheck(_Keep):
    id: str
    code: str | None = None
    message: str | None = None


class ComputerCall(_Keep):
    type: Literal["computer_call"]
    id: BodyId | None = None
    call_id: CallId
    pending_safety_checks: list[SafetyCheck] = Field(default_factory=list)
    status: Status = "completed"
    action: dict[str, Any] | None = None
    actions: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _has_action(self) -> ComputerCall:
        if self.action is None and not self.actions:
            raise ValueError("a computer_call needs 'action' or 'actions'")
        return self


class Screenshot(_Keep):
    type: Literal["computer_screenshot"]
    image_url: str | None = None
    file_id: BodyId | None = None


class ComputerCallOutput(_Keep):
    type: Literal["computer_call_output"]
    id: BodyId | None = None
    call_id: CallId
    output: Screenshot
    acknowledged_safety_checks: list[SafetyCheck] | None = None
    status: Literal["completed", "incomplete", "failed", "in_progress"] = "completed"


class LocalShellAction(_Keep):
    type: Literal["exec"]
    command: list[str]
    env: dict[str, str] = Field(default_factory=dict)
    timeout_ms: int | None = None
    user: str | None = None
    working_directory: str | None = None


class LocalShellCall(_Keep):
    type: Literal["local_shell_call"]
    id: BodyId | None = None
    call_id: CallId
    action: LocalShellAction
    status: Status = "completed"


class LocalShellCallOutput(_Keep):
    """The SDK's input type names the call by `id`; the Agents SDK sends `call_id`: either is accepted."""

    type: Literal["local_shell_call_output"]
    id: BodyId | None = None
    call_id: BodyId | None = None
    output: str
    status: Status | None = None

    @model_validator(mode="after")
    def _names_its_call(self) -> LocalShellCallOutput:
        if not self.id and not self.call_id:
            raise ValueError("a local_shell_call_output needs the call's id ('call_id' or 'id')")
        return self


class ShellAction(_Keep):
    commands: list[str]
    max_output_length: int | None = None
    timeout_ms: int | None = None


class ShellCall(_Keep):
    type: Literal["shell_call"]
    id: BodyId | None = None
    call_id: CallId
    action: ShellAction
    status: Status = "completed"


class ShellOutcome(_Keep):
    type: Literal["exit", "timeout"]
    exit_code: int | None = None


class ShellOutput(_Keep):
    stdout: str
    stderr: str
    outcome: ShellOutcome


class ShellCallOutput(_Keep):
    type: Literal["shell_call_output"]
    id: BodyId | None = None
    call_id: CallId
    output: list[ShellOutput]
    max_output_length: int | None = None
    status: Status = "completed"


class PatchOperation(_Keep):
    type: Literal["create_file", "update_file", "delete_file"]
    path: str
    diff: str | None = None


class ApplyPatchCall(_Keep):
    type: Literal["apply_patch_call"]
    id: BodyId | None = None
    call_id: CallId
    operation: PatchOperation
    status: Literal["in_progress", "completed"] = "completed"


class ApplyPatchCallOutput(_Keep):
    type: Literal["apply_patch_call_output"]
    id: BodyId | None = None
    call_id: CallId
    status: Literal["completed", "failed"]
    output: str | None = None


class ToolSearchCall(_Keep):
    type: Literal["tool_search_call"]
    id: BodyId | None = None
    call_id: CallId | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)
    execution: Literal["server", "client"] = "client"
    status: Status = "completed"


class ToolSearchOutput(_Keep):
    """The tools a search loaded: function, custom and namespace definitions (schema/tools.py checks them)."""

    type: Literal["tool_search_output"]
    id: BodyId | None = None
    call_id: CallId | None = None
    execution: Literal["server", "client"] = "client"
    status: Status = "completed"
    tools: list[dict[str, Any]] = Field(max_length=128)


class ImageGenerationCall(_Keep):
    """A generated image sent back (store: false history): its result must be base64, as a later edit reads it."""

    type: Literal["image_generation_call"]
    id: BodyId | None = None
    status: Literal["in_progress", "completed", "generating", "failed"]
    result: str | None = None

    @field_validator("result")
    @classmethod
    def _base64(cls, result: str | None) -> str | None:
        if result is not None:
            try:
                base64.b64decode(result, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("result must be the image in base64") from None
        return result


MODELS: Mapping[str, type[BaseModel]] = MappingProxyType({
    "computer_call": ComputerCall, "computer_call_output": ComputerCallOutput,
    "local_shell_call": LocalShellCall, "local_shell_call_output": LocalShellCallOutput,
    "shell_call": ShellCall, "shell_call_output": ShellCallOutput,
    "apply_patch_call": ApplyPatchCall, "apply_patch_call_output": ApplyPatchCallOutput,
    "tool_search_call": ToolSearchCall, "tool_search_output": ToolSearchOutput,
    "image_generation_call": ImageGenerationCall,
})
ID_PREFIX: Mapping[str, str] = MappingProxyType({
    "computer_call": "cu", "computer_call_output": "cuo", "local_shell_call": "lsh", "local_shell_call_output": "lsho",
    "shell_call": "sh", "shell_call_output": "sho", "apply_patch_call": "apc", "apply_patch_call_output": "apco",
    "tool_search_call": "tsc", "tool_search_output": "tso", "image_generation_call": "ig",
})
