"""WebSocket mode through the official SDK's `responses.connect()` (async and sync) against the app served on a
loopback socket of this process: frames, errors, chains in the connection's memory, generate:false, lanes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from openai import OpenAI
from ws_support import TERMINAL, Env, check_frame, environment, holding, next_frame, one_response

from parley.store.sql import SqlStore


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    async with environment(tmp_path_factory.mktemp("ws")) as environment_:
        yield environment_


def _store(env: Env) -> SqlStore:
    store: SqlStore = env.server.app.state.runtime.store
    return store


class LoadSpy:
    """Counts the store's chain loads (a chain continued from a connection's memory costs none)."""

    def __init__(self, store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        original = store.load_context

        async def load_context(project_id: str, response_id: str) -> Any:
            self.calls.append(response_id)
            return await original(project_id, response_id)

        monkeypatch.setattr(store, "load_context", load_context)


async def test_a_response_frame_by_frame(env: Env) -> None:
    async with env.sdk().responses.connect() as conn:
        await conn.response.create(model="echo", input="Say hello")
        frames = await one_response(conn)
    kinds = [f["type"] for f in frames]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert all("stream_id" not in f for f in frames)  # the default lane: no stream_id on its events
    text = "".join(f["delta"] for f in frames if f["type"] == "response.output_text.delta")
    assert text == "echo: Say hello"
    response = frames[-1]["response"]
    stored = await env.sdk().responses.retrieve(response["id"])  # store defaults to true, as over HTTP
    assert stored.output_text == "echo: Say hello" and stored.status == "completed"


async def test_the_sdk_event_iterator_and_sync_client(env: Env) -> None:
    async with env.sdk().responses.connect() as conn:
        await conn.response.create(model="echo", input="async")
        async for event in conn:
            if event.type == "response.completed":
                assert event.response.output_text == "echo: async"
                break

    def sync_turns() -> list[str]:
        client = OpenAI(base_url=env.server.base_url, api_key="local", max_retries=0)
        texts = []
        with client.responses.connect() as conn:
            previous = None
            for word in ("one", "two"):
                conn.response.create(model="echo", input=word, store=False, previous_response_id=previous)
                for raw in iter(conn.recv_bytes, None):
                    frame = check_frame(raw)
                    if frame["type"] == "response.completed":
                        previous = frame["response"]["id"]
                        texts.append(frame["response"]["output"][0]["content"][0]["text"])
                        break
        return texts

    assert await asyncio.to_thread(sync_turns) == ["echo: one", "echo: two"]


async def test_store_false_chain_lives_in_the_connection(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = LoadSpy(_store(env), monkeypatch)
    async with env.sdk().responses.connect() as conn:
        await conn.response.create(model="echo", input="first", store=False)
        first = (await one_response(conn))[-1]["response"]
        await conn.response.create(model="echo", input="second", store=False, previous_response_id=first["id"])
        second = (await one_response(conn))[-1]
        assert second["type"] == "response.completed" and second["response"]["previous_response_id"] == first["id"]
        messages = env.upstream.requests[-1]["messages"]
        assert [m["content"] for m in messages] == ["first", "echo: first", "second"]
        assert spy.calls == []  # no database read: the connection remembered the chain
        # A stored chain on the same connection also comes from memory.
        await conn.response.create(model="echo", input="third", previous_response_id=second["response"]["id"])
        assert (await one_response(conn))[-1]["type"] == "response.completed"
        assert spy.calls == []

    async with env.sdk().responses.connect() as other:
        await other.response.create(model="echo", input="elsewhere", store=False, previous_response_id=first["id"])
        [error] = await one_response(other)
        assert error["status"] == 400
        assert error["error"]["code"] == "previous_response_not_found"
        assert error["error"]["param"] == "previous_response_id"
        # The socket stays open for the next request.
        await other.response.create(model="echo", input="still here")
        assert (await one_response(other))[-1]["type"] == "response.completed"


async def test_store_true_chain_continues_on_any_connection(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    async with env.sdk().responses.connect() as conn:
        await conn.response.create(model="echo", input="kept")
        first = (await one_response(conn))[-1]["response"]
    spy = LoadSpy(_store(env), monkeypatch)
    async with env.sdk().responses.connect() as other:
        await other.response.create(model="echo", input="next", previous_response_id=first["id"])
        assert (await one_response(other))[-1]["type"] == "response.completed"
        # A fork from the stored response (not in this connection's memory: it was loaded, not made, here).
        await other.response.create(model="echo", input="and then", store=False, previous_response_id=first["id"])
        assert (await one_response(other))[-1]["type"] == "response.completed"
    assert spy.calls == [first["id"], first["id"]]  # from storage, once per continuation of a stored response
    assert [m["content"] for m in env.upstream.requests[-1]["messages"]] == ["kept", "echo: kept", "and then"]


async def test_a_deleted_response_is_not_continued_from_memory(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    async with env.sdk().responses.connect() as conn:
        await conn.response.create(model="echo", input="doomed")
        doomed = (await one_response(conn))[-1]["response"]["id"]
        await conn.response.create(model="echo", input="kept")
        kept = (await one_response(conn))[-1]["response"]["id"]
        await conn.response.create(model="echo", input="private", store=False)
        private = (await one_response(conn))[-1]["response"]["id"]
        await env.sdk().responses.delete(doomed)  # over HTTP: another connection, as another process would
        spy = LoadSpy(_store(env), monkeypatch)
        await conn.response.create(model="echo", input="again", previous_response_id=doomed)
        [gone] = await one_response(conn)
        assert gone["error"]["code"] == "previous_response_not_found" and gone["status"] == 400
        assert spy.calls == [doomed]  # memory let storage answer
        # What was not deleted still continues from memory, stored or not.
        await conn.response.create(model="echo", input="on", previous_response_id=kept)
        assert (await one_response(conn))[-1]["type"] == "response.completed"
        await conn.response.create(model="echo", input="on", store=False, previous_response_id=private)
        assert (await one_response(conn))[-1]["type"] == "response.completed"
        assert spy.calls == [doomed]


async def test_a_parent_forgotten_by_another_lane_while_one_lane_checks_it_still_continues(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # Lane a's continuation of X waits on the deletion counter; meanwhile lane b's continuation of X fails, which
    # makes the connection forget X. Lane a then touched X's memory entry, gone: a KeyError, a 500 error frame.
    store = _store(env)
    original, gate, held = store.deletion_count, asyncio.Event(), asyncio.Event()

    async def deletion_count() -> int:
        if not held.is_set():  # the first read (lane a's) waits for the test
            held.set()
            await gate.wait()
        return await original()

    async with env.sdk().responses.connect() as conn:
        await conn.response.create(model="echo", input="parent")
        parent = (await one_response(conn))[-1]["response"]["id"]
        monkeypatch.setattr(store, "deletion_count", deletion_count)
        await conn.response.create(model="echo", input="from a", previous_response_id=parent, stream_id="a")
        await held.wait()
        await conn.response.create(model="error-500", input="from b", previous_response_id=parent, stream_id="b")
        failed = await next_frame(conn)
        assert failed["type"] == "error" and failed["stream_id"] == "b"
        gate.set()
        frames = await one_response(conn)
    assert frames[-1]["type"] == "response.completed", frames[-1]
    assert frames[-1]["response"]["output"][0]["content"][0]["text"] == "echo: from a"


async def test_a_failed_continuation_evicts_its_parent(env: Env) -> None:
    async with env.sdk().responses.connect() as conn:
        await conn.response.create(model="echo", input="base", store=False)
        base = (await one_response(conn))[-1]["response"]["id"]
        await conn.response.create(model="error-500", input="boom", store=False, previous_response_id=base)
        [error] = await one_response(conn)
        assert error["type"] == "error" and error["status"] == 502
        await conn.response.create(model="echo", input="retry", store=False, previous_response_id=base)
        [gone] = await one_response(conn)
        assert gone["error"]["code"] == "previous_response_not_found"
        # The same when the continuation fails after it started (the upstream drops mid-stream).
        await conn.response.create(model="echo", input="base two", store=False)
        second = (await one_response(conn))[-1]["response"]["id"]
        await conn.response.create(model="drop", input="cut", store=False, previous_response_id=second)
        frames = await one_response(conn)
        assert frames[0]["type"] == "response.created" and frames[-1]["type"] == "response.failed"
        await conn.response.create(model="echo", input="retry", store=False, previous_response_id=second)
        [gone] = await one_response(conn)
        assert gone["error"]["code"] == "previous_response_not_found" and gone["status"] == 400


async def test_generate_false_prepares_state_without_the_model(env: Env) -> None:
    sent = len(env.upstream.requests)
    async with env.sdk().responses.connect() as conn:
        await conn.response.create(model="echo", input="remember this", instructions="Be brief.", store=False,
                                   generate=False)
        frames = await one_response(conn)
        assert [f["type"] for f in frames] == ["response.created", "response.in_progress", "response.completed"]
        warm = frames[-1]["response"]
        assert warm["output"] == [] and warm["usage"]["total_tokens"] == 0
        assert len(env.upstream.requests) == sent  # no model was called
        await conn.response.create(model="echo", input="now answer", store=False, previous_response_id=warm["id"])
        assert (await one_response(conn))[-1]["response"]["output"][0]["content"][0]["text"] == "echo: now answer"
    messages = env.upstream.requests[-1]["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == ["remember this", "now answer"]


async def test_an_id_with_a_nul_character_is_an_error_naming_it(env: Env) -> None:
    async with env.sdk().responses.connect() as conn:
        await conn.response.create(model="echo", input="hi", previous_response_id="resp_a\u0000b")
        created = await next_frame(conn)
        assert created["status"] == 400 and created["error"]["param"] == "previous_response_id"
        assert "NUL" in created["error"]["message"]
        await conn.send_raw(json.dumps({"type": "response.steer", "input": "x", "previous_response_id": "resp_\u0000"}))
        steered = await next_frame(conn)
        assert steered["status"] == 400 and steered["error"]["param"] == "previous_response_id"
        assert "NUL" in steered["error"]["message"]


async def test_errors_are_events_and_the_socket_stays_open(env: Env) -> None:
    async with env.sdk().responses.connect() as conn:
        await conn.send_raw("not json")
        assert (await next_frame(conn))["error"]["code"] == "invalid_json"
        await conn.send_raw(json.dumps({"type": "response.cancel"}))
        unknown = await next_frame(conn)
        assert unknown["status"] == 400 and unknown["error"]["param"] == "type"
        await conn.response.create(model="echo", input="hi", temperature=9, stream_id="lane-1")
        invalid = await next_frame(conn)
        assert invalid["error"]["param"] == "temperature" and invalid["stream_id"] == "lane-1"
        await conn.response.create(model="echo", input="hi", background=True)
        background = await next_frame(conn)
        assert background["error"]["param"] == "background" and "stream_id" not in background
        await conn.response.create(model="no-such-model", input="hi")
        assert (await next_frame(conn))["error"]["code"] == "model_not_found"
        await conn.response.create(model="echo", input="fine")
        assert (await one_response(conn))[-1]["type"] == "response.completed"


# Frames whose JSON orjson refuses although the request parser reads it, or reads otherwise (an integer past 64 bits
# as a float), and plain garbage: each answered as the HTTP door answers the same bytes (was: `invalid_json` with
# param null for the first five; the steers with 2**64 and 2**64 - 1 went on, the first with a float).
_SAME_AS_HTTP = [
    r'{"type": "response.create", "model": "echo", "input": "a lone \ud800 surrogate"}',
    r'{"type": "response.create", "model": "echo", "input": "hi", "temperature": NaN}',
    r'{"type": "response.create", "model": "echo", "input": "hi", "max_output_tokens": 1e999}',
    r'{"model": "echo", "input": [{"role": "user", "content": "\udc00"}], "type": "response.create"}',
    r'{"type": "response.steer", "input": "x", "metadata": {"k": Infinity}}',
    r'{"type": "response.steer", "input": "x", "metadata": {"k": 18446744073709551616}}',
    r'{"type": "response.steer", "input": "x", "metadata": {"k": 18446744073709551615}}',
    "not json",
    "[1, 2]",
]


@pytest.mark.parametrize("frame", _SAME_AS_HTTP, ids=["surrogate", "nan", "1e999", "type-not-first", "steer-inf",
                                                      "steer-2**64", "steer-2**64-1", "garbage", "not-an-object"])
async def test_a_frame_the_parser_refuses_is_answered_as_over_http(env: Env, frame: str) -> None:
    async with httpx.AsyncClient(base_url=env.server.base_url, timeout=30) as http:
        over_http = await http.post("/responses", content=frame.encode(),
                                    headers={"content-type": "application/json", "authorization": "Bearer local"})
    assert over_http.status_code == 400
    async with env.sdk().responses.connect() as conn:
        await conn.send_raw(frame)
        error = await next_frame(conn)
    assert error["type"] == "error" and error["status"] == 400
    assert error["error"] == over_http.json()["error"]


async def test_lanes_interleave_and_keep_their_order(env: Env) -> None:
    search: list[Any] = [{"type": "web_search"}]
    async with env.sdk().responses.connect() as conn, holding(env.search) as gate:
        # Lane a's first response waits in its tool loop (its search is held); lane b goes on meanwhile.
        await conn.response.create(model="web-agent", input="slow a one", tools=search, stream_id="a")
        await conn.response.create(model="echo", input="b one", stream_id="b")
        await conn.response.create(model="echo", input="a two", stream_id="a")
        frames: list[dict[str, Any]] = []
        while not frames or frames[-1]["type"] not in TERMINAL:
            frames.append(await next_frame(conn))
        assert frames[-1]["stream_id"] == "b"  # b ended while a's first was still running
        gate.set()
        while sum(f["type"] in TERMINAL for f in frames) < 3:
            frames.append(await next_frame(conn))
    lanes = [f["stream_id"] for f in frames]
    assert lanes.index("a") < lanes.index("b")  # a started first and b did not wait for it: both ran at once
    a_events = [f for f in frames if f["stream_id"] == "a"]
    created = [i for i, f in enumerate(a_events) if f["type"] == "response.created"]
    done = [i for i, f in enumerate(a_events) if f["type"] == "response.completed"]
    assert len(created) == 2 and done[0] < created[1]  # FIFO within lane a: its second started after its first
    texts = [f["response"]["output"][-1]["content"][0]["text"] for f in frames if f["type"] == "response.completed"]
    assert texts[0] == "echo: b one" and texts[1].startswith("The answer is here") and texts[2] == "echo: a two"


async def test_an_unknown_websocket_path_is_a_404(env: Env) -> None:
    import websockets
    from websockets.asyncio.client import connect

    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        await connect(env.ws_url.replace("/responses", "/chat/completions"))
    assert refused.value.response.status_code == 404
    assert json.loads(refused.value.response.body)["error"]["code"] == "unknown_url"


def test_the_sdk_module_parses_what_we_send() -> None:
    """The helper's own oracle: an error frame without sequence_number is a valid ResponsesServerEvent."""
    frame = check_frame(json.dumps({"type": "error", "status": 400, "error": {
        "type": "invalid_request_error", "code": "x", "message": "m", "param": None}}))
    assert frame["status"] == 400
