"""The persistent Python session of a container: runs cells in one namespace, like a notebook kernel.

Protocol (one JSON object per line): the host writes `{"code": "...", "seq": n}` on stdin; the driver answers on
stdout with `{"seq", "ok", "logs", "logs_bytes", "images", "error"}` after each cell, and `{"ready": true}` once
at start. A shell request `{"shell": {"commands", "timeout_s", "deadline_s", "limit"}, "seq": n}` runs each command
with `/bin/sh -c` and streams frames while they run — `{"seq", "frame": {"command_index", "stdout"?, "stderr"?}}`
as output arrives (small pieces coalesced), `{"seq", "frame": {"command_index", "outcome", "bytes"}}` as each
command ends — before the same closing answer.
The driver moves the protocol to private descriptors first; while a cell runs, descriptors 1 and 2 (print,
C extensions, subprocesses alike) go to a capture file in the sandbox's /tmp (a new one per cell), read back
(bounded) after the cell. The value of a cell's last expression is printed, as in a notebook. Open matplotlib
figures become PNG images. Everything here runs as the sandboxed user: the code of a cell can change or break
the driver, so the host treats every answer as untrusted input (bounded, validated) and a broken session is just
restarted.

Standard library only; never imports Parley.
"""

from __future__ import annotations

import ast
import base64
import codecs
import contextlib
import io
import json
import linecache
import os
import selectors
import signal
import subprocess
import sys
import time
import traceback
from typing import Any


class Driver:
    def __init__(self, config: dict[str, Any]) -> None:
        self.max_log_bytes = int(config.get("max_log_bytes", 64 * 1024))
        self.max_image_bytes = int(config.get("max_image_bytes", 4 * 1024 * 1024))
        self.capture_path = os.path.join(str(config.get("tmp", "/tmp")), ".parley-cell-output")
        self.namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
        self.cells = 0
        self.pid = os.getpid()
        self.proto_in = os.fdopen(os.dup(0), "rb", buffering=0)
        self.proto_out = os.fdopen(os.dup(1), "wb", buffering=0)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        # A file past RLIMIT_FSIZE fails with EFBIG instead of killing the session with SIGXFSZ.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        for stream in (sys.stdout, sys.stderr):  # prints and tracebacks interleave as they happen
            with contextlib.suppress(Exception):
                stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]

    def send(self, message: dict[str, Any]) -> None:
        self.proto_out.write(json.dumps(message).encode() + b"\n")

    def serve(self) -> None:
        self.send({"ready": True, "pid": os.getpid()})
        buffered = b""
        while True:
            chunk = self.proto_in.read(1 << 20)
            if not chunk:
                return
            buffered += chunk
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                request = json.loads(line)
                shell = request.get("shell")
                if isinstance(shell, dict):
                    seq = request.get("seq")
                    result = self.shell(shell, lambda frame, seq=seq: self.send({"seq": seq, "frame": frame}))
                else:
                    result = self.run(str(request.get("code", "")))
                if os.getpid() != self.pid:  # a process the cell forked must never act as the driver
                    os._exit(0)
                self.send({**result, "seq": request.get("seq")})

    def run(self, code: str) -> dict[str, Any]:
        self.cells += 1
        name = f"<cell {self.cells}>"
        linecache.cache[name] = (len(code), None, code.splitlines(True), name)
        # A new file each cell, never the last one truncated: a process an earlier cell left running still
        # writes to the file it was given, and that must not land in (or overwrite) this cell's output.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.capture_path)
        capture = os.open(self.capture_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.dup2(capture, 1)
        os.dup2(capture, 2)
        error: str | None = None
        try:
            self._execute(code, name)
        except BaseException as exc:  # SystemExit and KeyboardInterrupt too: the session goes on
            error = f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                sys.stdout.flush()  # what the cell printed comes before its traceback
            sys.stderr.write(_traceback_text(exc))
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 1)
            os.dup2(null, 2)
            os.close(null)
        size = os.lseek(capture, 0, os.SEEK_END)
        os.lseek(capture, 0, os.SEEK_SET)
        logs = os.read(capture, self.max_log_bytes)
        os.close(capture)
        images, notes = self._figures()
        text = logs.decode("utf-8", "replace") + "".join(notes)  # a figure left out is said, never dropped silently
        return {"ok": error is None, "logs": text, "logs_bytes": size + sum(len(n) for n in notes),
                "images": images, "error": error}

    def shell(self, request: dict[str, Any], send: Any) -> dict[str, Any]:
        """Run shell commands one after the other, streaming their output (see the module's protocol)."""
        commands = [str(c) for c in request.get("commands") or ()]
        runner = ShellRunner(float(request.get("timeout_s", 10)), int(request.get("limit", 10_000)), send)
        deadline = time.monotonic() + float(request.get("deadline_s", 30))
        for index, command in enumerate(commands):
            runner.run(index, command, deadline)
        return {"ok": True, "logs": "", "logs_bytes": 0, "images": [], "error": None}

    def _execute(self, code: str, name: str) -> None:
        tree = ast.parse(code, name, "exec")
        last = tree.body[-1] if tree.body else None
        if isinstance(last, ast.Expr):
            tree.body.pop()
            exec(compile(tree, name, "exec"), self.namespace)
            value = eval(compile(ast.Expression(last.value), name, "eval"), self.namespace)
            if value is not None:
                print(repr(value))
        else:
            exec(compile(tree, name, "exec"), self.namespace)

    def _figures(self) -> tuple[list[str], list[str]]:
        """Open matplotlib figures as base64 PNGs (then closed), within the image budget; and a line for the logs
        about each figure left out (over the budget, or failing to render)."""
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None:
            return [], []
        images: list[str] = []
        notes: list[str] = []
        budget = self.max_image_bytes
        try:
            numbers = list(pyplot.get_fignums())
        except Exception as exc:
            return [], [f"[figures not returned: {type(exc).__name__}: {exc}]\n"]
        for number in numbers:
            try:
                figure = pyplot.figure(number)
                buffer = io.BytesIO()
                figure.savefig(buffer, format="png")
            except Exception as exc:
                notes.append(f"[figure {number} not returned: {type(exc).__name__}: {exc}]\n")
                continue
            finally:
                with contextlib.suppress(Exception):
                    pyplot.close(number)
            data = buffer.getvalue()
            if len(data) > budget:
                notes.append(f"[figure {number} not returned: its PNG is {len(data)} bytes, over the {budget} bytes "
                             "left of this cell's image budget]\n")
                continue
            budget -= len(data)
            images.append(base64.b64encode(data).decode())
        return images, notes


