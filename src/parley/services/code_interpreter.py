"""The `code_interpreter` tool of one request, set up from its `tools[i]` entry and the request's context.

Checked before anything goes upstream: the server can run code (a sandbox was found at start-up), a named
container exists in the project and still runs, `auto`'s `file_ids` exist. `auto` reuses the container of the
latest `code_interpreter_call` in the context (the `previous_response_id` chain, the conversation, or resent
history) while it still runs (its `file_ids` are copied in at the first call, those not there yet); otherwise
the tool creates one, with the files, at its first call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from parley.errors import InvalidRequest, ParleyError
from parley.schema.containers import CodeInterpreterParams, ShellContainerParams
from parley.schema.tools import BuiltinSpec
from parley.services.containers import ContainersService
from parley.services.files import FilesService
from parley.store.base import ContainerStore
from parley.tools.code_interpreter import CodeInterpreterTool
from parley.tools.shell_container import ShellContainerTool


class CodeInterpreterSetup:
    def __init__(self, containers: ContainersService, files: FilesService, store: ContainerStore) -> None:
        self._containers = containers
        self._files = files
        self._store = store

    async def tool(self, project_id: str, spec: BuiltinSpec, items: Sequence[dict[str, Any]]) -> CodeInterpreterTool:
        params = spec.params
        assert isinstance(params, CodeInterpreterParams)
        sandbox = await self._containers.ready()
        if not sandbox.available:
            raise InvalidRequest(f"code_interpreter cannot run on this server: no sandbox works on this host "
                                 f"({sandbox.reason}).", param=f"{spec.param}.type", code="unsupported_tool")
        cfg = self._containers.config
        data_path = "/mnt/data" if sandbox.kind == "bubblewrap" else "the current directory"
        common: dict[str, Any] = {"data_path": data_path, "timeout_s": cfg.cell_timeout_s,
                                  "max_output_chars": cfg.max_output_chars}
        container = params.container
        if isinstance(container, str):
            await self._containers.running(project_id, container, param=f"{spec.param}.container")
            return CodeInterpreterTool(project_id, self._containers, container_id=container, **common)
        file_ids = list(container.file_ids or ())
        for index, file_id in enumerate(file_ids):
            await self._files.get(project_id, file_id, param=f"{spec.param}.container.file_ids[{index}]")
        reused = await self._reusable(project_id, items)
        return CodeInterpreterTool(project_id, self._containers, container_id=reused, auto_file_ids=file_ids,
                                   memory_limit=container.memory_limit, **common)

    async def shell_tool(self, project_id: str, spec: BuiltinSpec,
                         items: Sequence[dict[str, Any]]) -> ShellContainerTool:
        """`shell` with a container environment: the same container choice, commands instead of code."""
        params = spec.params
        assert isinstance(params, ShellContainerParams)
        as_code = BuiltinSpec(spec.type, spec.kind, spec.index, params.as_code_interpreter(), spec.upstream_name)
        try:
            code = await self.tool(project_id, as_code, items)
        except ParleyError as err:  # the container's parameter is `environment` here
            container = f"{spec.param}.container"
            if err.param == container:
                err.param = f"{spec.param}.environment.container_id"
            elif err.param and err.param.startswith(container + "."):
                err.param = f"{spec.param}.environment." + err.param.removeprefix(container + ".")
            raise
        data_path = "/mnt/data" if (await self._containers.ready()).kind == "bubblewrap" else "the current directory"
        cfg = self._containers.config
        return ShellContainerTool(code, self._containers, data_path, cfg.cell_timeout_s, cfg.max_output_chars)

    async def _reusable(self, project_id: str, items: Sequence[dict[str, Any]]) -> str | None:
        """The container of the latest code_interpreter_call in the context, if it still runs."""
        seen: list[str] = []
        for item in reversed(items):
            container_id = item.get("container_id") if item.get("type") == "code_interpreter_call" else None
            environment = item.get("environment")
            if item.get("type") == "shell_call" and isinstance(environment, dict):  # a container's shell
                container_id = environment.get("container_id")
            if isinstance(container_id, str) and container_id and container_id not in seen:
                seen.append(container_id)
        running = await self._store.running_containers(seen[:8], int(self._containers.now()))
        for container_id in seen[:8]:
            if container_id in running and await self._store.get_container(project_id, container_id) is not None:
                return container_id
        return None
