"""The fake Chat Completions upstream (parley.testing.fake_upstream) that also records each chat request's
headers, lower-cased, in arrival order (`headers`): what a test of propagated trace context looks at."""

from __future__ import annotations

from aiohttp import web

from parley.testing.fake_upstream import FakeUpstream


class HeaderRecordingUpstream(FakeUpstream):
    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        super().__init__()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.headers.append({name.lower(): value for name, value in request.headers.items()})
        return await super()._chat(request)