class ShellRunner:
    """One command at a time through /bin/sh, its stdout and stderr read as they come. Pieces are coalesced: a
    frame goes out once `CHUNK` characters are pending (so a frame holds at most that plus one read) or
    `COALESCE_S` after its first piece (output is live, and the host is not sent a frame per write). Each command
    may write `limit` characters (stdout and stderr together) to the frames; the rest is read and counted, never
    decoded or kept. A command ends when its process does (not when its pipes close: it may redirect its own
    output); past its time limit, or past the call's deadline, it is killed with its process group: its outcome is
    `timeout`."""

    CHUNK = 4096
    COALESCE_S = 0.05

    def __init__(self, timeout_s: float, limit: int, send: Any) -> None:
        self.timeout_s = timeout_s
        self.limit = limit
        self.send = send

    def run(self, index: int, command: str, deadline: float) -> None:
        ends = min(time.monotonic() + self.timeout_s, deadline)
        if ends <= time.monotonic():
            self.send({"command_index": index, "outcome": {"type": "timeout"}, "bytes": 0})
            return
        try:
            process = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, cwd=os.getcwd(), start_new_session=True)
        except (OSError, ValueError) as exc:  # a NUL byte, a command too long for exec: this command's failure only
            said = f"/bin/sh: cannot run the command: {exc}\n"
            self.send({"command_index": index, "stderr": said[:max(0, self.limit)]})
            self.send({"command_index": index, "outcome": {"type": "exit", "exit_code": 126}, "bytes": len(said)})
            return
        assert process.stdout is not None and process.stderr is not None
        pipes = (process.stdout, process.stderr)
        streams = {pipe.fileno(): name for pipe, name in zip(pipes, ("stdout", "stderr"), strict=True)}
        decoders = {name: codecs.getincrementaldecoder("utf-8")("replace") for name in streams.values()}
        selector = selectors.DefaultSelector()
        for pipe in pipes:
            selector.register(pipe, selectors.EVENT_READ)
        pending: dict[str, str] = {}
        pending_since = 0.0
        room, total, timed_out = self.limit, 0, False
        while selector.get_map():
            now = time.monotonic()
            if now >= ends:
                timed_out = True
                break
            wait = ends - now
            if pending:
                wait = min(wait, max(0.0, pending_since + self.COALESCE_S - now))
            if process.poll() is not None:
                wait = 0.0  # exited: read what is there, without waiting on pipes a child may still hold
            ready = selector.select(min(wait, 0.05))
            if not ready and process.returncode is not None:
                break
            for key, _ in ready:
                data = os.read(key.fd, 65536)
                if not data:
                    selector.unregister(key.fileobj)
                    continue
                total += len(data)
                if room <= 0:
                    continue  # past the limit: read and counted only (the command must not block on a full pipe)
                name = streams[key.fd]
                text = decoders[name].decode(data)[:room]
                if text:
                    room -= len(text)
                    if not pending:
                        pending_since = time.monotonic()
                    pending[name] = pending.get(name, "") + text
            if pending and (sum(len(v) for v in pending.values()) >= self.CHUNK
                            or time.monotonic() >= pending_since + self.COALESCE_S):
                self.send({"command_index": index, **pending})
                pending = {}
        if not timed_out and process.poll() is None:
            # Its pipes closed but it runs on (`exec >log 2>&1`, a daemon): its end, not theirs, ends it.
            try:
                process.wait(max(0.0, ends - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
        if timed_out or process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        code = process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # what the command left running in its group
        for name, decoder in decoders.items():
            tail = decoder.decode(b"", final=True)[:room]
            if tail:
                room -= len(tail)
                pending[name] = pending.get(name, "") + tail
        if pending:
            self.send({"command_index": index, **pending})
        selector.close()
        for pipe in pipes:
            pipe.close()
        # A shell killed by a signal reports it as shells do: 128 + the signal's number.
        outcome = {"type": "timeout"} if timed_out else {"type": "exit", "exit_code": code if code >= 0 else 128 - code}
        self.send({"command_index": index, "outcome": outcome, "bytes": total})


def _traceback_text(exc: BaseException) -> str:
    """The traceback from the cell's own frames on (the driver's frames are left out)."""
    tb = exc.__traceback__
    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<cell"):
        tb = tb.tb_next
    if isinstance(exc, SyntaxError):
        tb = None
    return "".join(traceback.format_exception(type(exc), exc, tb))


if __name__ == "__main__":
    Driver(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}).serve()
