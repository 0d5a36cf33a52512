"""A serving process freezes what start-up built out of the collector's scans; tests and tools do not."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from parley.app import create_app
from parley.config import EmbeddedConfig, Settings
from parley.gc_tuning import YOUNG_THRESHOLD


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.parametrize("serving", [True, False])
async def test_only_a_serving_app_tunes_the_collector(tmp_path: Path, restore_gc: None, serving: bool) -> None:
    before = gc.get_threshold()
    app = create_app(Settings(data_dir=tmp_path, embedded=EmbeddedConfig(enabled=False)), serving=serving)
    async with app.router.lifespan_context(app):
        if serving:
            assert gc.get_freeze_count() > 10_000  # modules, schemas, the runtime: no longer scanned
            assert gc.get_threshold() == (YOUNG_THRESHOLD, *before[1:])
        else:
            assert gc.get_freeze_count() == 0
            assert gc.get_threshold() == before
