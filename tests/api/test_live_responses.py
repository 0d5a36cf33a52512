"""A stored foreground response is found while it runs (services/live_responses.py): GET /v1/responses/{id} shows its
stream builder's snapshot (`in_progress`, the output so far) until its one write commits, then the stored row; never
another project's, never a `store: false` one. The app behind a real socket in this process, a fake upstream whose
reply waits half-way until the test lets it go on (parley.testing.paused_upstream), and the store's final write held
or failed by the test where the moment it commits is under test. No sleeps: events say where the run is."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from parley.config import EmbeddedConfig, ModelConfig, Settings, WebSearchConfig
from parley.store import tables
from parley.store.sql import SqlStore
from parley.store.writer import Write
from parley.testing.fake_search import FakeSearch
from parley.testing.in_process import Served, served
from parley.testing.paused_upstream import PausingUpstream

EVENTS = TypeAdapter(ResponseStreamEvent)
INPUT = "one two three four five six"  # "echo: one two three four five six": 7 words, the first 3 before the pause
SO_FAR = "echo: one two "
WHOLE = "echo: " + INPUT


@dataclass
class Env:
    server: Served
    fake: PausingUpstream
    a: httpx.AsyncClient  # project A's key
    b: httpx.AsyncClient  # project B's key
    writes: list[HeldWrite | HeldCommit] = field(default_factory=list)  # let go after each test, failed or not

    @property
    def store(self) -> SqlStore:
        store: SqlStore = self.server.app.state.runtime.store
        return store


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    fake, search = PausingUpstream(), FakeSearch()
    await fake.start()
    await search.start()
    models = [ModelConfig(id=name, base_url=fake.base_url, upstream_model=name) for name in ("pause", "web-agent")]
    settings = Settings(data_dir=tmp_path_factory.mktemp("live"), models=models, embedded=EmbeddedConfig(enabled=False),
                        web_search=WebSearchConfig(provider="searxng", base_url=search.root + "/searxng"),
                        auth_cache_ttl_s=0)
    try:
        async with served(settings) as server:
            store: SqlStore = server.app.state.runtime.store
            _, key_a = await store.create_key("project-a", "a")
            _, key_b = await store.create_key("project-b", "b")
            async with httpx.AsyncClient(base_url=server.base_url, timeout=60,
                                         headers={"authorization": f"Bearer {key_a}"}) as a, \
                    httpx.AsyncClient(base_url=server.base_url, timeout=60,
                                      headers={"authorization": f"Bearer {key_b}"}) as b:
                yield Env(server, fake, a, b)
    finally:
        await search.stop()
        await fake.stop()


@pytest.fixture(autouse=True)
async def let_go(env: Env) -> AsyncIterator[None]:
    """A test that fails while a reply or a write waits must not leave them waiting (the server could not stop)."""
    yield
    env.fake.resume()
    for write in env.writes:
        write.proceed.set()
    env.writes.clear()


class Reader:
    """A streamed create read in a task of its own: its events as they come, and an event when `until` is seen."""

    def __init__(self, client: httpx.AsyncClient, body: dict[str, Any], until: Callable[[list[dict[str, Any]]], bool]):
        self.events: list[dict[str, Any]] = []
        self.reached = asyncio.Event()
        self._until = until
        self.task = asyncio.ensure_future(self._read(client, body))

    async def _read(self, client: httpx.AsyncClient, body: dict[str, Any]) -> None:
        async with client.stream("POST", "/responses", json={**body, "stream": True}) as resp:
            assert resp.status_code == 200, await resp.aread()
            async for line in resp.aiter_lines():
                if line.startswith("data: {"):
                    event = json.loads(line[6:])
                    EVENTS.validate_python(event)
                    self.events.append(event)
                    if self._until(self.events):
                        self.reached.set()

    @property
    def response_id(self) -> str:
        rid: str = self.events[0]["response"]["id"]
        return rid

    async def at(self) -> None:
        """Until `until` held (or the stream ended without it: then the test fails on what it sees)."""
        waiter = asyncio.ensure_future(self.reached.wait())
        await asyncio.wait({waiter, self.task}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self.task.done():
            self.task.result()


def deltas(count: int) -> Callable[[list[dict[str, Any]]], bool]:
    return lambda events: sum(e["type"] == "response.output_text.delta" for e in events) >= count


def _text(response: dict[str, Any]) -> str:
    text: str = response["output"][0]["content"][0]["text"]
    return text


async def _get(client: httpx.AsyncClient, response_id: str, **params: Any) -> httpx.Response:
    return await client.get(f"/responses/{response_id}", params=params)


class HeldWrite:
    """The store's final write of a response, held by the test: `entered` when the write is asked for, done once
    `proceed` is set (or raising `fail` instead), `committed` after it returned."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, env: Env, fail: Exception | None = None) -> None:
        self.entered, self.proceed, self.committed = asyncio.Event(), asyncio.Event(), asyncio.Event()
        store = env.store
        env.writes.append(self)
        real: Callable[..., Awaitable[None]] = store.save_response

        async def save_response(*args: Any, **kwargs: Any) -> None:
            self.entered.set()
            await self.proceed.wait()
            if fail is not None:
                raise fail
            await real(*args, **kwargs)
            self.committed.set()

        monkeypatch.setattr(store, "save_response", save_response)


