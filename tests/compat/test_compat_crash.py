"""Crash consistency against real `parley serve` processes: a SIGKILL between two writes that belong together
must leave either both or neither.

To kill a process at exactly that point, the test holds a PostgreSQL lock the server's second write needs (a row
lock on the conversation, a table lock): the server blocks there, the test sees a backend waiting on its lock
(`pg_blocking_pids`), SIGKILLs the server, releases the lock, and restarts a server on the same database. Nothing
here waits on time: every wait is for state the test can observe, with a generous deadline. The last test kills a
server under load at no chosen point and checks what every client was told survived.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import openai
import pytest
from compat_support import ParleyServer, check_events, fold_text, metric, model_toml
from openai import OpenAI
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from tests.pg_support import new_database

from parley.testing.fake_embeddings import FakeEmbeddings, ThreadedFakeEmbeddings
from parley.testing.fake_upstream import FakeUpstream

pytestmark = pytest.mark.slow

DEADLINE_S = 60.0


async def _urls(postgres_server: Any) -> tuple[str, str]:
    """(Parley's database_url, a DSN for asyncpg) of a new database (tests/pg_support.py): what a crash leaves in a
    shared one on purpose (queued background runs, half-ingested vector store files) would be resumed by every later
    server on it."""
    url = await new_database(postgres_server, "parley_crash")
    return url, make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _client(server: ParleyServer) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key="sk-local", max_retries=0, timeout=DEADLINE_S)


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.05)


class Holder:
    """A connection of the test's own, holding locks in an open transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.pid: int = conn.get_server_pid()

    async def blocked(self) -> bool:
        """Whether some backend waits on a lock this connection holds."""
        # Inside a transaction pg_stat_activity is read once and kept: a backend the server connected after the first
        # look would never show. Read it afresh each time.
        await self.conn.execute("SELECT pg_stat_clear_snapshot()")
        waiting = await self.conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", self.pid)
        return bool(waiting)


@contextlib.asynccontextmanager
async def _holder(dsn: str) -> AsyncIterator[Holder]:
    conn = await asyncpg.connect(dsn)
    try:
        yield Holder(conn)
    finally:
        await conn.close()


def _start(workdir: Path, config: str) -> ParleyServer:
    server = ParleyServer(workdir, config)
    server.start()
    return server


def _sigkill(server: ParleyServer) -> None:
    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)


async def _kill_once_blocked(server: ParleyServer, holder: Holder, work: Callable[[], None], what: str) -> None:
    """Starts `work` (a client call the held lock stops) in a thread, and SIGKILLs the server once it waits on it."""
    _in_thread(work)
    await _until(holder.blocked, what)
    await asyncio.to_thread(_sigkill, server)


def _in_thread(work: Callable[[], None]) -> threading.Thread:
    """A client call that will hang on the blocked server, then fail when it is killed."""

    def run() -> None:
        try:
            work()
        except (openai.APIConnectionError, openai.APIStatusError):
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _config(fake: FakeUpstream, database_url: str) -> str:
    return (f'database_url = "{database_url}"\n' + "".join(model_toml(m, fake.base_url, m) for m in ("echo", "slow"))
            + "[embedded]\nenabled = false\n[background]\nlease_s = 1.0\n")


def _conversation_ids(client: OpenAI, conversation_id: str) -> list[str]:
    return [item.id for item in client.conversations.items.list(conversation_id, order="asc")]


