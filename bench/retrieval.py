"""Retrieval benchmark: ingestion speed and answer quality of Parley's vector stores on a real public document set
(the Python 3.11 documentation from Debian's python3.11-doc), and search latency at 10k and 100k chunks on SQLite
and PostgreSQL (bench/retrieval_scale.py). Prints one JSON document; progress goes to stderr.

    apt-get install python3.11-doc      # the documents (/usr/share/doc/python3.11/html/_sources)
    .venv/bin/python -m bench.retrieval --output /tmp/retrieval.json

Quality: the files are uploaded and indexed through the services a server runs (Files, a vector store file batch,
the ingestion worker with the local all-MiniLM-L6-v2); each question (bench/retrieval_corpus.py) is searched with
hybrid_search weights from BM25 only (embedding_weight 0) to vectors only (1). recall@5: the share of questions
with an answering chunk in the first 5 results; MRR@10: the mean of 1/rank of the first answering chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from bench.report import emit
from bench.retrieval_corpus import DEFAULT_CORPUS, Question, answers, corpus_files, questions
from parley.config import EmbeddingsConfig, Settings
from parley.providers.http1 import Http1Pool
from parley.providers.tokens import Encodings
from parley.schema.vector_stores import CreateFileBatchRequest, CreateVectorStoreRequest
from parley.services.files import FileLimits, FilesService, FileUpload
from parley.services.ingestion import IngestionWorker
from parley.services.vector_stores import VectorStoresService, start_vector_stores
from parley.store.blobs import blob_storage
from parley.store.sql import SqlStore

PROJECT = "bench"
WEIGHTS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)  # embedding_weight; text_weight = 1 - it


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def ingest(service: VectorStoresService, files: FilesService, worker: IngestionWorker, store: SqlStore,
                 root: Path, paths: list[Path]) -> tuple[str, dict[str, Any]]:
    created = await service.create(PROJECT, CreateVectorStoreRequest(name="python-docs"))
    ids = []
    started = time.monotonic()
    for path in paths:
        record = await files.create_from_bytes(PROJECT, FileUpload(str(path.relative_to(root)), "assistants"),
                                               path.read_bytes())
        ids.append(record.id)
    uploaded = time.monotonic()
    await service.create_batch(PROJECT, created["id"], CreateFileBatchRequest(file_ids=ids))
    while (counts := (await store.file_counts([created["id"]]))[created["id"]]).in_progress:
        await asyncio.sleep(0.5)
        progress(f"  indexed {counts.total - counts.in_progress}/{counts.total} files, {worker.stats.chunks} chunks")
    seconds = time.monotonic() - uploaded
    stats = worker.stats
    return created["id"], {
        "files": len(paths), "bytes": sum(p.stat().st_size for p in paths), "failed": counts.failed,
        "chunks": stats.chunks, "upload_s": round(uploaded - started, 2), "index_s": round(seconds, 2),
        "files_per_s": round(len(paths) / seconds, 2), "chunks_per_s": round(stats.chunks / seconds, 2),
        "embedding_share": round(stats.embed_s / stats.busy_s, 3) if stats.busy_s else None,
        "outside_embedding_share": round(1 - stats.embed_s / stats.busy_s, 3) if stats.busy_s else None,
        "stage_s": {k: round(v, 2) for k, v in stats.stages.items()},
    }


async def evaluate(service: VectorStoresService, store_id: str, asked: list[Question],
                   embedding_weight: float) -> dict[str, Any]:
    ranking = {"hybrid_search": {"embedding_weight": embedding_weight, "text_weight": 1 - embedding_weight}}
    recall, reciprocal, latencies = [], [], []
    kinds: dict[str, list[float]] = {}
    for question in asked:
        started = time.perf_counter()
        hits = await service.search(PROJECT, [store_id], [question.query], max_num_results=10,
                                    ranking_options=ranking)
        latencies.append((time.perf_counter() - started) * 1000)
        rank = next((i + 1 for i, h in enumerate(hits) if answers(question, h.filename, h.text)), None)
        recall.append(1.0 if rank is not None and rank <= 5 else 0.0)
        reciprocal.append(1 / rank if rank else 0.0)
        kinds.setdefault(question.kind, []).append(recall[-1])
    return {"embedding_weight": embedding_weight, "text_weight": round(1 - embedding_weight, 2),
            "recall@5": round(statistics.mean(recall), 3), "mrr@10": round(statistics.mean(reciprocal), 3),
            "recall@5_by_kind": {k: round(statistics.mean(v), 3) for k, v in kinds.items()},
            "search_ms_p50": round(statistics.median(latencies), 1)}


async def quality(args: argparse.Namespace) -> dict[str, Any]:
    root: Path = args.corpus
    if not await asyncio.to_thread(root.is_dir):
        raise SystemExit(f"{root} not found: apt-get install python3.11-doc (or give --corpus)")
    paths = corpus_files(root, args.files)
    asked = questions(root, paths, args.questions)
    results: dict[str, Any] = {"corpus": {"source": "Debian python3.11-doc, reStructuredText sources",
                                          "path": str(root), "files": len(paths)},
                               "questions": {"total": len(asked),
                                             "title": sum(q.kind == "title" for q in asked),
                                             "sentence": sum(q.kind == "sentence" for q in asked)},
                               "long_text": args.long_text}
    with tempfile.TemporaryDirectory(prefix="parley-bench-") as tmp:
        data_dir = args.data_dir or Path(tmp)
        settings = Settings(data_dir=data_dir, embeddings=EmbeddingsConfig(long_text=args.long_text))
        saved = data_dir / "ingestion.json"  # --data-dir: an index made by an earlier run is reused
        async with AsyncExitStack() as stack:
            data_dir.mkdir(parents=True, exist_ok=True)
            store = await SqlStore.open(settings.effective_database_url)
            stack.push_async_callback(store.close)
            http = Http1Pool()
            stack.push_async_callback(http.close)
            files = FilesService(store, blob_storage(settings, store), FileLimits())
            service, worker = await start_vector_stores(settings, store, files, http, Encodings(), stack)
            if saved.exists():
                store_id, results["ingestion"] = json.loads(saved.read_text())
            else:
                progress(f"ingesting {len(paths)} files ({args.long_text})")
                store_id, results["ingestion"] = await ingest(service, files, worker, store, root, paths)
                saved.write_text(json.dumps([store_id, results["ingestion"]]))
            progress(f"asking {len(asked)} questions")
            sweep = [await evaluate(service, store_id, asked, w) for w in WEIGHTS]
    results["sweep"] = sweep
    results["bm25"] = sweep[0]
    results["vectors"] = sweep[-1]
    default = await _default_weight()
    results["hybrid"] = next(s for s in sweep if abs(s["embedding_weight"] - default) < 1e-9)
    return results


async def _default_weight() -> float:
    from parley.retrieval.ranking import DEFAULT_EMBEDDING_WEIGHT

    return DEFAULT_EMBEDDING_WEIGHT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--files", type=int, default=120, help="documents indexed (an even spread; 497 in all)")
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--long-text", choices=("mean", "truncate"), default="mean",
                        help="how the local model embeds chunks longer than its 256 word pieces")
    parser.add_argument("--scale", type=int, nargs="*", default=[10_000, 100_000], help="chunk counts (0: skip)")
    parser.add_argument("--databases", nargs="*", default=["sqlite", "postgres"])
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--data-dir", type=Path, help="keep the indexes here (quality and scale); a later run with it "
                        "skips indexing")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    report: dict[str, Any] = {"machine": {"cpus": __import__("os").cpu_count()}}
    if not args.skip_quality:
        report["quality"] = asyncio.run(quality(args))
    sizes = [n for n in args.scale if n > 0]
    if sizes:
        from bench.retrieval_scale import scale

        report["scale"] = asyncio.run(scale(sizes, args.databases, progress, args.data_dir))
    emit(report, args.output)


if __name__ == "__main__":
    main()
