"""WebSocket mode, what belongs to the connection: authentication of the upgrade, the limits of lanes, the
connection's lifetime and the SDK's reconnect, and `response.steer`."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import connect
from ws_support import TERMINAL, Env, check_frame, environment, holding, next_frame, one_response
from ws_support import settings as ws_settings

from parley.config import WebSocketConfig
from parley.store.base import KeySpec
from parley.store.sql import SqlStore
from parley.testing.fake_agent import AgentUpstream
from parley.testing.fake_search import FakeSearch
from parley.testing.in_process import Served, served


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    async with environment(tmp_path_factory.mktemp("ws-conn")) as environment_:
        yield environment_


def _store(env: Env) -> SqlStore:
    store: SqlStore = env.server.app.state.runtime.store
    return store


async def test_the_upgrade_is_authenticated_like_a_request(tmp_path_factory: pytest.TempPathFactory) -> None:
    async with environment(tmp_path_factory.mktemp("ws-auth"), auth="keys", auth_cache_ttl_s=0.0) as keyed:
        store = _store(keyed)
        _, key = await store.create_key("acme", "ws")
        _, admin = await store.create_key("", "admin", KeySpec("admin", "admin", None, None, None))
        for headers, status in (({}, 401), ({"Authorization": "Bearer sk-wrong-secret-1234"}, 401),
                                ({"Authorization": f"Bearer {admin}"}, 403)):
            with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
                await connect(keyed.ws_url, additional_headers=headers)
            response = refused.value.response
            assert response.status_code == status
            body = json.loads(response.body)
            assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
            assert response.headers["x-request-id"].startswith("req_")
            assert "secret-1234" not in response.body.decode()
        with pytest.raises(Exception, match="401"):
            async with keyed.sdk("sk-wrong").responses.connect():
                pass
        async with keyed.sdk(key).responses.connect() as conn:
            await conn.response.create(model="echo", input="in")
            created = (await one_response(conn))[-1]["response"]
            assert created["status"] == "completed"
            # A key revoked while its socket is open stops working at the next response; the socket stays open.
            record = (await store.list_keys("acme"))[0]
            await store.revoke_key(record.id)
            await conn.response.create(model="echo", input="revoked")
            [error] = await one_response(conn)
            assert error["status"] == 401 and error["error"]["code"] == "invalid_api_key"


async def test_lane_limits(tmp_path_factory: pytest.TempPathFactory) -> None:
    limits = WebSocketConfig(max_in_flight=1, max_lanes=2, max_queued=2)
    async with environment(tmp_path_factory.mktemp("ws-lanes"), websocket=limits) as tight:
        async with tight.sdk().responses.connect() as conn, holding(tight.search) as gate:
            # a's first response holds the only slot (its search is held) until the errors are in.
            await conn.response.create(model="web-agent", input="slow first of a", tools=[{"type": "web_search"}],
                                       stream_id="a")
            await conn.response.create(model="echo", input="b waits", stream_id="b")
            await conn.response.create(model="echo", input="no lane left", stream_id="c")
            await conn.response.create(model="echo", input="a again", stream_id="a")
            await conn.response.create(model="echo", input="too many", stream_id="a")
            await conn.response.create(model="echo", input="bad", stream_id="not a lane name")
            frames: list[dict[str, Any]] = []
            while sum(f["type"] == "error" for f in frames) < 3:
                frames.append(await next_frame(conn))
            gate.set()
            while sum(f["type"] in TERMINAL for f in frames) < 3:
                frames.append(await next_frame(conn))
        errors = [f for f in frames if f["type"] == "error"]
        assert [(e["error"]["code"], e.get("stream_id")) for e in errors] == [
            ("invalid_stream_id", "c"), ("too_many_queued_responses", "a"), ("invalid_stream_id", None)]
        assert errors[1]["status"] == 429 and errors[0]["error"]["param"] == "stream_id"
        order = [(f["stream_id"], f["type"]) for f in frames if f["type"] in ("response.created", *TERMINAL)]
        # One response in flight at a time: b starts only after a's first ended; a's second after b (FIFO slots).
        assert order == [("a", "response.created"), ("a", "response.completed"), ("b", "response.created"),
                         ("b", "response.completed"), ("a", "response.created"), ("a", "response.completed")]


async def test_the_documented_limits_by_default(env: Env) -> None:
    """16 responses in flight per connection, the others queued (and started in order as slots free up); 32
    lanes, a 33rd is invalid_stream_id. Every response waits in its tool loop until the test lets them go."""
    assert WebSocketConfig().max_connection_s == 3600
    async with env.sdk().responses.connect() as conn, holding(env.search) as gate:
        for lane in range(33):
            await conn.response.create(model="web-agent", input=f"slow lane {lane}", tools=[{"type": "web_search"}],
                                       stream_id=f"lane-{lane}", store=False)
        frames: list[dict[str, Any]] = []
        while sum(f["type"] == "response.created" for f in frames) < 16 or not any(
                f["type"] == "error" for f in frames):
            frames.append(await next_frame(conn))
        [refused] = [f for f in frames if f["type"] == "error"]
        assert refused["error"]["code"] == "invalid_stream_id" and refused["stream_id"] == "lane-32"
        gate.set()
        while sum(f["type"] in TERMINAL for f in frames) < 32:
            frames.append(await next_frame(conn))
    created = [i for i, f in enumerate(frames) if f["type"] == "response.created"]
    first_done = next(i for i, f in enumerate(frames) if f["type"] in TERMINAL)
    assert len(created) == 32 and sum(i < first_done for i in created) == 16  # the 17th waited for a slot
    started = [frames[i]["stream_id"] for i in created]
    assert set(started[:16]) == {f"lane-{n}" for n in range(16)}  # the first 16 lanes ran, the others waited
    assert set(started[16:]) == {f"lane-{n}" for n in range(16, 32)}
    assert all(f["type"] == "response.completed" for f in frames if f["type"] in TERMINAL)


async def test_the_connection_lifetime_and_the_sdk_reconnect(tmp_path_factory: pytest.TempPathFactory) -> None:
    async with environment(tmp_path_factory.mktemp("ws-life"),
                           websocket=WebSocketConfig(max_connection_s=1.5)) as short:
        reconnecting = asyncio.Event()
        closes: list[int] = []

        def on_reconnecting(event: Any) -> None:
            closes.append(event.close_code)
            reconnecting.set()

        async with short.sdk().responses.connect(on_reconnecting=on_reconnecting, initial_delay=0.05) as conn:
            events = conn.__aiter__()

            async def until(kind: str) -> dict[str, Any]:
                while True:
                    frame = check_frame((await asyncio.wait_for(events.__anext__(), 10)).to_json())
                    if frame["type"] in (kind, "error"):
                        return frame

            await conn.response.create(model="echo", input="stored turn")
            stored = (await until("response.completed"))["response"]["id"]
            await conn.response.create(model="echo", input="memory turn", store=False)
            unstored = (await until("response.completed"))["response"]["id"]
            limit = await until("never")
            assert limit["error"]["code"] == "websocket_connection_limit_reached" and limit["status"] == 400
            reading = asyncio.ensure_future(events.__anext__())  # reads the close (1001), then reconnects
            await asyncio.wait_for(reconnecting.wait(), 10)
            assert closes == [1001]
            await conn.response.create(model="echo", input="resumed", previous_response_id=stored)
            first = check_frame((await asyncio.wait_for(reading, 10)).to_json())
            assert first["type"] == "response.created"
            done = await until("response.completed")
            assert done["type"] == "response.completed"
            assert [m["content"] for m in short.upstream.requests[-1]["messages"]] == [
                "stored turn", "echo: stored turn", "resumed"]
            await conn.response.create(model="echo", input="lost", store=False, previous_response_id=unstored)
            assert (await until("response.completed"))["error"]["code"] == "previous_response_not_found"


async def _created(conn: Any) -> dict[str, Any]:
    frame = await next_frame(conn)
    assert frame["type"] == "response.created", frame
    return frame


async def test_steering_joins_the_next_model_turn(env: Env) -> None:
    async with env.sdk().responses.connect() as conn, holding(env.search) as gate:
        # The agent searches first and the search is held: the response waits in its tool loop, steerable.
        await conn.response.create(model="web-agent", input="slow paris", tools=[{"type": "web_search"}],
                                   stream_id="agent")
        response_id = (await _created(conn))["response"]["id"]
        await conn.response.steer(input="berlin instead", previous_response_id=response_id)
        frames: list[dict[str, Any]] = []
        while not frames or frames[-1]["type"] != "response.steer.accepted":
            frames.append(await next_frame(conn))
        gate.set()
        while frames[-1]["type"] not in TERMINAL:
            frames.append(await next_frame(conn))
        [accepted] = [f for f in frames if f["type"] == "response.steer.accepted"]
        assert accepted["steer"]["previous_response_id"] == response_id and accepted["stream_id"] == "agent"
        assert accepted["steer"]["id"].startswith("steer")
        assert frames[-1]["type"] == "response.completed"
        # The next turn got the steering message after the tool result, and the agent searched for it.
        turns = [r for r in env.upstream.requests if r["model"] == "web-agent"][-2:]
        steered = turns[0]["messages"]
        assert steered[-1] == {"role": "user", "content": "berlin instead"} and steered[-2]["role"] == "tool"
        searches = [f["item"]["action"]["query"] for f in frames
                    if f["type"] == "response.output_item.done" and f["item"]["type"] == "web_search_call"]
        assert searches == ["slow paris", "berlin instead"]
        # Stored with the response's input (after the request's own), so a continuation sees it.
        items = await env.sdk().responses.input_items.list(response_id, order="asc")
        assert [item.content[0].text for item in items.data] == ["slow paris", "berlin instead"]  # type: ignore[union-attr,index]
        # Too late now.
        await conn.response.steer(input="more", previous_response_id=response_id)
        late = await next_frame(conn)
        assert late["type"] == "response.steer.failed" and late["error"]["code"] == "response_already_completed"
        assert late["steer"]["input"] == "more" and late["steer"]["previous_response_id"] == response_id


async def test_too_many_pending_steers(env: Env) -> None:
    async with env.sdk().responses.connect() as conn, holding(env.search) as gate:
        await conn.response.create(model="web-agent", input="slow rome", tools=[{"type": "web_search"}], store=False)
        response_id = (await _created(conn))["response"]["id"]
        for n in range(9):
            await conn.response.steer(input=f"also {n}", previous_response_id=response_id)
        answers: list[dict[str, Any]] = []
        while len(answers) < 9:
            frame = await next_frame(conn)
            if frame["type"].startswith("response.steer."):
                answers.append(frame)
        gate.set()
        while (await next_frame(conn))["type"] not in TERMINAL:
            pass
    assert [a["type"] for a in answers] == ["response.steer.accepted"] * 8 + ["response.steer.failed"]
    assert answers[-1]["error"]["code"] == "too_many_pending_steers" and answers[-1]["steer"]["input"] == "also 8"
    assert "stream_id" not in answers[-1]  # the default lane
    # The eight accepted joined the next turn together, in the order they were sent.
    turn = [r for r in env.upstream.requests if r["model"] == "web-agent"][-2]["messages"]
    assert [m["content"] for m in turn[-8:]] == [f"also {n}" for n in range(8)] and turn[-9]["role"] == "tool"


@contextlib.asynccontextmanager
async def holding_turns(env: Env) -> AsyncIterator[asyncio.Event]:
    """The agent's model turns after tool results wait until the event is set (`env.upstream.held`: one is)."""
    env.upstream.held.clear()
    env.upstream.hold = gate = asyncio.Event()
    try:
        yield gate
    finally:
        gate.set()
        env.upstream.hold = None