@pytest.mark.parametrize("background", [False, True], ids=["streamed", "background"])
async def test_a_turn_is_stored_with_its_conversation_append_or_not_at_all(
    fake: FakeUpstream, postgres_server: Any, tmp_path: Path, background: bool
) -> None:
    """A response on a conversation is stored and appended to the conversation in one transaction. It used to be
    two: a SIGKILL between them left a response `completed` (a background one announced so to every poller and
    follower) whose turn its conversation never got, nor would get."""
    database_url, dsn = await _urls(postgres_server)
    config = _config(fake, database_url)
    server = await asyncio.to_thread(_start, tmp_path / "doomed", config)
    client = _client(server)
    conversation = client.conversations.create(items=[{"role": "user", "content": "before the crash"}])
    before = _conversation_ids(client, conversation.id)
    seen: list[str] = []
    async with _holder(dsn) as holder:
        async with holder.conn.transaction():
            # The append's first statement is an UPDATE of this row: it waits here.
            await holder.conn.execute("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", conversation.id)
            if background:
                created = client.responses.create(model="echo", input="the turn", conversation=conversation.id,
                                                  background=True)
                seen.append(created.id)
            else:
                def stream() -> None:
                    with _client(server) as own, own.responses.stream(
                        model="slow", input="the turn", conversation=conversation.id
                    ) as events:  # slow: response.created goes out in a batch of its own
                        for event in events:
                            if event.type == "response.created":
                                seen.append(event.response.id)

                _in_thread(stream)
            await _until(holder.blocked, "the server waits on the conversation's row lock")
            await asyncio.to_thread(_sigkill, server)
    client.close()
    response_id = seen[0]

    survivor = await asyncio.to_thread(_start, tmp_path / "survivor", config)
    try:
        with _client(survivor) as client:
            if background:
                async def ended() -> bool:
                    return client.responses.retrieve(response_id).status not in ("queued", "in_progress")

                await _until(ended, "the interrupted background response ends")
                # The final flush (status, log, output and the append) never committed. If the run had logged
                # events before, it was interrupted: failed, nothing appended. If not (the echo's whole answer can
                # come in one read), it was queued again and ran on the restarted server: completed, its turn
                # appended once.
                ended_as = client.responses.retrieve(response_id)
                assert ended_as.status in ("failed", "completed")
                if ended_as.status == "completed":
                    turn = _conversation_ids(client, conversation.id)[len(before):]
                    assert len(turn) == 2 and turn[-1] == ended_as.output[-1].id  # its input, its output
                    before += turn
            else:
                with pytest.raises(openai.NotFoundError):  # never stored: the client never saw it complete
                    client.responses.retrieve(response_id)
            assert _conversation_ids(client, conversation.id) == before
            # And the conversation takes the next turn as if nothing happened.
            after = client.responses.create(model="echo", input="after the crash", conversation=conversation.id)
            assert after.output_text == "echo: after the crash"
            assert _conversation_ids(client, conversation.id)[:len(before)] == before
            assert _conversation_ids(client, conversation.id)[-1] == after.output[-1].id
    finally:
        survivor.stop()


@pytest.fixture
def embeddings() -> Iterator[FakeEmbeddings]:
    with ThreadedFakeEmbeddings(FakeEmbeddings(dimensions=64)) as fake:
        yield fake


def _files_config(embeddings: FakeEmbeddings, database_url: str) -> str:
    # PostgreSQL keeps file bytes in the database (file_chunks), where the test can hold them.
    return (f'database_url = "{database_url}"\n[embedded]\nenabled = false\n[embeddings]\n'
            f'base_url = "{embeddings.base_url}"\nmodel = "fake-embed"\n[vector_stores]\npoll_s = 0.05\n')


