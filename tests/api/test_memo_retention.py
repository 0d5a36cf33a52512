"""Through the app: requests that start a context keep nothing in the prefix memos once they end (their items are
never handed out again), while a previous_response_id chain keeps its entry for its next turn, and the next turn
still uses it (the upstream is sent the same messages as a fresh translation gives)."""

from __future__ import annotations

from pathlib import Path

from parley.config import EmbeddedConfig, ModelConfig, Settings
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import in_process


async def test_fresh_requests_leave_no_memo_entries_and_chains_keep_theirs(tmp_path: Path) -> None:
    fake = FakeUpstream()
    await fake.start()
    try:
        settings = Settings(data_dir=tmp_path, models=[ModelConfig(id="echo", base_url=fake.base_url,
                                                                   upstream_model="echo")],
                            embedded=EmbeddedConfig(enabled=False), chain_cache_bytes=1 << 20)
        async with in_process(settings) as served:
            runtime = served.app.state.runtime
            measures = runtime.responses._file_inputs.measures.memo
            translations = runtime.models.get("echo").provider.inner.memo  # inside telemetry's ObservedProvider
            client = served.sdk()
            first = None
            for n in range(5):
                first = await client.responses.create(model="echo", input=f"hello {n}")
            assert (len(measures), len(translations)) == (0, 0)
            assert first is not None
            second = await client.responses.create(model="echo", input="and then?", previous_response_id=first.id)
            third = await client.responses.create(model="echo", input="and now?", previous_response_id=second.id)
            assert len(translations) >= 1 and len(measures) >= 1
            sent = fake.requests[-1]["messages"]
            assert [m["content"] for m in sent if m["role"] == "user"] == ["hello 4", "and then?", "and now?"]
            assert third.status == "completed"
    finally:
        await fake.stop()
