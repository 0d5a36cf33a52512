"""The ids a request body names (`previous_response_id`, `conversation`, item ids, file ids, ...): never with a NUL
character (U+0000). No id holds one and PostgreSQL refuses one in a query parameter; refused here, it is a 400
naming the parameter on every database, before anything is looked up or stored (api-surface.md §7, errors).
The same holds for the names and descriptions Parley keeps in text columns of their own (NameText)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise PydanticCustomError("invalid_id", "an id cannot contain a NUL character (U+0000)")
    return value


# A string naming an object or item by id, in any request body.
BodyId = Annotated[str, AfterValidator(_no_nul)]


def _no_nul_in_name(value: str) -> str:
    if "\x00" in value:
        raise PydanticCustomError("invalid_name", "a name or description cannot contain a NUL character (U+0000)")
    return value


# A name or description kept in a text column (a vector store's, a container's, a key's): SQLite would store a NUL
# and PostgreSQL refuse it, so neither does.
NameText = Annotated[str, AfterValidator(_no_nul_in_name)]
