"""What every search provider answers to: one query in, a ranked list of results out, or a `SearchFailed`.

Providers (providers.py, ddgs_provider.py) translate this to one search API each. A failure of any kind
(timeout, refused key, rate limit, an unreadable answer) is a `SearchFailed` whose message is written for the
model and the operator's log: the tool turns it into a failed `web_search_call`, never a failed response.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class UserLocation:
    """The tool's `user_location` (all optional): passed to the providers that localise results."""

    city: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-2, e.g. "US"
    region: str | None = None
    timezone: str | None = None  # IANA, e.g. "Europe/Paris"


@dataclass(frozen=True, slots=True)
class SearchQuery:
    text: str
    max_results: int
    allowed_domains: tuple[str, ...] = ()  # empty: any domain (results are filtered again by the tool)
    location: UserLocation | None = None
    full_text: bool = False  # providers that can send each page's text do (search_context_size "high")


@dataclass(frozen=True, slots=True)
class SearchResult:
    url: str
    title: str
    snippet: str
    # More text about the result when the provider gives it (Brave's extra snippets, Tavily's page content).
    extra: tuple[str, ...] = field(default_factory=tuple)


class SearchFailed(Exception):
    """The search did not produce results; `str(exc)` says why, in words fit for the model."""


class SearchProvider(Protocol):
    @property
    def name(self) -> str: ...

    async def search(self, query: SearchQuery) -> list[SearchResult]:
        """Results for the query (possibly none); `SearchFailed` for every kind of failure."""
        ...
