"""The Anthropic Messages wire: POST {base}/messages (base: https://api.anthropic.com/v1)."""

from __future__ import annotations

from collections.abc import Mapping

from parley.providers.anthropic_events import AnthropicParser
from parley.providers.anthropic_request import KIND, AnthropicMessages, anthropic_body
from parley.providers.base import ModelCall
from parley.providers.native import WireRequest
from parley.providers.native_profiles import NativeProfile
from parley.providers.prefix_memo import PrefixMemo


class AnthropicWire:
    kind = KIND

    def __init__(self, memo_bytes: int = 0) -> None:
        # The translated messages of recent contexts: the next turn of a chain translates only its new items.
        self.memo: PrefixMemo[AnthropicMessages] = PrefixMemo(memo_bytes)

    def request(self, call: ModelCall, profile: NativeProfile) -> WireRequest:
        return WireRequest("/messages", anthropic_body(call, profile, self.memo))

    def parser(self, call: ModelCall, max_output_chars: int) -> AnthropicParser:
        return AnthropicParser(call, max_output_chars)

    def error_answer(self, status: int, body: bytes, headers: Mapping[str, str]) -> tuple[int, Mapping[str, str]]:
        # Rate limits (429) and overload (529) carry `retry-after`: https://docs.anthropic.com/en/api/rate-limits
        return status, headers
