"""The Gemini wire: POST {base}/models/{model}:generateContent, or :streamGenerateContent?alt=sse when streaming
(base: https://generativelanguage.googleapis.com/v1beta)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from parley.providers.base import ModelCall
from parley.providers.gemini_events import GeminiParser
from parley.providers.gemini_request import KIND, GeminiContents, gemini_body, gemini_path
from parley.providers.native import WireRequest
from parley.providers.native_profiles import NativeProfile
from parley.providers.prefix_memo import PrefixMemo

# https://ai.google.dev/gemini-api/docs/troubleshooting: a 429 says when to retry in a google.rpc.RetryInfo
# detail ("retryDelay": "7s"), not in a header; a refused key is a 400 whose details name API_KEY_INVALID.
_RETRY_DELAY = re.compile(rb'"retryDelay"\s*:\s*"(\d+)(?:\.\d+)?s"')


class GeminiWire:
    kind = KIND

    def __init__(self, memo_bytes: int = 0) -> None:
        # The translated contents of recent contexts: the next turn of a chain translates only its new items.
        self.memo: PrefixMemo[GeminiContents] = PrefixMemo(memo_bytes)

    def request(self, call: ModelCall, profile: NativeProfile) -> WireRequest:
        return WireRequest(gemini_path(call), gemini_body(call, profile, self.memo))

    def parser(self, call: ModelCall, max_output_chars: int) -> GeminiParser:
        return GeminiParser(call, max_output_chars)

    def error_answer(self, status: int, body: bytes, headers: Mapping[str, str]) -> tuple[int, Mapping[str, str]]:
        if status == 400 and b"API_KEY_INVALID" in body:
            return 401, headers  # the server's key was refused: its configuration, not the request
        delay = _RETRY_DELAY.search(body)
        if status == 429 and delay is not None and "retry-after" not in headers:
            return status, {**headers, "retry-after": delay.group(1).decode()}
        return status, headers
