"""Credential masking for text an upstream sent: its error messages reach a client, a stored response or a log
line only after anything that looks like a secret is replaced by `****`."""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "****"

# What credentials look like in error texts (upstreams echo the key they were sent; proxies quote headers,
# URLs and their configuration). Over-masking an error message costs little; a leaked key costs a lot.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # An Authorization value: "Bearer <token>", "Basic <token>".
    (re.compile(r"\b(Bearer|Basic)(\s+)[^\s\"',;)\]}]+", re.IGNORECASE), r"\1\2" + MASK),
    # Key-shaped tokens: OpenAI/Anthropic/DeepSeek `sk-…` (also partly starred, as OpenAI echoes them), and
    # other providers' prefixes (Groq gsk_, xAI xai-, Hugging Face hf_, GitHub ghp_, GitLab glpat-, Google AIza).
    (re.compile(r"\b(?:sk|pk|rk|gsk|xai|hf|ghp|gho|ghs|glpat|AIza)[-_][A-Za-z0-9_\-*]{3,}"), MASK),
    # A partly starred token of any other shape: "abcd1234****wxyz".
    (re.compile(r"[A-Za-z0-9_\-]{2,}\*{3,}[A-Za-z0-9_\-]*"), MASK),
    # Secret-named fields: `"api_key": "…"`, `api_key: …`, `x-api-key: …`, `password=…` (quoted or escaped).
    (re.compile(r"\b((?:x-)?api[_-]?key|apikey|access[_-]?token|auth[_-]?token|token|secret|password"
                r"|authorization)([\"'\\]*\s*[:=]\s*[\"'\\]*)(?!(?:Bearer|Basic)\s)[^\s\"'\\,&;}<>]+", re.IGNORECASE),
     r"\1\2" + MASK),
    # Query values: `?key=…`, `&sig=…`.
    (re.compile(r"(?i)([?&;](?:key|sig|signature)=)[^&\s\"'<>]+"), r"\1" + MASK),
)


class SecretMasker:
    """Masks the configured secrets (exact text) and anything shaped like a credential."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        # Longest first, so a key containing another is masked whole. Strings shorter than 4 characters
        # are not secrets worth masking (and would mask ordinary words).
        self._secrets = tuple(sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True))

    def with_secrets(self, *secrets: str | None) -> SecretMasker:
        return SecretMasker((*self._secrets, *secrets))

    def mask(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text