async def test_steering_a_response_on_its_last_model_turn(env: Env) -> None:
    """With max_tool_calls 1, the turn after the search is the last: steering is closed (response_not_active).
    Without it, that turn could still call tools, so input is accepted, and returned when the model answers
    instead (response_already_completed, with the steering id)."""
    async with env.sdk().responses.connect() as conn:
        async with holding_turns(env) as gate:
            await conn.response.create(model="web-agent", input="paris", tools=[{"type": "web_search"}],
                                       max_tool_calls=1, stream_id="last")
            last = (await _created(conn))["response"]["id"]
            await asyncio.wait_for(env.upstream.held.wait(), 10)  # its last model turn is running
            await conn.response.steer(input="too late", previous_response_id=last)
            while (frame := await next_frame(conn))["type"] != "response.steer.failed":
                pass
            assert frame["error"]["code"] == "response_not_active" and frame["stream_id"] == "last"
            assert frame["steer"] == {"input": "too late", "previous_response_id": last}
            gate.set()
            while (await next_frame(conn))["type"] not in TERMINAL:
                pass
        async with holding_turns(env) as gate:
            await conn.response.create(model="web-agent", input="paris", tools=[{"type": "web_search"}])
            open_ended = (await _created(conn))["response"]["id"]
            await asyncio.wait_for(env.upstream.held.wait(), 10)
            await conn.response.steer(input="and berlin?", previous_response_id=open_ended)
            frames: list[dict[str, Any]] = []
            while not frames or frames[-1]["type"] != "response.steer.accepted":
                frames.append(await next_frame(conn))
            steer_id = frames[-1]["steer"]["id"]
            gate.set()
            while not frames or frames[-1]["type"] != "response.steer.failed":
                frames.append(await next_frame(conn))
        kinds = [f["type"] for f in frames]
        assert kinds.index("response.completed") < kinds.index("response.steer.failed")
        returned = frames[-1]
        assert returned["error"]["code"] == "response_already_completed" and returned["steer"]["id"] == steer_id
        assert returned["steer"]["previous_response_id"] == open_ended and "stream_id" not in returned
        assert returned["steer"]["input"] == "and berlin?"  # as it was sent, for the client to send again