async def test_a_file_deleted_when_the_process_dies_is_deleted_whole_after_the_restart(
    embeddings: FakeEmbeddings, postgres_server: Any, tmp_path: Path
) -> None:
    """Deleting a file removes its row, its bytes and its chunks in every vector store (OpenAI: "Delete a file and
    remove it from all vector stores"). The row went first: a SIGKILL after it left the bytes, and the file in its
    vector stores (listed, searched), for good. Now the row is made invisible first and goes last; what a crash
    leaves is an expired row the sweeper finishes (at start-up here)."""
    database_url, dsn = await _urls(postgres_server)
    config = _files_config(embeddings, database_url)
    server = await asyncio.to_thread(_start, tmp_path / "doomed", config)
    client = _client(server)
    uploaded = client.files.create(file=("tides.txt", b"The tide tables of the lighthouse keeper."),
                                   purpose="assistants")
    store = client.vector_stores.create(name="tides", file_ids=[uploaded.id])

    async def indexed() -> bool:
        return client.vector_stores.files.retrieve(uploaded.id, vector_store_id=store.id).status == "completed"

    await _until(indexed, "the file is indexed")
    async with _holder(dsn) as holder:
        async with holder.conn.transaction():
            await holder.conn.execute("LOCK TABLE file_chunks IN SHARE MODE")  # its bytes cannot be deleted

            def delete() -> None:
                with _client(server) as own:
                    own.files.delete(uploaded.id)

            await _kill_once_blocked(server, holder, delete, "the server waits to delete the file's bytes")
        client.close()

        survivor = await asyncio.to_thread(_start, tmp_path / "survivor", config)
        try:
            with _client(survivor) as client:

                async def gone() -> bool:
                    chunks = await holder.conn.fetchval("SELECT count(*) FROM file_chunks WHERE file_id = $1",
                                                        uploaded.id)
                    rows = await holder.conn.fetchval("SELECT count(*) FROM files WHERE id = $1", uploaded.id)
                    listed = [f.id for f in client.vector_stores.files.list(store.id)]
                    return chunks == 0 and rows == 0 and uploaded.id not in listed

                await _until(gone, "the file's row, bytes and vector store entry are gone")
                with pytest.raises(openai.NotFoundError):
                    client.files.retrieve(uploaded.id)
                hits = client.vector_stores.search(store.id, query="tide tables lighthouse keeper")
                assert hits.data == []
        finally:
            survivor.stop()


async def test_a_vector_store_created_with_files_is_never_left_without_them(
    embeddings: FakeEmbeddings, postgres_server: Any, tmp_path: Path
) -> None:
    """`vector_stores.create(file_ids=...)` inserted the store, then attached its files in a second transaction: a
    SIGKILL between left a store listed with no files, which the client (never answered) did not know of. Now one
    transaction: the store exists with its files or not at all."""
    database_url, dsn = await _urls(postgres_server)
    config = _files_config(embeddings, database_url)
    server = await asyncio.to_thread(_start, tmp_path / "doomed", config)
    client = _client(server)
    uploaded = client.files.create(file=("notes.txt", b"Notes of the harbour master."), purpose="assistants")
    name = f"created-at-the-crash-{uploaded.id}"
    async with _holder(dsn) as holder:
        async with holder.conn.transaction():
            await holder.conn.execute("LOCK TABLE vector_store_files IN SHARE MODE")  # no file can be attached

            def create() -> None:
                with _client(server) as own:
                    own.vector_stores.create(name=name, file_ids=[uploaded.id])

            await _kill_once_blocked(server, holder, create, "the server waits to attach the store's files")
    client.close()

    survivor = await asyncio.to_thread(_start, tmp_path / "survivor", config)
    try:
        with _client(survivor) as client:
            assert [s.id for s in client.vector_stores.list() if s.name == name] == []
            retried = client.vector_stores.create(name=name, file_ids=[uploaded.id])  # the client's retry
            assert [s.id for s in client.vector_stores.list() if s.name == name] == [retried.id]
            assert [f.id for f in client.vector_stores.files.list(retried.id)] == [uploaded.id]
    finally:
        survivor.stop()


_ORPHAN_BYTES = """SELECT DISTINCT c.file_id FROM file_chunks c WHERE c.file_id LIKE 'cfile%'
                   AND NOT EXISTS (SELECT 1 FROM container_files f WHERE f.id = c.file_id)"""


