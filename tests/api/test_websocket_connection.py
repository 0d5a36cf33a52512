"""WebSocket mode, what belongs to the connection: authentication of the upgrade, the limits of lanes, the
connection's lifetime and the SDK's reconnect, and `response.steer`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import connect
from ws_support import TERMINAL, Env, check_frame, environment, next_frame, one_response

from parley.config import WebSocketConfig
from parley.store.base import KeySpec
from parley.store.sql import SqlStore


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
        async with tight.sdk().responses.connect() as conn:
            await conn.response.create(model="slow", input="first of a", stream_id="a")
            await conn.response.create(model="echo", input="b waits", stream_id="b")
            await conn.response.create(model="echo", input="no lane left", stream_id="c")
            await conn.response.create(model="echo", input="a again", stream_id="a")
            await conn.response.create(model="echo", input="too many", stream_id="a")
            await conn.response.create(model="echo", input="bad", stream_id="not a lane name")
            frames: list[dict[str, Any]] = []
            while sum(f["type"] in TERMINAL for f in frames) < 3:
                frames.append(await next_frame(conn))
        errors = [f for f in frames if f["type"] == "error"]
        assert [(e["error"]["code"], e.get("stream_id")) for e in errors] == [
            ("invalid_stream_id", "c"), ("too_many_queued_responses", "a"), ("invalid_stream_id", None)]
        assert errors[1]["status"] == 429
        order = [(f["stream_id"], f["type"]) for f in frames if f["type"] in ("response.created", *TERMINAL)]
        # One response in flight at a time: b starts only after a's first ended; a's second after b (FIFO slots).
        assert order == [("a", "response.created"), ("a", "response.completed"), ("b", "response.created"),
                         ("b", "response.completed"), ("a", "response.created"), ("a", "response.completed")]


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
    async with env.sdk().responses.connect() as conn:
        # The agent searches first; the search takes 1 s (it times out): time to steer before the next turn.
        await conn.response.create(model="web-agent", input="slow paris", tools=[{"type": "web_search"}],
                                   stream_id="agent")
        response_id = (await _created(conn))["response"]["id"]
        await conn.response.steer(input="berlin instead", previous_response_id=response_id)
        frames: list[dict[str, Any]] = []
        while not frames or frames[-1]["type"] not in TERMINAL:
            frames.append(await next_frame(conn))
        [accepted] = [f for f in frames if f["type"] == "response.steer.accepted"]
        assert accepted["steer"]["previous_response_id"] == response_id and accepted["stream_id"] == "agent"
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
        assert [item.content[0].text for item in items.data] == ["slow paris", "berlin instead"]  # type: ignore[union-attr]
        # Too late now.
        await conn.response.steer(input="more", previous_response_id=response_id)
        late = await next_frame(conn)
        assert late["type"] == "response.steer.failed" and late["error"]["code"] == "response_already_completed"
        assert late["steer"]["input"] == "more" and late["steer"]["previous_response_id"] == response_id


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
