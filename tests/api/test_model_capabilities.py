"""`GET /v1/models` says what each model supports (`capabilities`, from its profile and kind), still a valid SDK
`Model`; and the embedded model, built without vision, refuses an image with a 400 instead of sending it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from openai.types import Model

from parley.config import EmbeddedConfig, ModelConfig, ProfileOverrides, RouteConfig, Settings
from parley.testing.in_process import in_process

FAKE_CHILD = Path(__file__).parent.parent / "providers" / "fake_embedded_child.py"
IMAGE = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJ"
         "RU5ErkJggg==")


def _settings(tmp_path: Path) -> Settings:
    embedded = EmbeddedConfig(model_id="tiny", model_path=FAKE_CHILD, restart_backoff_s=0.01,
                              server_command=[sys.executable, str(FAKE_CHILD), "serve"])
    url = "http://127.0.0.1:9/v1"
    return Settings(data_dir=tmp_path, embedded=embedded, models=[
        ModelConfig(id="gpt", base_url=url, profile="openai", context_window=128000),
        ModelConfig(id="ollama", base_url=url, profile="ollama", quirks=ProfileOverrides(vision=False)),
        ModelConfig(id="claude", base_url=url, provider="anthropic", profile="anthropic"),
        ModelConfig(id="azure", base_url=url, provider="openai_responses", profile="azure",
                    hosted_tools=["web_search"]),
    ], routes=[RouteConfig(id="any", deployments=["gpt", "ollama"], aliases=["any-2"])])


async def test_models_list_their_capabilities(tmp_path: Path) -> None:
    async with in_process(_settings(tmp_path)) as parley:
        listed = (await parley.http.get("/v1/models")).json()["data"]
        by_id: dict[str, dict[str, Any]] = {m["id"]: m["capabilities"] for m in listed}
        for model in listed:
            Model.model_validate(model)
            assert (await parley.http.get(f"/v1/models/{model['id']}")).json() == model
    assert by_id["gpt"] == {"context_window": 128000, "vision": True, "native_files": True, "reasoning_effort": True,
                            "tool_choice": "native", "structured_output": "native", "hosted_tools": []}
    assert by_id["ollama"]["vision"] is False and by_id["ollama"]["tool_choice"] == "checked"
    assert by_id["ollama"]["native_files"] is False and by_id["ollama"]["reasoning_effort"] is False
    assert by_id["claude"]["native_files"] is True and by_id["claude"]["hosted_tools"] == []
    assert by_id["azure"]["hosted_tools"] == ["web_search"]
    assert by_id["tiny"]["vision"] is False and by_id["tiny"]["structured_output"] == "native"
    assert by_id["tiny"]["tool_choice"] == "native"  # the embedded child forces "required" too (a grammar)
    # A route supports what all its deployments do; its context window is the smallest; it lists them.
    assert by_id["any"] == by_id["any-2"] == {
        "context_window": 8192, "vision": False, "native_files": False, "reasoning_effort": False,
        "tool_choice": "checked", "structured_output": "native", "hosted_tools": []}
    routes = {m["id"]: m.get("deployments") for m in listed}
    assert routes["any"] == routes["any-2"] == ["gpt", "ollama"] and routes["gpt"] is None


async def test_the_embedded_model_refuses_images(tmp_path: Path) -> None:
    async with in_process(_settings(tmp_path)) as parley:
        resp = await parley.http.post("/v1/responses", json={"model": "tiny", "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "what is this?"}, {"type": "input_image", "image_url": IMAGE}]}]})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "input[0].content[1]"