@pytest.mark.parametrize("step", ["create", "upload", "delete"])
async def test_container_file_bytes_a_crash_left_without_a_row_are_removed(
    postgres_server: Any, tmp_path: Path, step: str
) -> None:
    """A container file's bytes are stored before its row and removed after it: a SIGKILL between left bytes no row
    refers to, never removed, and `containers.create(file_ids=...)` left the container listed without its files.
    Now the bytes pend while they may have no row (a write's entry is dropped in its row's transaction; the sweeper
    removes unclaimed bytes after `orphan_grace_s`, a deleted row's at once), and a container is inserted with its
    files' rows."""
    database_url, dsn = await _urls(postgres_server)
    config = (f'database_url = "{database_url}"\n[embedded]\nenabled = false\n'
              "[code_interpreter]\norphan_grace_s = 1\nsweep_interval_s = 0.2\n")
    server = await asyncio.to_thread(_start, tmp_path / "doomed", config)
    client = _client(server)
    source = client.files.create(file=("tally.csv", b"day,count\n1,4\n2,9\n"), purpose="assistants")
    name = f"crash-{step}-{source.id}"
    container = client.containers.create(name=f"{name}-target") if step != "create" else None
    if container is not None and step == "delete":
        client.containers.files.create(container.id, file=("upload.txt", b"deleted with its container"))
    async with _holder(dsn) as holder:
        orphans_before = {row[0] for row in await holder.conn.fetch(_ORPHAN_BYTES)}
        async with holder.conn.transaction():
            # No file row can be written (create, upload), no bytes deleted (delete).
            table = "file_chunks" if step == "delete" else "container_files"
            await holder.conn.execute(f"LOCK TABLE {table} IN SHARE MODE")

            def act() -> None:
                with _client(server) as own:
                    if container is None:
                        own.containers.create(name=name, file_ids=[source.id])
                    elif step == "upload":
                        own.containers.files.create(container.id, file=("upload.txt", b"uploaded before the crash"))
                    else:
                        own.containers.delete(container.id)

            await _kill_once_blocked(server, holder, act, f"the server waits on the {table} lock")
        client.close()
        stored = {row[0] for row in await holder.conn.fetch(_ORPHAN_BYTES)} - orphans_before
        assert stored, "bytes without a row: stored before it, or left after it"

        survivor = await asyncio.to_thread(_start, tmp_path / "survivor", config)
        try:
            with _client(survivor) as client:
                if container is None:
                    assert [c.id for c in client.containers.list() if c.name == name] == []
                elif step == "upload":
                    assert list(client.containers.files.list(container.id)) == []
                else:
                    with pytest.raises(openai.NotFoundError):
                        client.containers.retrieve(container.id)

                async def swept() -> bool:
                    return not {row[0] for row in await holder.conn.fetch(_ORPHAN_BYTES)} & stored

                await _until(swept, "the bytes without a row are removed")
                pending = await holder.conn.fetchval("SELECT count(*) FROM pending_blobs WHERE key = ANY($1)",
                                                     list(stored))
                assert pending == 0
        finally:
            survivor.stop()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_what_a_client_was_told_survives_a_sigkill_under_load(
    fake: FakeUpstream, tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """Many concurrent writes merged into group commits (responses streamed and not, turns on conversations,
    `store: false`, conversation items), SIGKILLed after some were answered. After a restart on the same data:
    every response a client was answered for (a 200, or a stream's terminal event) is retrievable as it was told,
    with its input items and, on a conversation, its turn; every item append answered is there; no response is left
    in progress; every conversation's positions run 0..n-1 without a gap."""
    if backend == "sqlite":
        database_url = f"sqlite+aiosqlite:///{tmp_path / 'load.db'}"
    else:
        database_url, _ = await _urls(request.getfixturevalue("postgres_server"))
    config = _config(fake, database_url)
    server = await asyncio.to_thread(_start, tmp_path / "doomed", config)
    told: dict[str, tuple[str, str | None]] = {}  # response id -> (its text, its conversation)
    appended: list[tuple[str, list[str]]] = []
    answered = asyncio.Event()
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-local", max_retries=0,
                                  timeout=DEADLINE_S) as client:
        conversations = [(await client.conversations.create()).id for _ in range(3)]

        async def one(i: int) -> None:
            conversation = conversations[i % 3] if i % 4 < 2 else None
            kwargs: dict[str, Any] = {"conversation": conversation} if conversation else {}
            try:
                if i % 5 == 0:
                    page = await client.conversations.items.create(
                        conversations[i % 3], items=[{"role": "user", "content": f"item {i}"}] * 2)
                    appended.append((conversations[i % 3], [item.id for item in page.data]))
                elif i % 5 == 1:
                    await client.responses.create(model="echo", input=f"unstored {i}", store=False, **kwargs)
                elif i % 5 == 2:
                    async with client.responses.stream(model="echo", input=f"streamed {i}", **kwargs) as stream:
                        final = await stream.get_final_response()
                    told[final.id] = (final.output_text, conversation)
                else:
                    response = await client.responses.create(model="echo", input=f"whole {i}", **kwargs)
                    told[response.id] = (response.output_text, conversation)
            except (openai.APIConnectionError, openai.APIStatusError):
                return  # cut by the SIGKILL
            if len(told) >= 15:  # responses answered (item appends alone can all be answered before any)
                answered.set()

        tasks = [asyncio.create_task(one(i)) for i in range(120)]
        await asyncio.wait_for(answered.wait(), DEADLINE_S)
        await asyncio.to_thread(_sigkill, server)
        await asyncio.gather(*tasks)
    assert len(told) >= 15

    survivor = await asyncio.to_thread(_start, tmp_path / "survivor", config)
    try:
        with _client(survivor) as reader:
            items = {conversation: _conversation_ids(reader, conversation) for conversation in conversations}
            for response_id, (answer, conversation) in told.items():
                stored = reader.responses.retrieve(response_id)
                assert (stored.status, stored.output_text) == ("completed", answer)
                assert [item.id for item in reader.responses.input_items.list(response_id)]
                if conversation is not None:
                    assert {item.id for item in stored.output} <= set(items[conversation])
            for conversation, ids in appended:
                assert set(ids) <= set(items[conversation])
    finally:
        survivor.stop()
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text(
                "SELECT count(*) FROM responses WHERE status IN ('queued', 'in_progress')"))).scalar() == 0
            for conversation in conversations:
                positions = (await conn.execute(text(
                    "SELECT position FROM conversation_items WHERE conversation_id = :c ORDER BY position"),
                    {"c": conversation})).scalars().all()
                next_position = (await conn.execute(text(
                    "SELECT next_position FROM conversations WHERE id = :c"), {"c": conversation})).scalar()
                assert list(positions) == list(range(next_position))
    finally:
        await engine.dispose()