async def test_what_cannot_be_steered(env: Env) -> None:
    async with env.sdk().responses.connect() as conn:
        await conn.response.steer(input="anyone?", previous_response_id="resp_unknown")
        assert (await next_frame(conn))["error"]["code"] == "response_not_found"
        await conn.response.create(model="slow", input="no tools here")
        plain = (await _created(conn))["response"]["id"]
        await conn.response.steer(input="faster", previous_response_id=plain)
        while (frame := await next_frame(conn))["type"] != "response.steer.failed":
            pass
        assert frame["error"]["code"] == "steering_not_supported" and "stream_id" not in frame
        while (await next_frame(conn))["type"] not in TERMINAL:
            pass
        async with holding(env.search):
            await conn.response.create(model="web-agent", input="slow paris", tools=[{"type": "web_search"}])
            agent = (await _created(conn))["response"]["id"]
            tool_output = [{"type": "function_call_output", "call_id": "call_1", "output": "42"}]
            await conn.response.steer(input=tool_output, previous_response_id=agent)  # type: ignore[arg-type]
            while (frame := await next_frame(conn))["type"] != "response.steer.failed":
                pass
            assert frame["error"]["code"] == "invalid_input" and frame["steer"]["input"] == tool_output
            await conn.send_raw(json.dumps({"type": "response.steer", "previous_response_id": agent}))
            while (frame := await next_frame(conn))["type"] != "error":
                pass
            assert frame["error"]["param"] == "input"
        while (await next_frame(conn))["type"] not in TERMINAL:
            pass


