"""The Containers API and the code_interpreter tool through the official SDK (in-process app, the fake coder
upstream writing the code, sessions in the real sandbox): container and container-file CRUD, validation, the
tool's items, events and citations, state across calls and turns, plots, file inputs, timeouts, expiry, and two
processes sharing one database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI
from openai.types.responses import ResponseOutputItem, ResponseStreamEvent
from pydantic import TypeAdapter
from sqlalchemy import select, update

from parley.config import CodeInterpreterConfig, EmbeddedConfig, ModelConfig, Settings
from parley.errors import NotFound
from parley.services.containers import RESTARTED, ContainersService
from parley.store import tables
from parley.store.sql import SqlStore
from parley.testing.fake_coder import CoderUpstream
from parley.testing.in_process import InProcess, in_process

EVENTS = TypeAdapter(ResponseStreamEvent)
ITEMS = TypeAdapter(ResponseOutputItem)
AUTO = {"type": "code_interpreter", "container": {"type": "auto"}}


@dataclass
class Env:
    sdk: AsyncOpenAI
    app: InProcess
    upstream: CoderUpstream
    data_dir: Path

    @property
    def containers(self) -> ContainersService:
        service: ContainersService = self.app.app.state.runtime.containers
        return service

    def tool_outputs(self) -> list[str]:
        return [m["content"] for m in self.upstream.requests[-1]["messages"] if m["role"] == "tool"]


def settings(data_dir: Path, base_url: str, **code: Any) -> Settings:
    return Settings(data_dir=data_dir, models=[ModelConfig(id="code-agent", base_url=base_url)],
                    embedded=EmbeddedConfig(enabled=False),
                    code_interpreter=CodeInterpreterConfig(cell_timeout_s=5, **code))


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    upstream = CoderUpstream()
    await upstream.start()
    data_dir = tmp_path_factory.mktemp("containers")
    async with in_process(settings(data_dir, upstream.base_url)) as app:
        yield Env(app.sdk(), app, upstream, data_dir)
    await upstream.stop()


def steps(*codes: str | list[str]) -> str:
    return json.dumps(list(codes))


async def ask(env: Env, *codes: str | list[str], **kwargs: Any) -> Any:
    kwargs.setdefault("tools", [AUTO])
    return await env.sdk.responses.create(model="code-agent", input=steps(*codes), **kwargs)


def calls(response: Any) -> list[dict[str, Any]]:
    return [item.model_dump() for item in response.output if item.type == "code_interpreter_call"]


# -- the Containers API ----------------------------------------------------------------------------------


async def test_container_lifecycle(env: Env) -> None:
    created = await env.sdk.containers.create(name="analysis", expires_after={"anchor": "last_active_at",
                                                                              "minutes": 5}, memory_limit="4g")
    assert created.id.startswith("cntr_") and created.object == "container" and created.status == "running"
    assert created.expires_after is not None and created.expires_after.minutes == 5
    assert created.memory_limit == "4g" and created.last_active_at == created.created_at
    assert (await env.sdk.containers.retrieve(created.id)).model_dump() == created.model_dump()
    other = await env.sdk.containers.create(name="other")
    named = [c.id async for c in env.sdk.containers.list(name="analysis")]
    assert created.id in named and other.id not in named
    first = await env.sdk.containers.list(limit=1, order="asc")
    assert len(first.data) == 1 and first.has_more
    everything = [c.id async for c in env.sdk.containers.list(limit=1)]
    assert everything.index(other.id) < everything.index(created.id)  # newest first
    assert await env.sdk.containers.delete(created.id) is None
    with pytest.raises(openai.NotFoundError):
        await env.sdk.containers.retrieve(created.id)
    with pytest.raises(NotFound):
        await env.containers.get("another-project", other.id)


async def test_container_files(env: Env) -> None:
    container = await env.sdk.containers.create(name="files")
    uploaded = await env.sdk.containers.files.create(container.id, file=("notes.txt", b"hello"))
    assert uploaded.object == "container.file" and uploaded.path == "/mnt/data/notes.txt"
    assert uploaded.source == "user" and uploaded.bytes == 5 and uploaded.container_id == container.id
    source = await env.sdk.files.create(file=("table.csv", b"a,b\n1,2\n"), purpose="user_data")
    copied = await env.sdk.containers.files.create(container.id, file_id=source.id)
    assert copied.path == "/mnt/data/table.csv" and copied.bytes == 8
    listed = [f.id async for f in env.sdk.containers.files.list(container.id, order="asc")]
    assert listed == [uploaded.id, copied.id]
    again = await env.sdk.containers.files.retrieve(copied.id, container_id=container.id)
    assert again.model_dump() == copied.model_dump()
    content = await env.sdk.containers.files.content.retrieve(uploaded.id, container_id=container.id)
    assert content.read() == b"hello"
    replaced = await env.sdk.containers.files.create(container.id, file=("notes.txt", b"bye"))
    assert [f.id async for f in env.sdk.containers.files.list(container.id)] == [replaced.id, copied.id]
    await env.sdk.containers.files.delete(copied.id, container_id=container.id)
    with pytest.raises(openai.NotFoundError):
        await env.sdk.containers.files.retrieve(copied.id, container_id=container.id)
    with pytest.raises(openai.NotFoundError):
        await env.sdk.containers.files.list("cntr_missing")


async def test_container_validation(env: Env) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "x", "memory_limit": "8g"}, "memory_limit"),
        ({"name": "x", "memory_limit": "16g"}, "memory_limit"),  # above this server's maximum (4g)
        ({"name": "x", "network_policy": {"type": "allowlist", "allowed_domains": ["a.com"]}}, "network_policy.type"),
        ({"name": "x", "expires_after": {"anchor": "created_at", "minutes": 5}}, "expires_after.anchor"),
        ({}, "name"),
    ]
    for body, param in cases:
        response = await env.app.http.post("/v1/containers", json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["param"] == param, body
    missing = await env.app.http.post("/v1/containers", json={"name": "x", "file_ids": ["file-nope"]})
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "file_ids[0]"
    container = await env.sdk.containers.create(name="v")
    bad_name = await env.app.http.post(f"/v1/containers/{container.id}/files", files={"file": ("..", b"x")})
    assert bad_name.status_code == 400


# -- the code_interpreter tool ---------------------------------------------------------------------------


async def test_code_runs_and_state_persists_across_calls(env: Env) -> None:
    response = await ask(env, "x = 41", "x + 1", "print('done', x * 2)", include=["code_interpreter_call.outputs"])
    assert response.status == "completed"
    items = calls(response)
    assert [item["status"] for item in items] == ["completed"] * 3
    assert len({item["container_id"] for item in items}) == 1
    assert items[1]["outputs"] == [{"type": "logs", "logs": "42\n"}]
    assert items[2]["outputs"] == [{"type": "logs", "logs": "done 82\n"}]
    for item in response.output:
        ITEMS.validate_python(item.model_dump())
    assert response.output_text == "Result: Output:\ndone 82\n"
    hidden = await env.sdk.responses.retrieve(response.id)
    assert all(item["outputs"] is None for item in calls(hidden))
    shown = await env.sdk.responses.retrieve(response.id, include=["code_interpreter_call.outputs"])
    assert calls(shown)[1]["outputs"] == items[1]["outputs"]


async def test_streaming_events(env: Env) -> None:
    stream = await env.sdk.responses.create(model="code-agent", input=steps("print(6 * 7)"), tools=[AUTO],
                                            stream=True)
    events = [event async for event in stream]
    for event in events:
        EVENTS.validate_python(event.model_dump())
    kinds = [e.type for e in events if "code_interpreter" in e.type or
             (e.type.startswith("response.output_item") and getattr(e, "item", None) is not None
              and e.item.type == "code_interpreter_call")]
    assert kinds == ["response.output_item.added", "response.code_interpreter_call.in_progress",
                     "response.code_interpreter_call_code.delta", "response.code_interpreter_call_code.done",
                     "response.code_interpreter_call.interpreting", "response.code_interpreter_call.completed",
                     "response.output_item.done"]
    done = next(e for e in events if e.type == "response.code_interpreter_call_code.done")
    assert done.code == "print(6 * 7)"  # type: ignore[union-attr]
    final = events[-1]
    assert final.type == "response.completed"
    numbers = [e.sequence_number for e in events]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)


async def test_state_across_turns_with_auto(env: Env) -> None:
    first = await ask(env, "secret = 'kept'; open('/mnt/data/turn1.txt', 'w').write('one')")
    second = await ask(env, "print(secret, open('/mnt/data/turn1.txt').read())",
                       previous_response_id=first.id, include=["code_interpreter_call.outputs"])
    assert calls(first)[0]["container_id"] == calls(second)[0]["container_id"]
    assert calls(second)[0]["outputs"] == [{"type": "logs", "logs": "kept one\n"}]
    # The earlier call went upstream as the function call and output it was.
    messages = env.upstream.requests[-2]["messages"]
    assert any(m.get("tool_calls") and m["tool_calls"][0]["function"]["name"] == "python" for m in messages)


async def test_plot_saved_as_file_and_cited(env: Env) -> None:
    code = ("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\n"
            "plt.savefig('/mnt/data/plot.png')\nplt.show()")
    response = await ask(env, code, include=["code_interpreter_call.outputs"])
    item = calls(response)[0]
    assert any(o["type"] == "image" and o["url"].startswith("data:image/png;base64,") for o in item["outputs"])
    message = response.output[-1].model_dump()
    part = message["content"][0]
    [note] = part["annotations"]
    assert note["type"] == "container_file_citation" and note["filename"] == "plot.png"
    assert note["container_id"] == item["container_id"]
    assert part["text"][note["start_index"]:note["end_index"]] == "[plot.png](sandbox:/mnt/data/plot.png)"
    content = await env.sdk.containers.files.content.retrieve(note["file_id"], container_id=note["container_id"])
    assert content.read().startswith(b"\x89PNG")
    written = await env.sdk.containers.files.retrieve(note["file_id"], container_id=note["container_id"])
    assert written.source == "assistant" and written.path == "/mnt/data/plot.png"
    assert await _pending(env) == []  # the bytes were claimed by their row: nothing for the sweeper


async def _pending(env: Env) -> list[str]:
    """Keys of container file bytes that may have no row (what a crash would leave for the sweeper)."""
    store: SqlStore = env.app.app.state.runtime.store
    async with store.engine.connect() as conn:
        return list((await conn.execute(select(tables.pending_blobs.c.key))).scalars())


async def test_a_figure_that_cannot_be_returned_is_said_in_the_logs(env: Env) -> None:
    code = ("import matplotlib.pyplot as plt\nplt.figure(1); plt.plot([1, 2])\n"
            "plt.figure(2); plt.title(r'$\\frac{$')\nprint('drawn')")  # mathtext that cannot render
    response = await ask(env, code, include=["code_interpreter_call.outputs"])
    outputs = calls(response)[0]["outputs"]
    [image] = [o for o in outputs if o["type"] == "image"]
    assert image["url"].startswith("data:image/png;base64,")  # the good figure still comes back
    [logs] = [o["logs"] for o in outputs if o["type"] == "logs"]
    assert logs.startswith("drawn\n") and "[figure 2 not returned: ValueError" in logs
    assert "[figure 2 not returned" in env.tool_outputs()[0]  # the model is told too


async def test_file_ids_of_auto_container(env: Env) -> None:
    upload = await env.sdk.files.create(file=("numbers.csv", b"n\n1\n2\n3\n"), purpose="user_data")
    tool = {"type": "code_interpreter", "container": {"type": "auto", "file_ids": [upload.id]}}
    response = await ask(env, "import pandas as pd\nprint(pd.read_csv('/mnt/data/numbers.csv')['n'].sum())",
                         tools=[tool], include=["code_interpreter_call.outputs"])
    assert calls(response)[0]["outputs"] == [{"type": "logs", "logs": "6\n"}]
    unknown = {"type": "code_interpreter", "container": {"type": "auto", "file_ids": ["file-nope"]}}
    with pytest.raises(openai.NotFoundError) as caught:
        await ask(env, "1", tools=[unknown])
    assert caught.value.body["param"] == "tools[0].container.file_ids[0]"  # type: ignore[index]


async def test_errors_are_outputs_the_model_sees(env: Env) -> None:
    response = await ask(env, "1 / 0")
    assert response.status == "completed" and calls(response)[0]["status"] == "completed"
    assert "ZeroDivisionError: division by zero" in env.tool_outputs()[0]
    with pytest.raises(openai.NotFoundError) as caught:
        await ask(env, "1", tools=[{"type": "code_interpreter", "container": "cntr_missing"}])
    assert caught.value.body["param"] == "tools[0].container"  # type: ignore[index]


async def test_named_container_and_max_tool_calls(env: Env) -> None:
    container = await env.sdk.containers.create(name="named")
    tool = {"type": "code_interpreter", "container": container.id}
    response = await ask(env, "a = 1", "a + 1", "a + 2", tools=[tool], max_tool_calls=2)
    assert [item["container_id"] for item in calls(response)] == [container.id, container.id]


async def test_timeout_restarts_the_session(env: Env) -> None:
    response = await ask(env, "kept = 1", "while True: pass", "print(kept)")
    first, stopped, after = calls(response)
    assert stopped["status"] == "incomplete"
    outputs = env.tool_outputs()
    assert "stopped after 5 seconds" in outputs[1]
    assert RESTARTED in outputs[2] and "NameError" in outputs[2]
    assert response.status == "completed" and first["status"] == after["status"] == "completed"


async def test_unavailable_sandbox_is_refused(tmp_path: Path, env: Env) -> None:
    bare = settings(tmp_path, env.upstream.base_url, sandbox="bubblewrap", bwrap_path="/nonexistent/bwrap")
    async with in_process(bare) as app:
        with pytest.raises(openai.BadRequestError) as caught:
            await app.sdk().responses.create(model="code-agent", input="1", tools=[AUTO])
        assert caught.value.body["param"] == "tools[0].type"  # type: ignore[index]
        assert "no sandbox" in caught.value.message
        # The Containers API still works (files only).
        assert (await app.sdk().containers.create(name="files-only")).status == "running"


async def test_idle_containers_expire(env: Env) -> None:
    container = await env.sdk.containers.create(name="idle", expires_after={"anchor": "last_active_at",
                                                                           "minutes": 1})
    await env.sdk.containers.files.create(container.id, file=("a.txt", b"a"))
    store: SqlStore = env.app.app.state.runtime.store
    async with store.engine.begin() as conn:
        await conn.execute(update(tables.containers).where(tables.containers.c.id == container.id)
                           .values(last_active_at=container.created_at - 3600))
    assert (await env.sdk.containers.retrieve(container.id)).status == "expired"
    assert await env.containers.sweep() >= 1
    assert (await env.sdk.containers.retrieve(container.id)).status == "expired"
    assert [f async for f in env.sdk.containers.files.list(container.id)] == []
    assert await _pending(env) == []  # its file's bytes are gone, and so is their entry
    with pytest.raises(openai.BadRequestError) as caught:
        await ask(env, "1", tools=[{"type": "code_interpreter", "container": container.id}])
    assert caught.value.code == "container_expired"


async def test_session_on_another_process_starts_again_from_the_stored_files(env: Env) -> None:
    """Two apps on one database stand for two processes: a session lives in one; the other starts a new session
    from the stored files and says the variables are gone."""
    container = await env.sdk.containers.create(name="shared")
    one = env.containers
    project = "default"
    first = await one.run(project, container.id, "v = 7\nopen('/mnt/data/made.txt', 'w').write('by one')")
    assert first.result.ok and [f.path for f in first.files] == ["/mnt/data/made.txt"]
    async with in_process(settings(env.data_dir, env.upstream.base_url)) as second_app:
        two: ContainersService = second_app.app.state.runtime.containers
        await second_app.sdk().containers.files.create(container.id, file=("up.txt", b"by api"))
        moved = await two.run(project, container.id, "print(open('made.txt').read(), open('up.txt').read())\nv")
        assert RESTARTED in moved.notes and "NameError" in moved.result.logs
        assert moved.result.logs.startswith("by one by api\n")
        await two.run(project, container.id, "open('/mnt/data/two.txt', 'w').write('by two')")
    back = await one.run(project, container.id, "print(open('two.txt').read())")
    assert RESTARTED in back.notes and back.result.logs == "by two\n"
    same = await one.run(project, container.id, "print('again')")
    assert same.notes == []


async def test_limits_and_eviction(tmp_path: Path, env: Env) -> None:
    """One live session per process here: a second container's call stops the first's (idle) session, whose next
    call starts afresh; the project may have three running containers."""
    small = settings(tmp_path, env.upstream.base_url, max_sessions=1, max_containers_per_project=3)
    async with in_process(small) as app:
        sdk = app.sdk()
        service: ContainersService = app.app.state.runtime.containers
        first, second, _third = [(await sdk.containers.create(name=f"c{i}")).id for i in range(3)]
        with pytest.raises(openai.BadRequestError) as caught:
            await sdk.containers.create(name="one too many")
        assert caught.value.code == "container_limit_reached"
        assert (await service.run("default", first, "a = 1")).notes == []
        assert (await service.run("default", second, "b = 2")).notes == []
        again = await service.run("default", first, "print('a' in globals())")
        assert RESTARTED in again.notes and again.result.logs == "False\n"


async def test_an_auto_container_is_reused_along_a_conversation(env: Env) -> None:
    conversation = await env.sdk.conversations.create()
    first = await ask(env, "along = 'the conversation'", conversation=conversation.id)
    second = await ask(env, "print(along)", conversation=conversation.id, include=["code_interpreter_call.outputs"])
    assert calls(first)[0]["container_id"] == calls(second)[0]["container_id"]
    assert calls(second)[0]["outputs"] == [{"type": "logs", "logs": "the conversation\n"}]
    # Another conversation gets a container of its own.
    elsewhere = await ask(env, "print('new')", conversation=(await env.sdk.conversations.create()).id)
    assert calls(elsewhere)[0]["container_id"] != calls(first)[0]["container_id"]


async def test_the_insecure_mode_runs_code_only_when_named(tmp_path: Path, env: Env) -> None:
    named = settings(tmp_path, env.upstream.base_url, sandbox="insecure-no-sandbox")
    async with in_process(named) as app:
        sandbox = await app.app.state.runtime.containers.ready()
        assert sandbox.kind == "insecure" and "insecure-no-sandbox" in sandbox.reason
        response = await app.sdk().responses.create(model="code-agent", input=steps("print(6 * 7)"), tools=[AUTO],
                                                    include=["code_interpreter_call.outputs"])
        assert calls(response)[0]["outputs"] == [{"type": "logs", "logs": "42\n"}]


async def test_cancelling_a_background_run_stops_its_running_cell(tmp_path: Path, env: Env) -> None:
    """A cancelled run stops its running tool: the cell (which would run for its whole 10-minute limit) is
    interrupted and its session killed, not left running."""
    patient = Settings(data_dir=tmp_path, models=[ModelConfig(id="code-agent", base_url=env.upstream.base_url)],
                       embedded=EmbeddedConfig(enabled=False),
                       code_interpreter=CodeInterpreterConfig(cell_timeout_s=600))
    async with in_process(patient) as app:
        sdk, service = app.sdk(), app.app.state.runtime.containers
        container = await sdk.containers.create(name="cancel-me")
        tool = {"type": "code_interpreter", "container": container.id}
        code = "import time\nopen('/mnt/data/started', 'w').close()\nwhile True:\n    time.sleep(0.05)"
        created = await sdk.responses.create(model="code-agent", input=steps(code), tools=[tool],  # type: ignore[list-item]
                                             background=True)
        pool = service._pool
        assert pool is not None
        for _ in range(2000):  # until the cell runs: it made its file in the session's working copy
            workdir = pool.slot(container.id).workdir
            if workdir is not None and (workdir / "started").exists():
                break
            await asyncio.sleep(0.025)
        else:
            raise AssertionError("the cell never started")
        assert pool.slot(container.id).live
        cancelled = await sdk.responses.cancel(created.id)
        assert cancelled.status == "cancelled"
        for _ in range(2000):  # well under the cell's own limit
            if not pool.slot(container.id).live:
                break
            await asyncio.sleep(0.025)
        else:
            raise AssertionError("the cancelled run's cell is still running")
        after = await service.run("default", container.id, "print('next')")
        assert RESTARTED in after.notes and after.result.logs == "next\n"
