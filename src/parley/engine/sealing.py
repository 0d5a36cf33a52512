"""Sealed reasoning: `reasoning.encrypted_content` for stateless clients (store:false, e.g. Codex).

The reasoning text (and the upstream's own state for it: a signature, its own encrypted reasoning) is
encrypted with AES-256-GCM under a server key and bound to the project (as
associated data), so it can only be opened by this deployment for the same project. Several keys may be
configured: the first seals, all are tried when opening (key rotation). The same sealing carries
compaction summaries (services/compaction.py); the associated data also names the purpose, so a token
made for one purpose never opens as the other.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from parley.errors import InvalidRequest

_PREFIX = "prl1."
_AAD = b"parley/reasoning/v1/"
Item = dict[str, Any]


def new_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


class ReasoningSealer:
    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("at least one reasoning key is needed")
        self._keys: list[tuple[bytes, AESGCM]] = []
        for key in keys:
            raw = base64.urlsafe_b64decode(key)
            if len(raw) != 32:
                raise ValueError("reasoning keys must be 32 bytes, base64url-encoded")
            self._keys.append((hashlib.sha256(raw).digest()[:4], AESGCM(raw)))

    def seal(self, item: Item, project_id: str) -> str:
        data = {"content": item.get("content") or [], "summary": item.get("summary") or []}
        if item.get("upstream") is not None:  # the upstream's own state (providers/base.py ReasoningState)
            data["upstream"] = item["upstream"]
        return self.seal_data(data, project_id, _AAD)

    def open(self, token: str, project_id: str, param: str) -> dict[str, Any]:
        """The sealed {content, summary[, upstream]}; a tampered, foreign or malformed token is a 400 naming
        `param`."""
        return self.open_data(token, project_id, param, _AAD, "reasoning content")

    def seal_data(self, data: dict[str, Any], project_id: str, purpose: bytes) -> str:
        """Seal any JSON object for `project_id`; `purpose` (e.g. b"parley/compaction/v1/") binds its use."""
        key_id, aead = self._keys[0]
        nonce = os.urandom(12)
        sealed = aead.encrypt(nonce, orjson.dumps(data), purpose + project_id.encode())
        return _PREFIX + base64.urlsafe_b64encode(key_id + nonce + sealed).decode()

    def open_data(self, token: str, project_id: str, param: str, purpose: bytes, what: str) -> dict[str, Any]:
        """What `seal_data` sealed; a tampered, foreign or malformed token is a 400 naming `param`."""
        invalid = InvalidRequest(
            f"The encrypted {what} could not be verified; it was altered or made by another "
            "server or project.", param=param, code="invalid_encrypted_content",
        )
        if not token.startswith(_PREFIX):
            raise invalid
        try:
            blob = base64.urlsafe_b64decode(token[len(_PREFIX):])
        except ValueError:
            raise invalid from None
        key_id, nonce, sealed = blob[:4], blob[4:16], blob[16:]
        for candidate_id, aead in self._keys:
            if candidate_id != key_id:
                continue
            try:
                opened: dict[str, Any] = orjson.loads(aead.decrypt(nonce, sealed, purpose + project_id.encode()))
            except InvalidTag:
                break
            return opened
        raise invalid