async def test_a_restart_closes_with_1012_and_the_sdk_resumes_a_stored_chain(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """A server going away for a restart (or a rolling update onto another replica) closes with 1012; the SDK
    reconnects to the new process, which has none of the old connection's memory: a stored chain goes on from
    the database, a store:false one is previous_response_not_found."""
    data_dir = tmp_path_factory.mktemp("ws-restart")
    upstream, search = AgentUpstream(), FakeSearch()
    await upstream.start()
    await search.start()
    closes: list[int] = []
    reconnecting = asyncio.Event()

    def on_reconnecting(event: Any) -> None:
        closes.append(event.close_code)
        reconnecting.set()

    try:
        config = ws_settings(data_dir, upstream, search, websocket=WebSocketConfig())
        old_server: contextlib.AbstractAsyncContextManager[Served] | None = served(config)
        assert old_server is not None
        old = await old_server.__aenter__()
        try:
            async with old.sdk().responses.connect(on_reconnecting=on_reconnecting, initial_delay=0.05) as conn:
                await conn.response.create(model="echo", input="stored turn")
                stored = (await one_response(conn))[-1]["response"]["id"]
                await conn.response.create(model="echo", input="memory turn", store=False)
                unstored = (await one_response(conn))[-1]["response"]["id"]
                await old_server.__aexit__(None, None, None)  # the old process shuts down: 1012 on the socket
                old_server = None
                async with served(config, port=old.port) as new:
                    events = conn.__aiter__()
                    reading = asyncio.ensure_future(events.__anext__())  # reads the close, then reconnects
                    await asyncio.wait_for(reconnecting.wait(), 10)
                    await conn.response.create(model="echo", input="resumed", previous_response_id=stored)
                    first = check_frame((await asyncio.wait_for(reading, 10)).to_json())
                    assert first["type"] == "response.created" and closes == [1012]
                    frames = [first]
                    while frames[-1]["type"] not in TERMINAL:
                        frames.append(await next_frame(conn))
                    assert frames[-1]["response"]["previous_response_id"] == stored
                    assert [m["content"] for m in upstream.requests[-1]["messages"]] == [
                        "stored turn", "echo: stored turn", "resumed"]
                    await conn.response.create(model="echo", input="lost", store=False, previous_response_id=unstored)
                    [error] = await one_response(conn)
                    assert error["error"]["code"] == "previous_response_not_found" and error["status"] == 400
                    assert new.port == old.port
        finally:
            if old_server is not None:
                await old_server.__aexit__(None, None, None)
    finally:
        await search.stop()
        await upstream.stop()


async def test_a_dropped_connection_1006_and_the_sdk_reconnect(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The network drops (no close frame: 1006 on the client): the SDK reconnects, a stored chain goes on, the
    dropped connection's store:false responses are gone with it."""
    async with environment(tmp_path_factory.mktemp("ws-drop")) as dropping:
        reconnecting = asyncio.Event()
        closes: list[int] = []

        def on_reconnecting(event: Any) -> None:
            closes.append(event.close_code)
            reconnecting.set()

        async with dropping.sdk().responses.connect(on_reconnecting=on_reconnecting, initial_delay=0.05) as conn:
            await conn.response.create(model="echo", input="stored turn")
            stored = (await one_response(conn))[-1]["response"]["id"]
            await conn.response.create(model="echo", input="memory turn", store=False)
            unstored = (await one_response(conn))[-1]["response"]["id"]
            sockets = [c for c in dropping.server.connections if type(c).__module__.endswith("websockets_sansio_impl")]
            assert len(sockets) == 1
            sockets[0].transport.abort()  # the TCP connection is reset: no close frame
            events = conn.__aiter__()
            reading = asyncio.ensure_future(events.__anext__())
            await asyncio.wait_for(reconnecting.wait(), 10)
            assert closes == [1006]
            await conn.response.create(model="echo", input="resumed", previous_response_id=stored)
            first = check_frame((await asyncio.wait_for(reading, 10)).to_json())
            frames = [first]
            while frames[-1]["type"] not in TERMINAL:
                frames.append(await next_frame(conn))
            assert first["type"] == "response.created" and frames[-1]["type"] == "response.completed"
            assert [m["content"] for m in dropping.upstream.requests[-1]["messages"]] == [
                "stored turn", "echo: stored turn", "resumed"]
            await conn.response.create(model="echo", input="lost", store=False, previous_response_id=unstored)
            [error] = await one_response(conn)
            assert error["error"]["code"] == "previous_response_not_found"
