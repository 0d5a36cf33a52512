"""Model-written code is hostile input: each escape attempt runs in a container's session (the sandbox this host
detected) while Parley keeps answering other requests, and each is contained."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from parley.config import CodeInterpreterConfig, EmbeddedConfig, ModelConfig, Settings
from parley.sandbox import workdir
from parley.sandbox.launch import Runtime
from parley.services.containers import RESTARTED, ContainersService, RunOutcome
from parley.testing.fake_upstream import FakeUpstream
from parley.testing.in_process import InProcess, in_process

PROJECT = "default"
QUOTA = 32 * 1024 * 1024


@dataclass
class Env:
    app: InProcess
    upstream: FakeUpstream
    data_dir: Path
    answered: int = 0

    @property
    def containers(self) -> ContainersService:
        service: ContainersService = self.app.app.state.runtime.containers
        return service

    async def container(self, name: str = "escape") -> str:
        return (await self.app.sdk().containers.create(name=name)).id

    async def contained(self, container_id: str, code: str) -> RunOutcome:
        """Run the code; meanwhile the server must keep answering (a health check and a model response, again and
        again while the code runs: `answered` counts the rounds that finished before it did)."""
        task = asyncio.ensure_future(self.containers.run(PROJECT, container_id, code))
        sdk = self.app.sdk()
        self.answered = 0
        while True:
            assert (await self.app.http.get("/health")).status_code == 200
            reply = await sdk.responses.create(model="echo", input="still here")
            assert reply.output_text == "echo: still here"
            if task.done():
                return task.result()
            self.answered += 1
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    upstream = FakeUpstream()
    await upstream.start()
    data_dir = tmp_path_factory.mktemp("escapes")
    code = CodeInterpreterConfig(cell_timeout_s=4, disk_quota_bytes=QUOTA, max_file_bytes=8 * 1024 * 1024,
                                 max_processes=32, max_files=200)
    config = Settings(data_dir=data_dir, models=[ModelConfig(id="echo", base_url=upstream.base_url)],
                      embedded=EmbeddedConfig(enabled=False), code_interpreter=code)
    async with in_process(config) as app:
        environment = Env(app, upstream, data_dir)
        sandbox = await environment.containers.ready()
        assert sandbox.available, sandbox.reason
        yield environment
    await upstream.stop()


async def test_no_network(env: Env) -> None:
    host, port = env.upstream.base_url.split("//")[1].split("/")[0].split(":")
    code = f"""
import socket
for address in [({host!r}, {port}), ("1.1.1.1", 443), ("::1", {port})]:
    try:
        socket.create_connection(address, timeout=1)
        print("CONNECTED", address)
    except OSError as err:
        print("blocked", type(err).__name__)
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)
    print("NETLINK")
except OSError:
    print("no netlink")
"""
    outcome = await env.contained(await env.container(), code)
    assert "CONNECTED" not in outcome.result.logs and "NETLINK" not in outcome.result.logs
    assert outcome.result.logs.count("blocked") == 3


async def test_no_reading_parley_data_keys_database_or_environment(env: Env) -> None:
    secrets = [env.data_dir / "parley.db", env.data_dir / "reasoning.key", Path.cwd() / "pyproject.toml"]
    code = f"""
import os
for path in {[str(p) for p in secrets]!r} + ["/proc/1/environ", "/etc/shadow", "/root/.bash_history"]:
    try:
        open(path, "rb").read(1)
        print("READ", path)
    except OSError as err:
        print("denied", type(err).__name__)
