"""The prompts use case: manage a project's prompt templates, and apply one to a create request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from parley.errors import NotFound
from parley.schema.items import Item
from parley.schema.prompts import PromptBody, parse_variables, render, variables_echo
from parley.schema.requests import CreateResponseRequest, PromptRef
from parley.store.base import PageQuery, PromptRecord, PromptStore


def prompt_object(record: PromptRecord) -> dict[str, Any]:
    body = record.body
    return {
        "id": record.id,
        "object": "prompt",
        "version": str(record.version),
        "created_at": record.created_at,
        "instructions": body.get("instructions"),
        "input": body.get("input"),
        "model": body.get("model"),
        "metadata": body.get("metadata") or {},
    }


@dataclass(frozen=True, slots=True)
class PromptList:
    data: list[dict[str, Any]]
    has_more: bool


class PromptsService:
    def __init__(self, store: PromptStore) -> None:
        self._store = store

    # -- admin -----------------------------------------------------------------------------------

    async def create(self, project_id: str, body: PromptBody) -> dict[str, Any]:
        return prompt_object(await self._store.create_prompt(project_id, body.template()))

    async def add_version(self, project_id: str, prompt_id: str, body: PromptBody) -> dict[str, Any]:
        """Each version is a whole template: nothing is inherited from the previous one."""
        record = await self._store.add_prompt_version(project_id, prompt_id, body.template())
        if record is None:
            raise _prompt_not_found(prompt_id, "prompt_id")
        return prompt_object(record)

    async def retrieve(self, project_id: str, prompt_id: str, version: str | None = None) -> dict[str, Any]:
        return prompt_object(await self._find(project_id, prompt_id, version, ("prompt_id", "version")))

    async def list_latest(self, project_id: str, page: PageQuery) -> PromptList:
        """The latest version of every prompt of the project."""
        result = await self._store.list_prompts(project_id, page)
        return PromptList([prompt_object(r) for r in result.data], result.has_more)

    async def delete(self, project_id: str, prompt_id: str) -> dict[str, Any]:
        if not await self._store.delete_prompt(project_id, prompt_id):
            raise _prompt_not_found(prompt_id, "prompt_id")
        return {"id": prompt_id, "object": "prompt.deleted", "deleted": True}

    # -- use in POST /v1/responses ---------------------------------------------------------------

    async def apply(self, project_id: str, req: CreateResponseRequest) -> tuple[CreateResponseRequest, list[Item]]:
        """Render `req.prompt`: returns the request as the model sees it and the template's input items.

        The template's instructions come first and the request's own `instructions` follow them; the
        template's items go before the request's `input`; its model applies when the request has none.
        The echoed `prompt` names the version actually used.
        """
        ref = req.prompt
        assert ref is not None
        variables = parse_variables(ref.variables)
        record = await self._find(project_id, ref.id, ref.version, ("prompt.id", "prompt.version"))
        rendered = render(record.body, variables)
        instructions = "\n\n".join(t for t in (rendered.instructions, req.instructions) if t) or None
        echo = PromptRef(id=record.id, version=str(record.version), variables=variables_echo(ref.variables))
        effective = req.model_copy(
            update={"instructions": instructions, "model": req.model or rendered.model, "prompt": echo}
        )
        return effective, rendered.input_items

    async def _find(
        self, project_id: str, prompt_id: str, version: str | None, params: tuple[str, str]
    ) -> PromptRecord:
        number: int | None = None
        if version is not None:
            # Not a version number (or beyond any INTEGER column): looked up as -1, which never exists.
            number = int(version) if version.isascii() and version.isdigit() and len(version) <= 9 else -1
        record = await self._store.get_prompt(project_id, prompt_id, number)
        if record is not None:
            return record
        if number is not None and await self._store.get_prompt(project_id, prompt_id) is not None:
            raise NotFound(f"Prompt '{prompt_id}' has no version '{version}'.", param=params[1])
        raise _prompt_not_found(prompt_id, params[0])


def _prompt_not_found(prompt_id: str, param: str) -> NotFound:
    return NotFound(f"Prompt with id '{prompt_id}' not found.", param=param)