class HeldCommit:
    """The writer's group commit of a response's row, held by the test after the store has queued it (so cancelling
    its submitter cancels only its wait, store/writer.py): `entered` once held, `waits` the submitters' futures,
    `committed` once the real commit has run (after `proceed`)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, env: Env) -> None:
        self.entered, self.proceed, self.committed = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self.waits: list[asyncio.Future[None]] = []
        env.writes.append(self)
        writer = env.store.writer
        real: Callable[..., Awaitable[None]] = writer._commit_batch

        async def commit_batch(batch: list[tuple[Write, asyncio.Future[None]]], statement: Any) -> None:
            if not any(table is tables.responses for write, _ in batch for table, _ in write.inserts):
                await real(batch, statement)
                return
            self.waits += [wait for _, wait in batch]
            self.entered.set()
            await self.proceed.wait()
            try:
                await real(batch, statement)
            finally:
                self.committed.set()

        monkeypatch.setattr(writer, "_commit_batch", commit_batch)


def ended_when_left(monkeypatch: pytest.MonkeyPatch, env: Env) -> asyncio.Event:
    """Set when the service's stream or non-streamed create of a request has ended (here: its client left)."""
    service, ended = env.server.app.state.runtime.responses, asyncio.Event()
    real_stream, real_complete = service.stream, service.complete

    async def stream(prepared: Any) -> AsyncIterator[Any]:
        batches = real_stream(prepared)
        try:
            async for batch in batches:
                yield batch
        finally:
            await batches.aclose()
            ended.set()

    async def complete(prepared: Any) -> Any:
        try:
            return await real_complete(prepared)
        finally:
            ended.set()

    monkeypatch.setattr(service, "stream", stream)
    monkeypatch.setattr(service, "complete", complete)
    return ended


# -- streamed ------------------------------------------------------------------------------------------------------


async def test_a_streamed_response_is_found_while_it_runs_then_as_stored(env: Env) -> None:
    reader = Reader(env.a, {"model": "pause", "input": INPUT, "metadata": {"k": "v"}}, deltas(3))
    await reader.at()  # the upstream waits after its first three words, the client has them
    rid = reader.response_id

    live = await _get(env.a, rid)
    assert live.status_code == 200, live.text
    body = live.json()
    Response.model_validate(body)
    assert body["id"] == rid and body["status"] == "in_progress" and body["usage"] is None
    assert body["completed_at"] is None and body["error"] is None and body["metadata"] == {"k": "v"}
    assert [(item["type"], item["status"]) for item in body["output"]] == [("message", "in_progress")]
    assert _text(body) == SO_FAR
    assert body["output"][0]["id"] == reader.events[2]["item"]["id"]  # the item the stream announced
    assert "output_text" not in body

    env.fake.resume()
    await reader.task
    final = reader.events[-1]
    assert final["type"] == "response.completed"
    stored = await _get(env.a, rid)
    assert stored.status_code == 200 and stored.json() == final["response"]
    assert _text(stored.json()) == WHOLE