print(sorted(k for k in os.environ if "PARLEY" in k or "KEY" in k or "TOKEN" in k))
print(os.listdir("/"))
"""
    os.environ["PARLEY_TEST_SECRET_KEY"] = "must-not-leak"
    try:
        outcome = await env.contained(await env.container(), code)
    finally:
        del os.environ["PARLEY_TEST_SECRET_KEY"]
    logs = outcome.result.logs
    assert "READ" not in logs and "must-not-leak" not in logs and "[]\n" in logs
    visible = set(eval(logs.splitlines()[-1]))  # the sandbox's root: the system, the runtime, its data, nothing else
    runtime_roots = {Path(p).parts[1] for p in Runtime.of().read_only}  # where this venv lives (e.g. /check in CI)
    assert visible <= {"usr", "bin", "sbin", "lib", "lib64", "lib32", "libx32", "etc", "opt", "mnt", "tmp", "proc",
                       "dev"} | runtime_roots, visible
    assert not visible & {Path(p).parts[1] for p in (env.data_dir, Path.cwd())} - runtime_roots - {"tmp"}, visible


async def test_no_writing_outside_the_container(env: Env) -> None:
    target = env.data_dir / "planted.txt"
    code = f"""
for path in [{str(target)!r}, "/usr/planted", "/opt/parley-sandbox/planted", "/planted"]:
    try:
        open(path, "w").write("x")
        print("WROTE", path)
    except OSError as err:
        print("denied", type(err).__name__)
open("/tmp/private.txt", "w").write("only in the sandbox's /tmp")
"""
    outcome = await env.contained(await env.container(), code)
    assert "WROTE" not in outcome.result.logs and outcome.result.logs.count("denied") == 4
    assert not await asyncio.to_thread(os.path.exists, target)
    assert not await asyncio.to_thread(os.path.exists, "/tmp/private.txt")
    assert outcome.files == []  # /tmp is not /mnt/data


async def test_symlinks_do_not_reach_host_files(env: Env) -> None:
    """A link planted in /mnt/data is neither read by Parley's sync nor written through by an upload."""
    database = env.data_dir / "parley.db"
    before = database.read_bytes()[:100]
    container_id = await env.container()
    code = f"import os\nos.symlink({str(database)!r}, '/mnt/data/db.txt')\nos.symlink('/etc', '/mnt/data/etc')"
    outcome = await env.contained(container_id, code)
    assert outcome.result.ok and outcome.files == []
    sdk = env.app.sdk()
    assert [f.path async for f in sdk.containers.files.list(container_id)] == []
    await sdk.containers.files.create(container_id, file=("db.txt", b"overwrite?"))
    assert database.read_bytes()[:100] == before
    check = await env.containers.run(PROJECT, container_id,
                                     "import os\nprint(os.path.islink('db.txt'), open('db.txt').read())")
    assert check.result.logs == "False overwrite?\n"


async def test_fork_bomb(env: Env) -> None:
    container_id = await env.container()
    code = "import os\nwhile True:\n    os.fork()"
    outcome = await env.contained(container_id, code)
    assert not outcome.result.ok
    after = await env.containers.run(PROJECT, container_id, "print('alive')")
    assert after.result.logs == "alive\n"  # nothing the bomb's last processes wrote on their way out


async def test_a_cell_never_gets_what_an_earlier_cells_leftover_process_writes(env: Env) -> None:
    """A process an earlier cell left running keeps its stdout: what it writes later must not land in (or
    overwrite) the output of the cell running then."""
    container_id = await env.container()
    left = """
import os, time
if os.fork() == 0:
    while not os.path.exists("/mnt/data/go"):
        time.sleep(0.01)
    os.write(1, b"LEFTOVER WRITES HERE\\n")
    open("/mnt/data/done", "w").close()
    os._exit(0)
print("started")
"""
    first = await env.containers.run(PROJECT, container_id, left)
    assert first.result.logs == "started\n"
    now = """
import os, sys, time
print("mine")
sys.stdout.flush()
open("/mnt/data/go", "w").close()
while not os.path.exists("/mnt/data/done"):
    time.sleep(0.01)
"""
    second = await env.containers.run(PROJECT, container_id, now)
    assert second.result.ok and second.result.logs == "mine\n"


async def test_memory_bomb(env: Env) -> None:
    container_id = await env.container()
    outcome = await env.contained(container_id, "kept = 1\nhog = [bytearray(512 << 20) for _ in range(16)]")
    assert outcome.result.error is not None and "MemoryError" in outcome.result.error
    after = await env.containers.run(PROJECT, container_id, "print(kept)")
    assert after.result.logs == "1\n" and after.notes == []


