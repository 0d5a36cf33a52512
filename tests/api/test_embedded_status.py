"""The embedded model's status over the API, with a fake child (no real model): `GET /v1/models` lists it with
`status` and `status_reason` (still a valid SDK `Model`), and once its child is given up on, requests to it
get a 503 in the OpenAI error shape saying why."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from openai.types import Model

from parley.config import EmbeddedConfig, Settings
from parley.testing.in_process import InProcess, in_process

FAKE_CHILD = Path(__file__).parent.parent / "providers" / "fake_embedded_child.py"
MODEL = "fake-embedded"


def _settings(tmp_path: Path, mode: str) -> Settings:
    embedded = EmbeddedConfig(model_id=MODEL, model_path=FAKE_CHILD, restart_backoff_s=0.01, max_failures=2,
                              server_command=[sys.executable, str(FAKE_CHILD), mode])
    return Settings(data_dir=tmp_path, embedded=embedded)


async def _listed(parley: InProcess) -> dict[str, Any]:
    listed = (await parley.http.get("/v1/models")).json()["data"]
    [model] = [m for m in listed if m["id"] == MODEL]
    one = (await parley.http.get(f"/v1/models/{MODEL}")).json()
    assert one == model
    Model.model_validate(model)
    return dict(model)


async def test_a_crashing_embedded_model_is_a_503_and_listed_unavailable(tmp_path: Path) -> None:
    async with in_process(_settings(tmp_path, "segfault")) as parley:
        for stream in (False, True):
            resp = await parley.http.post("/v1/responses", json={"model": MODEL, "input": "hi", "stream": stream})
            assert resp.status_code == 503
            error = resp.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert (error["type"], error["code"], error["param"]) == ("server_error", "model_unavailable", "model")
            assert "embedded model" in error["message"] and "SIGSEGV" in error["message"]
        model = await _listed(parley)
        assert model["status"] == "unavailable"
        assert "SIGSEGV" in model["status_reason"] and "illegal memory access" in model["status_reason"]
        sdk_model = (await parley.sdk().models.retrieve(MODEL)).model_extra or {}
        assert sdk_model["status"] == "unavailable"


async def test_a_working_embedded_model_is_listed_ready(tmp_path: Path) -> None:
    async with in_process(_settings(tmp_path, "serve")) as parley:
        resp = await parley.http.post("/v1/responses", json={"model": MODEL, "input": "hi"})
        assert resp.status_code == 200 and resp.json()["status"] == "completed"
        model = await _listed(parley)
        assert (model["status"], model["status_reason"]) == ("ready", None)
