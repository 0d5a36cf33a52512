"""Request bodies of the Containers API (api-surface.md §1.6) and the `code_interpreter` tool entry (§4)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, field_validator

from parley.schema.id_fields import BodyId, NameText

MemoryLimit = Literal["1g", "4g", "16g", "64g"]
MEMORY_BYTES: dict[str, int] = {"1g": 1 << 30, "4g": 4 << 30, "16g": 16 << 30, "64g": 64 << 30}
FileIds = Annotated[list[Annotated[BodyId, StringConstraints(min_length=1, max_length=128)]], Field(max_length=100)]


class ExpiresAfter(BaseModel):
    model_config = ConfigDict(extra="ignore")
    anchor: Literal["last_active_at"]
    minutes: StrictInt = Field(ge=1, le=1440)


class NetworkPolicy(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["disabled", "allowlist"]
    allowed_domains: list[str] | None = None

    @field_validator("type")
    @classmethod
    def _disabled(cls, kind: str) -> str:
        if kind != "disabled":
            raise ValueError("only network_policy {'type': 'disabled'} is supported: sandboxed code has no network")
        return kind


class CreateContainerRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown top-level fields: the server's FieldPolicy decides
    name: Annotated[NameText, StringConstraints(min_length=1, max_length=256)]
    expires_after: ExpiresAfter | None = None
    file_ids: FileIds | None = None
    memory_limit: MemoryLimit | None = None
    network_policy: NetworkPolicy | None = None
    skills: list[dict[str, Any]] | None = Field(default=None, max_length=0,
                                                description="skills are not supported by this server")


class CreateContainerFileRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    file_id: Annotated[BodyId, StringConstraints(min_length=1, max_length=128)]


class AutoContainer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["auto"]
    file_ids: FileIds | None = None
    memory_limit: MemoryLimit | None = None
    network_policy: NetworkPolicy | None = None


class CodeInterpreterParams(BaseModel):
    """`{"type": "code_interpreter", "container": "cntr_..." | {"type": "auto", ...}}`."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["code_interpreter"]
    container: Annotated[BodyId, StringConstraints(min_length=1, max_length=128)] | AutoContainer


class ShellContainerAuto(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["container_auto"]
    file_ids: FileIds | None = None
    memory_limit: MemoryLimit | None = None
    network_policy: NetworkPolicy | None = None
    skills: list[dict[str, Any]] | None = Field(default=None, max_length=0,
                                                description="skills are not supported by this server")


class ShellContainerReference(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["container_reference"]
    container_id: Annotated[BodyId, StringConstraints(min_length=1, max_length=128)]


class ShellContainerParams(BaseModel):
    """`{"type": "shell", "environment": {"type": "container_auto", ...} | {"type": "container_reference", ...}}`:
    the commands run in a container's sandbox (tools/shell_container.py), like code_interpreter's code."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["shell"]
    environment: Annotated[ShellContainerAuto | ShellContainerReference, Field(discriminator="type")]

    def as_code_interpreter(self) -> CodeInterpreterParams:
        """The same container choice in code_interpreter's terms."""
        env = self.environment
        if isinstance(env, ShellContainerReference):
            return CodeInterpreterParams(type="code_interpreter", container=env.container_id)
        return CodeInterpreterParams(type="code_interpreter", container=AutoContainer(
            type="auto", file_ids=env.file_ids, memory_limit=env.memory_limit, network_policy=env.network_policy))
