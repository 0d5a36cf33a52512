"""The native Responses wire (OpenAI, Azure OpenAI, any server exposing `/v1/responses`): POST {base}/responses."""

from __future__ import annotations

from collections.abc import Mapping

from parley.providers.base import ModelCall
from parley.providers.native import WireRequest
from parley.providers.native_profiles import NativeProfile
from parley.providers.prefix_memo import PrefixMemo
from parley.providers.responses_events import ResponsesParser
from parley.providers.responses_request import KIND, ResponsesInput, responses_body


class ResponsesWire:
    kind = KIND

    def __init__(self, memo_bytes: int = 0) -> None:
        # The translated input of recent contexts: the next turn of a chain translates only its new items.
        self.memo: PrefixMemo[ResponsesInput] = PrefixMemo(memo_bytes)

    def request(self, call: ModelCall, profile: NativeProfile) -> WireRequest:
        path = "/responses" if profile.api_version is None else f"/responses?api-version={profile.api_version}"
        return WireRequest(path, responses_body(call, profile, self.memo))

    def parser(self, call: ModelCall, max_output_chars: int) -> ResponsesParser:
        return ResponsesParser(call, max_output_chars)

    def error_answer(self, status: int, body: bytes, headers: Mapping[str, str]) -> tuple[int, Mapping[str, str]]:
        return status, headers