async def test_another_projects_running_response_is_not_found(env: Env) -> None:
    reader = Reader(env.a, {"model": "pause", "input": INPUT}, deltas(3))
    await reader.at()
    rid = reader.response_id
    for call in (env.b.get(f"/responses/{rid}"), env.b.get(f"/responses/{rid}/input_items"),
                 env.b.delete(f"/responses/{rid}"), env.b.post(f"/responses/{rid}/cancel")):
        answer = await call
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["param"] == "response_id"
    assert (await _get(env.a, rid)).status_code == 200
    env.fake.resume()
    await reader.task
    assert (await _get(env.b, rid)).status_code == 404


async def test_a_store_false_response_stays_invisible_while_it_runs(env: Env) -> None:
    reader = Reader(env.a, {"model": "pause", "input": INPUT, "store": False}, deltas(3))
    await reader.at()
    answer = await _get(env.a, reader.response_id)
    assert answer.status_code == 404, answer.text
    env.fake.resume()
    await reader.task
    assert reader.events[-1]["type"] == "response.completed"
    assert (await _get(env.a, reader.response_id)).status_code == 404


async def test_what_else_a_running_response_answers(env: Env) -> None:
    """input_items: its own input, as stored later; DELETE: 409 until it has ended; cancel: 400 (foreground, as
    OpenAI); GET ?stream=true: 400 (its events are not logged, as for a stored foreground one); include[] as stored."""
    messages = [{"role": "user", "content": "first"}, {"role": "user", "content": INPUT}]
    reader = Reader(env.a, {"model": "pause", "input": messages}, deltas(3))
    await reader.at()
    rid = reader.response_id

    items = await env.a.get(f"/responses/{rid}/input_items", params={"order": "asc"})
    assert items.status_code == 200, items.text
    listed = items.json()
    assert [item["content"][0]["text"] for item in listed["data"]] == ["first", INPUT]
    assert listed["has_more"] is False and listed["first_id"] == listed["data"][0]["id"]
    first_id = listed["data"][0]["id"]
    page = (await env.a.get(f"/responses/{rid}/input_items", params={"limit": 1})).json()
    assert [item["content"][0]["text"] for item in page["data"]] == [INPUT] and page["has_more"] is True
    rest = (await env.a.get(f"/responses/{rid}/input_items", params={"limit": 1, "after": page["last_id"]})).json()
    assert [item["id"] for item in rest["data"]] == [first_id] and rest["has_more"] is False
    before = (await env.a.get(f"/responses/{rid}/input_items", params={"before": first_id})).json()
    assert [item["content"][0]["text"] for item in before["data"]] == [INPUT]
    unknown = await env.a.get(f"/responses/{rid}/input_items", params={"after": "msg_nope"})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "after"

    deleted = await env.a.delete(f"/responses/{rid}")
    assert deleted.status_code == 409, deleted.text
    assert deleted.json()["error"]["code"] == "response_in_progress"
    cancelled = await env.a.post(f"/responses/{rid}/cancel")
    assert cancelled.status_code == 400 and cancelled.json()["error"]["param"] == "response_id"
    streamed = await _get(env.a, rid, stream="true")
    assert streamed.status_code == 400 and streamed.json()["error"]["param"] == "stream"
    included = await env.a.get(f"/responses/{rid}", params={"include[]": "message.output_text.logprobs"})
    assert included.status_code == 200 and _text(included.json()) == SO_FAR
    bad = await env.a.get(f"/responses/{rid}", params={"include[]": "nonsense"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "include"

    env.fake.resume()
    await reader.task
    stored = (await env.a.get(f"/responses/{rid}/input_items", params={"order": "asc"})).json()
    assert stored["data"] == listed["data"]  # what the live list showed is what was stored
    assert (await env.a.delete(f"/responses/{rid}")).status_code == 200
    assert (await _get(env.a, rid)).status_code == 404


async def test_the_live_answer_ends_exactly_when_the_row_is_committed(env: Env,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """While the final write is in flight the response is still shown, `in_progress` (the write may fail: no client
    is told it completed before it can be retrieved); once it has committed, the stored row answers."""
    write = HeldWrite(monkeypatch, env)
    reader = Reader(env.a, {"model": "pause", "input": INPUT}, deltas(3))
    await reader.at()
    env.fake.resume()
    await write.entered.wait()  # the run has ended; its row is not written yet
    during = await _get(env.a, reader.response_id)
    assert during.status_code == 200
    assert during.json()["status"] == "in_progress" and during.json()["usage"] is None
    assert _text(during.json()) == WHOLE
    assert reader.events[-1]["type"] != "response.completed"  # the client has not been told either
    write.proceed.set()
    await write.committed.wait()
    after = await _get(env.a, reader.response_id)
    assert after.json()["status"] == "completed" and after.json()["usage"] is not None
    await reader.task
    assert reader.events[-1]["response"] == after.json()


async def test_a_response_whose_write_fails_is_not_found_afterwards(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    write = HeldWrite(monkeypatch, env, fail=RuntimeError("the disk is gone"))
    write.proceed.set()
    reader = Reader(env.a, {"model": "pause", "input": INPUT}, deltas(3))
    await reader.at()
    assert (await _get(env.a, reader.response_id)).status_code == 200
    env.fake.resume()
    await reader.task
    assert reader.events[-1]["type"] == "response.failed"
    assert (await _get(env.a, reader.response_id)).status_code == 404


async def test_a_client_that_leaves_leaves_it_found_until_stored_cancelled(env: Env,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    write = HeldWrite(monkeypatch, env)
    reader = Reader(env.a, {"model": "pause", "input": INPUT}, deltas(3))
    await reader.at()
    rid = reader.response_id
    reader.task.cancel()  # the client goes away mid-text
    await asyncio.gather(reader.task, return_exceptions=True)
    await write.entered.wait()  # the server saw it go and stores what there is, as cancelled
    during = await _get(env.a, rid)
    assert during.status_code == 200 and during.json()["status"] == "in_progress"
    write.proceed.set()
    await write.committed.wait()
    stored = (await _get(env.a, rid)).json()
    assert stored["status"] == "cancelled"
    assert [(item["status"], item["content"][0]["text"]) for item in stored["output"]] == [("incomplete", SO_FAR)]


async def test_a_client_gone_while_the_final_write_is_in_flight_leaves_it_found_until_the_row_is(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run has ended and its row is queued when the client goes: only its wait is cancelled, the writer still
    commits the row, and the response is shown (in_progress) until then, never a 404 in between."""
    commit, ended = HeldCommit(monkeypatch, env), ended_when_left(monkeypatch, env)
    reader = Reader(env.a, {"model": "pause", "input": INPUT}, deltas(3))
    await reader.at()
    rid = reader.response_id
    env.fake.resume()
    await commit.entered.wait()  # the completed response's row is with the writer, held
    reader.task.cancel()  # the client goes away before it hears the end
    await asyncio.gather(reader.task, return_exceptions=True)
    await ended.wait()  # the server saw it go: its stream has ended
    assert reader.events[-1]["type"] == "response.output_text.delta"
    await _found_until_its_held_row_commits(env, rid, commit)


async def _found_until_its_held_row_commits(env: Env, rid: str, commit: HeldCommit) -> None:
    """Its client's wait was cancelled, not the write: shown in_progress (the whole text) while the writer holds the
    row, then the stored completed response (the run had finished) once it commits, and gone from the registry."""
    assert [wait.cancelled() for wait in commit.waits] == [True]  # it stopped waiting; the write did not stop
    during = await _get(env.a, rid)
    assert during.status_code == 200, during.text
    assert during.json()["status"] == "in_progress" and _text(during.json()) == WHOLE
    commit.proceed.set()
    await commit.committed.wait()
    stored = await _get(env.a, rid)
    assert stored.status_code == 200, stored.text
    assert stored.json()["status"] == "completed" and _text(stored.json()) == WHOLE
    assert env.server.app.state.runtime.responses.live.ids() == []


async def test_the_same_shape_as_a_background_response_in_progress(env: Env) -> None:
    """A running foreground response is shown as a stored background one in progress is: the same keys, the same
    in-progress values; only `background` and the output differ (a background run stores its finished items)."""
    background = Reader(env.a, {"model": "pause", "input": INPUT, "background": True}, deltas(3))
    foreground = Reader(env.a, {"model": "pause", "input": INPUT}, deltas(3))
    await background.at()  # a follower's events are stored before they are sent: its status too
    await foreground.at()
    bg = (await _get(env.a, background.response_id)).json()
    fg = (await _get(env.a, foreground.response_id)).json()
    env.fake.resume()
    await asyncio.gather(background.task, foreground.task)
    assert set(bg) == set(fg)
    same = ("object", "status", "usage", "completed_at", "error", "incomplete_details", "model", "instructions",
            "metadata", "tools", "text", "reasoning", "truncation", "store")
    assert {key: fg[key] for key in same} == {key: bg[key] for key in same}
    assert (bg["background"], fg["background"]) == (True, False)
    Response.model_validate(bg)
    Response.model_validate(fg)


# -- not streamed --------------------------------------------------------------------------------------------------


async def test_a_non_streamed_tool_loop_shows_its_items_so_far(env: Env) -> None:
    """A non-streaming create's id is known only at its end to its client, but the response is there while it runs
    (the id taken from the registry here): after its web search, while the model's next turn runs, its output is the
    finished web_search_call."""
    runtime = env.server.app.state.runtime
    env.fake.hold, env.fake.held = asyncio.Event(), asyncio.Event()
    try:
        task = asyncio.ensure_future(env.a.post("/responses", json={"model": "web-agent", "input": "paris",
                                                                    "tools": [{"type": "web_search"}]}))
        await env.fake.held.wait()  # the turn after the tool results waits
        [rid] = runtime.responses.live.ids()
        live = await _get(env.a, rid)
        assert live.status_code == 200, live.text
        body = live.json()
        Response.model_validate(body)
        assert body["status"] == "in_progress" and body["usage"] is None
        assert [(item["type"], item["status"]) for item in body["output"]] == [("web_search_call", "completed")]
        assert "sources" not in body["output"][0]["action"]
        shown = (await _get(env.a, rid, **{"include[]": "web_search_call.action.sources"})).json()
        assert "sources" in shown["output"][0]["action"]  # include[] as for a stored response
        assert (await _get(env.b, rid)).status_code == 404
        env.fake.hold.set()
        done = await task
    finally:
        env.fake.hold.set()
        env.fake.hold = None
    assert done.status_code == 200, done.text
    stored = await _get(env.a, rid)
    assert stored.json() == done.json() and stored.json()["status"] == "completed"
    assert runtime.responses.live.ids() == []


async def test_a_non_streamed_client_gone_while_its_write_is_in_flight_leaves_it_found_until_the_row_is(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for a non-streaming create (its request is cancelled when its client goes, api/responses.py)."""
    runtime = env.server.app.state.runtime
    commit, ended = HeldCommit(monkeypatch, env), ended_when_left(monkeypatch, env)
    task = asyncio.ensure_future(env.a.post("/responses", json={"model": "pause", "input": INPUT}))
    await env.fake.paused.wait()
    env.fake.resume()
    await commit.entered.wait()
    [rid] = runtime.responses.live.ids()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await ended.wait()
    await _found_until_its_held_row_commits(env, rid, commit)


# -- the WebSocket door --------------------------------------------------------------------------------------------


async def test_a_response_made_over_websocket_is_found_while_it_runs(env: Env) -> None:
    """The doors share the stream: a response created in WebSocket mode is found by a GET over HTTP mid-run."""
    key = env.a.headers["authorization"].removeprefix("Bearer ")
    sdk = AsyncOpenAI(base_url=env.server.base_url, api_key=key, max_retries=0)
    async with sdk.responses.connect() as conn:
        await conn.response.create(model="pause", input=INPUT)
        rid, seen = "", ""
        async for event in conn:
            if event.type == "response.created":
                rid = event.response.id
            elif event.type == "response.output_text.delta":
                seen += event.delta
                if seen == SO_FAR:
                    break
        live = (await _get(env.a, rid)).json()
        assert live["status"] == "in_progress" and _text(live) == SO_FAR
        env.fake.resume()
        async for event in conn:
            if event.type == "response.completed":
                break
    stored = (await _get(env.a, rid)).json()
    assert stored["status"] == "completed" and _text(stored) == WHOLE
