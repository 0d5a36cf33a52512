"""code_interpreter against real `parley serve` processes: the official SDK drives a container through a
response, and two processes on one PostgreSQL share the container — a session lives in one process, the other
starts a new one from the stored files (in the database) and tells the model its variables are gone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from compat_support import ParleyServer
from openai import OpenAI
from sqlalchemy.engine import make_url

from parley.services.containers import RESTARTED
from parley.testing.fake_coder import CoderUpstream, ThreadedCoderUpstream


def _config(upstream: CoderUpstream, database_url: str | None = None) -> str:
    database = f'database_url = "{database_url}"\n' if database_url else ""
    return (f'{database}[embedded]\nenabled = false\n[[models]]\nid = "code-agent"\n'
            f'base_url = "{upstream.base_url}"\n')


def _run(client: OpenAI, container_id: str, *codes: str, **kwargs: Any) -> Any:
    return client.responses.create(model="code-agent", input=json.dumps(list(codes)),
                                   tools=[{"type": "code_interpreter", "container": container_id}], **kwargs)


def _tool_outputs(upstream: CoderUpstream) -> list[str]:
    return [m["content"] for m in upstream.requests[-1]["messages"] if m["role"] == "tool"]


def test_a_served_response_runs_code_and_streams_its_events(tmp_path: Path) -> None:
    with ThreadedCoderUpstream() as upstream:
        server = ParleyServer(tmp_path, _config(upstream))
        server.start()
        try:
            client = OpenAI(base_url=server.base_url, api_key="local", max_retries=0)
            with client.responses.stream(model="code-agent", input=json.dumps(["n = 6", "n * 7"]),
                                         tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
                                         include=["code_interpreter_call.outputs"]) as stream:
                kinds = [event.type for event in stream]
                final = stream.get_final_response()
            assert kinds.count("response.code_interpreter_call.completed") == 2
            calls = [item for item in final.output if item.type == "code_interpreter_call"]
            assert calls[1].outputs is not None and calls[1].outputs[0].logs == "42\n"  # type: ignore[union-attr]
            assert final.output_text == "Result: Output:\n42\n"
        finally:
            server.stop()


@pytest.mark.slow
def test_two_processes_on_one_postgres_share_a_container(postgres_server: Any, tmp_path: Path) -> None:
    database_url = make_url(postgres_server.get_uri(driver="asyncpg")).render_as_string(hide_password=False)
    with ThreadedCoderUpstream() as upstream:
        first = ParleyServer(tmp_path / "a", _config(upstream, database_url))
        second = ParleyServer(tmp_path / "b", _config(upstream, database_url))
        first.start()
        second.start()
        try:
            a = OpenAI(base_url=first.base_url, api_key="local", max_retries=0)
            b = OpenAI(base_url=second.base_url, api_key="local", max_retries=0)
            container = a.containers.create(name="shared")
            _run(a, container.id, "v = 7\nopen('/mnt/data/from_a.txt', 'w').write('written on a')")
            b.containers.files.create(container.id, file=("from_b.txt", b"uploaded to b"))
            _run(b, container.id, "print(open('from_a.txt').read(), open('from_b.txt').read())\nv")
            [moved] = _tool_outputs(upstream)
            assert RESTARTED in moved and "written on a uploaded to b" in moved and "NameError" in moved
            _run(b, container.id, "w = 1")
            _run(b, container.id, "print(w)")
            assert RESTARTED not in _tool_outputs(upstream)[0]  # b's session lives on
            paths = sorted(f.path for f in a.containers.files.list(container.id))
            assert paths == ["/mnt/data/from_a.txt", "/mnt/data/from_b.txt"]
            # The files' bytes live in the database, in neither data dir.
            for server in (first, second):
                assert not [p for p in (server.data_dir / "container_files").rglob("*") if p.is_file()]
        finally:
            first.stop()
            second.stop()