async def test_a_background_run_killed_before_it_started_runs_again(fake: FakeUpstream, tmp_path: Path) -> None:
    """A background job claimed by a process that died before its run logged anything (here: still waiting for its
    upstream to answer) was failed as "interrupted", though nothing of it had happened: no event, no sequence number
    used. It is now queued again and runs to completion on the restarted server (a job is claimed 3 times at most)."""
    database = tmp_path / "bg.db"
    with socket.create_server(("127.0.0.1", 0)) as sink:  # accepts connections, never answers
        sink_url = f"http://127.0.0.1:{sink.getsockname()[1]}/v1"
        background = "[embedded]\nenabled = false\n[background]\nlease_s = 1.0\n"
        doomed_config = (f'database_url = "sqlite+aiosqlite:///{database}"\n'
                         + model_toml("later", sink_url, "echo", read_timeout_s=600.0) + background)
        server = await asyncio.to_thread(_start, tmp_path / "doomed", doomed_config)
        with _client(server) as client:
            created = client.responses.create(model="later", input="run me once it can", background=True)

        def claimed() -> bool:
            with contextlib.closing(sqlite3.connect(database)) as conn:
                state = conn.execute("SELECT state FROM background_jobs WHERE response_id = ?", (created.id,))
                return bool(state.fetchone() == ("running",))

        async def is_claimed() -> bool:
            return claimed()

        await _until(is_claimed, "the job is claimed (its run waits on the upstream)")
        await asyncio.to_thread(_sigkill, server)

    config = (f'database_url = "sqlite+aiosqlite:///{database}"\n'
              + model_toml("later", fake.base_url, "echo") + background)
    survivor = await asyncio.to_thread(_start, tmp_path / "survivor", config)
    try:
        with _client(survivor) as client:
            async def ended() -> bool:
                return client.responses.retrieve(created.id).status not in ("queued", "in_progress")

            await _until(ended, "the background response ends")
            done = client.responses.retrieve(created.id)
            assert (done.status, done.output_text) == ("completed", "echo: run me once it can")
            with httpx.stream("GET", f"{survivor.base_url}/responses/{created.id}", params={"stream": "true"},
                              timeout=DEADLINE_S) as replay:
                log = [json.loads(line[6:]) for line in replay.iter_lines() if line.startswith("data: {")]
            check_events(log)  # one log, sequence numbers 0..n, one terminal event
            assert [e["type"] for e in log[:3]] == ["response.created", "response.queued", "response.in_progress"]
            assert log[-1]["type"] == "response.completed"
    finally:
        survivor.stop()


