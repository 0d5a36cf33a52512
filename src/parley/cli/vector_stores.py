"""`parley vector-stores create NAME --from DIR`: a folder's files uploaded through the Files service, attached to a
new vector store in batches and indexed by an ingestion worker in this process (a running server on the same
database helps), with a progress bar and a summary line. No server is needed."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from parley.config import Settings

vector_stores_app = typer.Typer(no_args_is_help=True, help="Vector stores (as /v1/vector_stores keeps them).")
_BATCH = 2000  # files per file batch (the API's limit)


@dataclass(frozen=True, slots=True)
class Summary:
    store_id: str
    files: int
    failed: list[tuple[str, str]]  # (file name, why)
    chunks: int
    seconds: float


def folder_files(root: Path) -> list[Path]:
    """Every regular file under `root`, hidden ones (and hidden folders) left out, in path order."""
    return sorted(p for p in root.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


async def create_from_folder(settings: Settings, name: str, root: Path, project: str,
                             progress: Progress | None = None) -> Summary:
    from parley.errors import ParleyError
    from parley.providers.http1 import Http1Pool
    from parley.providers.tokens import Encodings
    from parley.schema.vector_stores import CreateFileBatchRequest, CreateVectorStoreRequest
    from parley.services.files import FileLimits, FilesService, FileUpload
    from parley.services.vector_stores import start_vector_stores
    from parley.store.base import PageQuery
    from parley.store.blobs import CHUNK_BYTES, blob_storage
    from parley.store.sql import SqlStore

    async def pieces(path: Path) -> AsyncIterator[bytes]:
        with path.open("rb") as source:
            while piece := await asyncio.to_thread(source.read, CHUNK_BYTES):
                yield piece

    started = time.monotonic()
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    paths = folder_files(root)
    async with AsyncExitStack() as stack:
        store = await SqlStore.open(settings.effective_database_url)
        stack.push_async_callback(store.close)
        http = Http1Pool()
        stack.push_async_callback(http.close)
        cfg = settings.files
        files = FilesService(store, blob_storage(settings, store), FileLimits(cfg.max_bytes, cfg.upload_timeout_s))
        service, _worker = await start_vector_stores(settings, store, files, http, Encodings(), stack)
        created = await service.create(project, CreateVectorStoreRequest(name=name))
        store_id = created["id"]
        failed: list[tuple[str, str]] = []
        uploading = progress.add_task("uploading", total=len(paths)) if progress else None
        ids: list[str] = []
        for path in paths:
            try:
                uploaded = await files.create(project, pieces(path), FileUpload(str(path.relative_to(root)),
                                                                                "assistants"))
                ids.append(uploaded.id)
            except (ParleyError, OSError) as err:
                failed.append((str(path.relative_to(root)), getattr(err, "message", None) or str(err)))
            if progress and uploading is not None:
                progress.advance(uploading)
        for start in range(0, len(ids), _BATCH):
            await service.create_batch(project, store_id, CreateFileBatchRequest(file_ids=ids[start:start + _BATCH]))
        indexing = progress.add_task("indexing", total=len(ids)) if progress else None
        while True:
            counts = (await store.file_counts([store_id]))[store_id]
            if progress and indexing is not None:
                progress.update(indexing, completed=counts.total - counts.in_progress)
            if not counts.in_progress:
                break
            await asyncio.sleep(0.2)
        chunks, after = 0, None
        while True:
            records, more = await store.list_store_files(store_id, None, PageQuery(limit=100, order="asc",
                                                                                    after=after))
            for attached in records:
                chunks += attached.chunk_count
                if attached.status != "completed":
                    why = (attached.last_error or {}).get("message", attached.status)
                    failed.append((attached.filename, why))
            if not more or not records:
                break
            after = records[-1].file_id
    return Summary(store_id, len(paths), failed, chunks, time.monotonic() - started)


@vector_stores_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The vector store's name")],
    source: Annotated[Path, typer.Option("--from", exists=True, file_okay=False, dir_okay=True, readable=True,
                                         help="Folder whose files (recursively) go into the store")],
    project: Annotated[str, typer.Option(help="Project the store and files belong to")] = "default",
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Data directory (SQLite, files)")] = None,
    database_url: Annotated[str | None, typer.Option("--database-url", help="SQLAlchemy URL")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML config file")] = None,
) -> None:
    """Create a vector store from a folder and wait until its files are indexed."""
    from parley.cli.main import _settings
    from parley.errors import ParleyError

    settings = _settings(data_dir=data_dir, database_url=database_url, config_file=config)
    columns = (TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, transient=True) as progress:
            summary = asyncio.run(create_from_folder(settings, name, source, project, progress))
    except ParleyError as err:
        typer.echo(f"parley: {err.message}", err=True)
        raise typer.Exit(1) from None
    for filename, why in summary.failed:
        typer.echo(f"parley: {filename}: {why}", err=True)
    typer.echo(json.dumps({"id": summary.store_id, "name": name, "files": summary.files,
                           "failed": len(summary.failed), "chunks": summary.chunks}))
    typer.echo(f"vector store {summary.store_id}: {summary.files} files, {summary.chunks} chunks, "
               f"{len(summary.failed)} failed, in {summary.seconds:.1f} s", err=True)
    if summary.failed:
        raise typer.Exit(1)