async def test_infinite_loop(env: Env) -> None:
    container_id = await env.container()
    outcome = await env.contained(container_id, "while True:\n    pass")
    assert outcome.result.ended == "timeout" and env.answered > 0
    after = await env.containers.run(PROJECT, container_id, "print('fresh')")
    assert RESTARTED in after.notes and after.result.logs == "fresh\n"


async def test_disk_fill(env: Env) -> None:
    container_id = await env.container()
    big = await env.contained(container_id, "open('/mnt/data/big', 'wb').write(b'x' * (64 << 20))")
    assert big.result.error is not None and "File too large" in big.result.error  # RLIMIT_FSIZE
    code = "i = 0\nwhile True:\n    open(f'/mnt/data/f{i}', 'wb').write(b'x' * (4 << 20))\n    i += 1"
    filled = await env.contained(container_id, code)
    assert filled.result.ended == "disk" and env.answered > 0
    sdk = env.app.sdk()
    assert sum([f.bytes async for f in sdk.containers.files.list(container_id)]) <= QUOTA
    after = await env.containers.run(PROJECT, container_id, "import os\nprint(len(os.listdir('.')))")
    assert RESTARTED in after.notes


async def test_killing_the_parent(env: Env) -> None:
    container_id = await env.container()
    code = f"""
import os, signal
for pid in [{os.getpid()}, os.getppid(), 1]:
    try:
        os.kill(pid, signal.SIGKILL)
        print("signalled", pid)
    except OSError as err:
        print("refused", pid, type(err).__name__)
"""
    outcome = await env.contained(container_id, code)
    assert f"signalled {os.getpid()}" not in outcome.result.logs  # Parley itself is out of reach
    after = await env.containers.run(PROJECT, container_id, "print('next')")
    assert after.result.logs == "next\n"


async def test_no_reading_another_container(env: Env) -> None:
    other = await env.container("victim")
    await env.app.sdk().containers.files.create(other, file=("secret.txt", b"victim's secret"))
    await env.containers.run(PROJECT, other, "x = 1")  # its working copy exists on this host now
    pool_root = next(p for p in (env.data_dir / "containers").iterdir() if p.is_dir())
    victim = next(p for p in pool_root.iterdir() if p.name.startswith(other) and not p.name.endswith(".tmp"))
    assert (victim / "secret.txt").exists()
    code = f"""
import os
found = []
for top in ["/mnt", "/tmp", "/opt", "/home", "/var", "/dev/shm"]:
    for root, dirs, files in os.walk(top):
        found += [os.path.join(root, f) for f in files if f == "secret.txt"]
for path in [{str(victim / "secret.txt")!r}, {str(pool_root)!r}, {str(env.data_dir)!r}]:
    found += [path] if os.path.exists(path) else []
print(found)
"""
    outcome = await env.contained(await env.container("attacker"), code)
    assert outcome.result.logs == "[]\n", outcome.result


async def test_session_workdirs_are_removed_with_their_container(env: Env) -> None:
    container_id = await env.container()
    await env.containers.run(PROJECT, container_id, "open('/mnt/data/a', 'w').write('a')")
    pool_root = next(p for p in (env.data_dir / "containers").iterdir() if p.is_dir())
    assert any(p.name.startswith(container_id) for p in pool_root.iterdir())
    await env.app.sdk().containers.delete(container_id)
    assert not any(p.name.startswith(container_id) for p in pool_root.iterdir())
    assert workdir.usage(pool_root, 10_000).bytes < QUOTA * 4


async def test_no_new_namespaces_mounts_ptrace_or_root(env: Env) -> None:
    code = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
print(libc.unshare(0x10000000), libc.unshare(0x00020000), libc.mount(b"none", b"/mnt", b"tmpfs", 0, None))
print(libc.ptrace(16, 1, 0, 0))
try:
    os.setuid(0)
    print("ROOT")
except PermissionError:
    print(os.getuid() != 0)
"""
    outcome = await env.contained(await env.container(), code)
    assert outcome.result.logs == "-1 -1 -1\n-1\nTrue\n", outcome.result.logs
