"""Vector stores against real `parley serve` processes embedding through an OpenAI-compatible upstream (the fake
embeddings server over real HTTP): ingestion survives a SIGKILL mid-file (re-claimed after its lease, completed,
no duplicate chunks), batches are cancelled, and a failing upstream fails the file with a clear last_error."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from compat_support import ParleyServer, wait_for
from openai import OpenAI

from parley.testing.fake_embeddings import FakeEmbeddings, ThreadedFakeEmbeddings

pytestmark = pytest.mark.slow


@pytest.fixture
def embeddings() -> Iterator[FakeEmbeddings]:
    with ThreadedFakeEmbeddings(FakeEmbeddings(dimensions=64, key="sk-embeddings")) as fake:
        yield fake


def _config(fake: FakeEmbeddings, db: Path, **vector_stores: Any) -> str:
    lines = [f'database_url = "sqlite+aiosqlite:///{db}"', "[embedded]", "enabled = false", "[embeddings]",
             f'base_url = "{fake.base_url}"', 'model = "fake-embed"', 'api_key_env = "EMBEDDINGS_TEST_KEY"',
             # an hour: a request the fake holds is only ever ended by the server stopping the work (or a kill)
             "batch_size = 2", "timeout_s = 3600",
             "[vector_stores]", "lease_s = 1.0", "poll_s = 0.05"]
    lines += [f"{key} = {value}" for key, value in vector_stores.items()]
    return "\n".join(lines) + "\n"


def _client(server: ParleyServer) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key="sk-local", max_retries=0, timeout=30.0)


def _wait_file(client: OpenAI, store_id: str, file_id: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = client.vector_stores.files.retrieve(file_id, vector_store_id=store_id)
        if current.status != "in_progress":
            return current
        time.sleep(0.1)
    raise AssertionError(f"{file_id} is still in progress")


def _server(workdir: Path, config: str, key: str = "sk-embeddings") -> ParleyServer:
    server = ParleyServer(workdir, config)
    os.environ["EMBEDDINGS_TEST_KEY"] = key  # read by the child through api_key_env
    try:
        server.start()
    finally:
        del os.environ["EMBEDDINGS_TEST_KEY"]
    return server


LONG = "\n\n".join(f"Paragraph {i}: the lighthouse keeper number {i} logs storms, tides and passing ships."
                   for i in range(120))


def test_ingestion_survives_sigkill(embeddings: FakeEmbeddings, tmp_path: Path) -> None:
    db = tmp_path / "vs.db"
    config = _config(embeddings, db)
    doomed = _server(tmp_path / "one", config)
    try:
        with _client(doomed) as client:
            store = client.vector_stores.create(name="durable")
            uploaded = client.files.create(file=("log.txt", LONG.encode()), purpose="assistants")
            # ~20 requests of 2 chunks: four are answered, then the fake holds the next one until after the kill, so
            # the kill lands mid-file however slow the machine is (it was a 0.3 s delay per request and a race).
            embeddings.hold_after = len(embeddings.requests) + 4
            client.vector_stores.files.create(vector_store_id=store.id, file_id=uploaded.id,
                                              chunking_strategy={"type": "static", "static": {
                                                  "max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}})
            assert wait_for(lambda: embeddings.held >= 1, timeout=60)
            assert client.vector_stores.files.retrieve(uploaded.id, vector_store_id=store.id).status == "in_progress"
    finally:
        assert doomed.process is not None
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait(5)
        embeddings.hold_after = None
    # The new process uses the same data dir (the file's bytes) and database.
    survivor = _server(tmp_path / "one", config)
    try:
        with _client(survivor) as client:
            done = _wait_file(client, store.id, uploaded.id)
            assert done.status == "completed" and done.last_error is None
            hits = client.vector_stores.search(store.id, query="lighthouse keeper number 77 storms")
            assert hits.data and "keeper number 77" in hits.data[0].content[0].text
            content = client.vector_stores.files.content(uploaded.id, vector_store_id=store.id)
            assert "".join(part.text for part in content.data) == LONG
    finally:
        survivor.stop()
    with sqlite3.connect(db) as conn:
        (chunks,), = conn.execute("SELECT count(*) FROM vector_store_chunks")
        (positions,), = conn.execute("SELECT count(DISTINCT position) FROM vector_store_chunks")
        (attempts,), = conn.execute("SELECT attempts FROM vector_store_files")
    assert chunks == positions and chunks > 10  # each chunk once
    assert attempts == 2  # claimed by the killed process, then by the survivor once its lease ran out


def test_cancel_batch_and_upstream_failures(embeddings: FakeEmbeddings, tmp_path: Path) -> None:
    # One file at a time: the one being indexed when the batch is cancelled is the only one ever claimed.
    server = _server(tmp_path / "srv", _config(embeddings, tmp_path / "vs.db", max_attempts=1, max_concurrent=1))
    try:
        with _client(server) as client:
            store = client.vector_stores.create(name="batches")
            embeddings.hold_after = len(embeddings.requests)  # every request waits: the worker is caught mid-file
            files = [client.files.create(file=(f"f{i}.txt", LONG.encode()), purpose="assistants").id
                     for i in range(3)]
            batch = client.vector_stores.file_batches.create(store.id, file_ids=files, chunking_strategy={
                "type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}})
            assert batch.status == "in_progress" and batch.file_counts.in_progress == 3
            assert wait_for(lambda: embeddings.held == 1, timeout=60)  # mid-file, waiting for its embeddings
            abandoned = embeddings.abandoned
            cancelled = client.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id)
            assert cancelled.status == "cancelled" and cancelled.file_counts.cancelled == 3
            # The worker notices at its next lease renewal and stops: it hangs up on the request it was waiting for
            # (nothing else ends it: the fake holds it and the server's timeout is an hour). Then it writes nothing.
            assert wait_for(lambda: embeddings.abandoned > abandoned and embeddings.held == 0, timeout=60)
            embeddings.hold_after = None
            listed = client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id)
            assert {f.status for f in listed.data} == {"cancelled"}
            assert client.vector_stores.search(store.id, query="lighthouse").data == []

            broken = client.files.create(file=("boom.txt", b"this text makes the upstream say boom"),
                                         purpose="assistants")
            client.vector_stores.files.create(vector_store_id=store.id, file_id=broken.id)
            failed = _wait_file(client, store.id, broken.id)
            assert failed.status == "failed" and failed.last_error is not None
            assert failed.last_error.code == "server_error" and "embedding" in failed.last_error.message
            retrieved = client.vector_stores.retrieve(store.id)
            assert retrieved.file_counts.failed == 1 and retrieved.status == "completed"
    finally:
        server.stop()
    assert "sk-embeddings" not in server.log()