async def test_a_lease_renewed_late_does_not_fail_the_run_in_its_own_process(
    fake: FakeUpstream, postgres_server: Any, tmp_path: Path
) -> None:
    """A lease renewal that commits after the lease it sets has run out (a slow commit, a stalled process; here the
    test holds the job's row) is stale at once. The process's own lease pass, right after it, took its own live run
    for one whose process had died and failed it as "interrupted" while it ran (with lease_s = 1 on a busy machine,
    test_compat_background.py's SIGKILL test could see its run failed before the kill). A process never takes the
    runs it runs for dead; the next renewal makes the lease current again."""
    database_url, dsn = await _urls(postgres_server)
    config = (f'database_url = "{database_url}"\n' + model_toml("text-held", fake.base_url, "text-held")
              + "[embedded]\nenabled = false\n[background]\nlease_s = 1.0\n")
    server = await asyncio.to_thread(_start, tmp_path / "server", config)
    try:
        with _client(server) as client:
            created = client.responses.create(model="text-held", input="hold me", background=True)  # held open

            async def running() -> bool:
                return client.responses.retrieve(created.id).status == "in_progress"

            await _until(running, "the run is in progress")
            async with _holder(dsn) as holder:
                async with holder.conn.transaction():
                    await holder.conn.execute("SELECT 1 FROM background_jobs WHERE response_id = $1 FOR UPDATE",
                                              created.id)

                    async def renewal_outwaited_its_lease() -> bool:
                        # The lease it writes was computed before it was sent (<= query_start): over by now.
                        await holder.conn.execute("SELECT pg_stat_clear_snapshot()")  # as in Holder.blocked
                        return bool(await holder.conn.fetchval(
                            "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))"
                            " AND clock_timestamp() - query_start > interval '1.0 s'", holder.pid))

                    await _until(renewal_outwaited_its_lease, "the server's lease renewal waits longer than the lease")
                    released_ms = time.time() * 1000  # the held renewal's lease ended before this

                async def passed() -> bool:  # the lease pass after the stale renewal is done either way
                    job = await holder.conn.fetchrow(
                        "SELECT state, lease_until FROM background_jobs WHERE response_id = $1", created.id)
                    return bool(job["state"] != "running" or job["lease_until"] > released_ms)

                await _until(passed, "the job is ended, or its lease renewed after the stale one")
                state = await holder.conn.fetchval("SELECT state FROM background_jobs WHERE response_id = $1",
                                                   created.id)
            assert (state, client.responses.retrieve(created.id).status) == ("running", "in_progress")
            assert client.responses.cancel(created.id).status == "cancelled"  # it still runs, and stops as asked
    finally:
        server.stop()


