"""/v1/files against real `parley serve` processes with the official SDK: the whole API, the 413, a 200 MB
upload whose memory stays bounded (the server's RSS is measured), and two processes on one PostgreSQL reading
each other's files."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from compat_support import ParleyServer, check_error_body
from openai import OpenAI
from tests.pg_support import new_database

MIB = 1024 * 1024


def test_files_round_trip(client: OpenAI) -> None:
    created = client.files.create(file=("notes.txt", b"remember the milk\n"), purpose="user_data",
                                  expires_after={"anchor": "created_at", "seconds": 86400})
    assert created.id.startswith("file-") and created.expires_at == created.created_at + 86400
    assert client.files.wait_for_processing(created.id, poll_interval=0.01).status == "processed"
    assert client.files.retrieve(created.id) == created
    assert client.files.content(created.id).content == b"remember the milk\n"
    more = [client.files.create(file=(f"m{n}.txt", b"m"), purpose="assistants") for n in range(3)]
    ids = [created.id] + [f.id for f in more]
    assert [f.id for f in client.files.list(limit=1, order="asc") if f.id in ids] == ids  # auto-pagination
    for f in [created, *more]:
        assert client.files.delete(f.id).deleted
    with pytest.raises(openai.NotFoundError) as missing:
        client.files.retrieve(created.id)
    error = check_error_body(missing.value.response.json(), 404)
    assert created.id in error["message"]
    with pytest.raises(openai.BadRequestError) as bad:
        client.files.create(file=("x.txt", b"x"), purpose="fine-tune-results")  # type: ignore[arg-type]
    assert bad.value.param == "purpose"


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ParleyServer]:
    server = ParleyServer(tmp_path_factory.mktemp("parley-files-limit"),
                          "[embedded]\nenabled = false\n[files]\nmax_bytes = 1000000\n")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_the_size_limit_is_a_413_over_the_wire(limited: ParleyServer, tmp_path: Path) -> None:
    sdk = OpenAI(base_url=limited.base_url, api_key="local", max_retries=0)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3_000_000))
    with big.open("rb") as source, pytest.raises(openai.APIStatusError) as caught:
        sdk.files.create(file=source, purpose="assistants")
    assert caught.value.status_code == 413
    check_error_body(caught.value.response.json(), 413)
    fits = sdk.files.create(file=("fits.bin", b"y" * 1_000_000), purpose="assistants")  # the server is fine after
    assert fits.bytes == 1_000_000
    stored = [p for p in (limited.data_dir / "files").rglob("*") if p.is_file()]
    assert [p.name for p in stored] == [fits.id]  # nothing of the refused upload is left


class PeakRss:
    """Samples a process's resident set size (VmRSS) every 20 ms in a thread; `peak` in bytes."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while piece := source.read(MIB):
            digest.update(piece)
    return digest.hexdigest()


def _upload_200mb(server: ParleyServer, tmp_path: Path, label: str) -> dict[str, Any]:
    sdk = OpenAI(base_url=server.base_url, api_key="local", max_retries=0, timeout=300)
    path = tmp_path / "big.bin"
    with path.open("wb") as out:
        for _ in range(200):
            out.write(os.urandom(MIB))
    sdk.files.create(file=("warm.txt", b"warm up"), purpose="assistants")
    assert server.process is not None
    sampler = PeakRss(server.process.pid)
    before = sampler.rss()
    with sampler:
        started = time.monotonic()
        with path.open("rb") as source:
            created = sdk.files.create(file=source, purpose="assistants")
        upload_s = time.monotonic() - started
    assert created.bytes == 200 * MIB
    download = tmp_path / "back.bin"
    with PeakRss(server.process.pid) as reading, \
            sdk.files.with_streaming_response.content(created.id) as response, download.open("wb") as out:
        for piece in response.iter_bytes(MIB):
            out.write(piece)
    assert _sha256(download) == _sha256(path)
    report = {"storage": label, "rss_before_mb": round(before / MIB), "upload_peak_mb": round(sampler.peak / MIB),
              "download_peak_mb": round(reading.peak / MIB), "upload_s": round(upload_s, 1)}
    print("\n200 MB upload:", report)
    # Held whole, 200 MB would show; streamed, the server grows by a few pieces of 1 MiB plus buffers.
    assert sampler.peak - before < 80 * MIB, report
    assert reading.peak - before < 80 * MIB, report
    return report


@pytest.mark.slow
def test_a_200mb_upload_keeps_memory_bounded_on_disk(tmp_path: Path) -> None:
    server = ParleyServer(tmp_path / "srv", "[embedded]\nenabled = false\n")
    server.start()
    try:
        _upload_200mb(server, tmp_path, "sqlite + disk")
    finally:
        server.stop()


def _postgres_url(postgres_server: Any) -> str:
    """A new database (tests/pg_support.py), not the default one other tests share: a server there would first take
    up what they leave (queued runs, half-ingested files), which loaded the embedding model and ran that work beside
    the upload whose memory is measured here (the crash tests' leftovers did, 58b3292)."""
    return asyncio.run(new_database(postgres_server, "parley_files"))


@pytest.mark.slow
def test_a_200mb_upload_keeps_memory_bounded_in_postgres(postgres_server: Any, tmp_path: Path) -> None:
    config = f'database_url = "{_postgres_url(postgres_server)}"\n[embedded]\nenabled = false\n'
    server = ParleyServer(tmp_path / "srv", config)
    server.start()
    try:
        _upload_200mb(server, tmp_path, "postgresql")
    finally:
        server.stop()


@pytest.mark.slow
def test_two_processes_on_one_postgres_read_each_others_files(postgres_server: Any, tmp_path: Path) -> None:
    config = f'database_url = "{_postgres_url(postgres_server)}"\n[embedded]\nenabled = false\n'
    first = ParleyServer(tmp_path / "a", config)
    second = ParleyServer(tmp_path / "b", config)
    first.start()
    second.start()
    try:
        a = OpenAI(base_url=first.base_url, api_key="local", max_retries=0)
        b = OpenAI(base_url=second.base_url, api_key="local", max_retries=0)
        data = os.urandom(3 * MIB + 5)  # several blocks
        made_on_a = a.files.create(file=("shared.bin", data), purpose="assistants")
        assert b.files.retrieve(made_on_a.id) == made_on_a
        assert b.files.content(made_on_a.id).content == data
        made_on_b = b.files.create(file=("back.txt", b"from b"), purpose="user_data")
        assert a.files.content(made_on_b.id).content == b"from b"
        assert {made_on_a.id, made_on_b.id} <= {f.id for f in a.files.list()}
        assert b.files.delete(made_on_a.id).deleted
        with pytest.raises(openai.NotFoundError):
            a.files.content(made_on_a.id)
        a.files.delete(made_on_b.id)
        # The bytes lived in the database, never in either data dir.
        for server in (first, second):
            assert not [p for p in (server.data_dir / "files").rglob("*") if p.is_file()]
    finally:
        first.stop()
        second.stop()
