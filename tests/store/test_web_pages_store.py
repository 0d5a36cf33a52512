"""The web_search page cache table (migration 7) on SQLite and PostgreSQL: one row per project and URL,
searchable by words, pruned by age, invisible to other projects."""

from __future__ import annotations

import time

from parley.store.base import WebPageRecord
from parley.store.sql import SqlStore

KEEP = 30 * 86400.0


async def test_put_get_and_replace(store: SqlStore) -> None:
    now = int(time.time())
    page = WebPageRecord("https://example.org/a?x=1", "A page", "Paris is the capital of France.", now)
    await store.put_web_page("proj-a", page, keep_s=KEEP)
    assert await store.get_web_page("proj-a", page.url) == page
    assert await store.get_web_page("proj-b", page.url) is None  # another project's cache
    newer = WebPageRecord(page.url, "A page, again", "Updated text.", now + 5)
    await store.put_web_page("proj-a", newer, keep_s=KEEP)
    assert await store.get_web_page("proj-a", page.url) == newer


async def test_search_finds_words_in_title_or_text_newest_first(store: SqlStore) -> None:
    now = int(time.time())
    pages = [WebPageRecord("https://a.example/1", "Paris guide", "museums and food", now - 30),
             WebPageRecord("https://a.example/2", "Rivers", "The Seine flows through PARIS.", now - 10),
             WebPageRecord("https://a.example/3", "Berlin", "capital of Germany", now),
             WebPageRecord("https://a.example/4", "100% sure", "under_score", now)]
    for page in pages:
        await store.put_web_page("proj-a", page, keep_s=KEEP)
    found = await store.search_web_pages("proj-a", ["paris"], 10)
    assert [p.url for p in found] == ["https://a.example/2", "https://a.example/1"]
    assert [p.url for p in await store.search_web_pages("proj-a", ["paris", "germany"], 10)] == [
        "https://a.example/3", "https://a.example/2", "https://a.example/1"]
    assert await store.search_web_pages("proj-b", ["paris"], 10) == []
    # LIKE wildcards in a term are literal characters.
    assert [p.url for p in await store.search_web_pages("proj-a", ["0%"], 10)] == ["https://a.example/4"]
    assert await store.search_web_pages("proj-a", ["u_d"], 10) == []  # "guide", "under" with a wildcard
    assert len(await store.search_web_pages("proj-a", ["paris"], 1)) == 1


async def test_old_pages_are_dropped_when_a_page_is_added(store: SqlStore) -> None:
    now = int(time.time())
    await store.put_web_page("proj-a", WebPageRecord("https://old.example/", "Old", "old text", now - 7200),
                             keep_s=KEEP)
    await store.put_web_page("proj-b", WebPageRecord("https://old.example/", "Old", "old text", now - 7200),
                             keep_s=KEEP)
    await store.put_web_page("proj-a", WebPageRecord("https://new.example/", "New", "new text", now), keep_s=3600)
    assert await store.get_web_page("proj-a", "https://old.example/") is None
    assert await store.get_web_page("proj-a", "https://new.example/") is not None
    assert await store.get_web_page("proj-b", "https://old.example/") is not None  # other projects untouched