async def test_a_run_another_process_ended_while_its_own_stalled_stops_there_quietly(
    fake: FakeUpstream, postgres_server: Any, tmp_path: Path
) -> None:
    """A process that stalls past its lease (here SIGSTOP: a long GC pause, a stopped VM) has its live run failed as
    "interrupted" by another process, exactly once. When it resumes, its lease renewal finds the job no longer its
    own: it stops the run there, closing the upstream call, writing nothing more and logging one line, no exception.
    It used to keep the call open (text-held: for an hour) until a flush collided on a sequence number and the run
    "crashed". The server holds no transaction when it is stopped (checked), so the other process is never blocked."""
    database_url, dsn = await _urls(postgres_server)
    config = (f'database_url = "{database_url}"\n' + model_toml("text-held", fake.base_url, "text-held")
              + "[embedded]\nenabled = false\n[background]\nlease_s = 1.0\n")
    stalled = await asyncio.to_thread(_start, tmp_path / "stalled", config)
    other: ParleyServer | None = None
    stopped = False
    try:
        async with _holder(dsn) as holder:
            with _client(stalled) as client:
                created = client.responses.create(model="text-held", input="hold me please", background=True)

            async def held() -> bool:  # "echo: hold me please" logged but its last word: the upstream holds
                return bool(await holder.conn.fetchval(
                    "SELECT count(*) FROM response_events WHERE response_id = $1"
                    " AND data LIKE 'event: response.output_text.delta%'", created.id) == 3)

            await _until(held, "the run has logged its text and waits on the held upstream")
            disconnects = fake.disconnects.count("text-held")

            async def stop_between_transactions() -> bool:
                nonlocal stopped
                assert stalled.process is not None
                if stopped:  # stopped inside a transaction (a lease renewal, say): let it go on, stop it again next
                    stalled.process.send_signal(signal.SIGCONT)
                    stopped = False
                    return False
                stalled.process.send_signal(signal.SIGSTOP)
                stopped = True
                await holder.conn.execute("SELECT pg_stat_clear_snapshot()")
                # Every backend of the stopped server idle: it holds no lock, no transaction the other needs.
                return not await holder.conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> $1"
                    " AND backend_type = 'client backend' AND state <> 'idle'", holder.pid)

            await _until(stop_between_transactions, "the server is stopped outside any transaction")
            other = await asyncio.to_thread(_start, tmp_path / "other", config)

            async def ended_by_the_other() -> bool:
                row = await holder.conn.fetchrow(
                    "SELECT r.status, j.state FROM responses r JOIN background_jobs j ON j.response_id = r.id"
                    " WHERE r.id = $1", created.id)
                return bool(tuple(row) == ("failed", "done"))

            await _until(ended_by_the_other, "the other process fails the stalled process's run")
            assert stalled.process is not None
            stalled.process.send_signal(signal.SIGCONT)
            stopped = False

            async def upstream_closed() -> bool:
                return fake.disconnects.count("text-held") > disconnects

            await _until(upstream_closed, "the resumed process closes the run's upstream call")

            async def run_gone() -> bool:  # its task has ended: nothing of it can write any more
                return await asyncio.to_thread(metric, stalled, "parley_background_running") == 0

            await _until(run_gone, "the resumed process's run has ended")
            events = [row["data"] for row in await holder.conn.fetch(
                "SELECT data FROM response_events WHERE response_id = $1 ORDER BY seq", created.id)]
            status = await holder.conn.fetchval("SELECT status FROM responses WHERE id = $1", created.id)
        kinds = [data.split("\n", 1)[0].removeprefix("event: ") for data in events]
        terminal = [kind for kind in kinds if kind in ("response.completed", "response.failed",
                                                       "response.incomplete")]
        assert terminal == ["response.failed"] and kinds[-1] == "response.failed", kinds
        assert status == "failed"
        with _client(stalled) as client:  # the resumed server answers, and tells what the other process stored
            assert client.responses.retrieve(created.id).status == "failed"
        with httpx.stream("GET", f"{stalled.base_url}/responses/{created.id}", params={"stream": "true"},
                          timeout=DEADLINE_S) as replay:
            log_events = [json.loads(line[6:]) for line in replay.iter_lines() if line.startswith("data: {")]
        check_events(log_events)  # one log, sequence numbers 0..n, one terminal event
        assert fold_text(log_events) == "echo: hold me" and log_events[-1]["type"] == "response.failed"
        log = stalled.log()
        assert "its lease ran out while this process stalled" in log, log
        assert "Traceback" not in log and "crashed" not in log and "could not be ended" not in log, log
    finally:
        if stopped and stalled.process is not None:
            stalled.process.send_signal(signal.SIGCONT)
        stalled.stop()
        if other is not None:
            other.stop()
