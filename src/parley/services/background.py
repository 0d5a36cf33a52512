"""Background responses: a bounded pool of runs that outlive their client, with an event log to replay.

Every process runs one BackgroundRunner. It claims queued jobs from the database (so any process may run
any job), streams each run's events into the response's event log (batched every `flush_ms`, never per
token) and to followers in this process, renews its job leases, stops a run that was cancelled (locally or
through the database by another process) or passed the time limit, and ends as `failed` any run whose
worker stopped renewing its lease (a crashed process), its open items closed from its log. A run of its own
that another process ended so (this one stalled past its lease) it stops without writing anything more.
Followers in other processes read the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from parley.engine.run import TERMINAL_EVENTS, ResponseRun
from parley.engine.stream import StreamBuilder, sse_frame
from parley.engine.stream_log import fold_log
from parley.errors import InternalError, ParleyError, UpstreamError
from parley.ids import new_id
from parley.log_context import set_request_id
from parley.schema.present import presenter
from parley.store.base import ConversationTurn, UsageRecord
from parley.store.sql_background import BackgroundJob, InterruptedRun, Item, SqlBackground

log = logging.getLogger("parley.background")

# Builds the run of a claimed job (the responses service owns request -> model call).
RunFactory = Callable[[BackgroundJob], Awaitable[ResponseRun]]
# What a run that ended appends to its conversation (None: nothing), written with its final log flush.
TurnHook = Callable[[BackgroundJob, dict[str, Any]], ConversationTurn | None]
# The usage record of a run that ended (however it ended), written with its final log flush.
UsageHook = Callable[[BackgroundJob, dict[str, Any]], UsageRecord | None]


@dataclass(frozen=True, slots=True)
class BackgroundLimits:
    max_concurrent: int = 4
    time_limit_s: float = 3600.0
    lease_ms: int = 15_000
    flush_ms: int = 100
    poll_s: float = 0.2


_POKE = (-1, b"")  # a follower's cue to read the log now


class EventHub:
    """In-process fan-out of a run's events to its followers, published once they are in the log (so a
    follower never sees an event a crash could still lose, nor a sequence number used twice)."""

    def __init__(self) -> None:
        self._followers: dict[str, list[asyncio.Queue[tuple[int, bytes] | None]]] = {}

    def subscribe(self, response_id: str) -> asyncio.Queue[tuple[int, bytes] | None]:
        queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
        self._followers.setdefault(response_id, []).append(queue)
        return queue

    def unsubscribe(self, response_id: str, queue: asyncio.Queue[tuple[int, bytes] | None]) -> None:
        queues = self._followers.get(response_id)
        if queues and queue in queues:
            queues.remove(queue)
            if not queues:
                del self._followers[response_id]

    def publish(self, response_id: str, events: list[tuple[int, bytes]]) -> None:
        for queue in self._followers.get(response_id, ()):
            for event in events:
                queue.put_nowait(event)

    def poke(self, response_id: str) -> None:
        """Another process logged events of this response (PostgreSQL NOTIFY): followers read the log now."""
        for queue in self._followers.get(response_id, ()):
            queue.put_nowait(_POKE)

    def close(self, response_id: str) -> None:
        for queue in self._followers.get(response_id, ()):
            queue.put_nowait(None)


class BackgroundRunner:
    def __init__(self, store: SqlBackground, limits: BackgroundLimits) -> None:
        self._store = store
        self._limits = limits
        self.worker_id = new_id("wrk")
        self.hub = EventHub()
        self._factory: RunFactory | None = None
        self._turn: TurnHook | None = None
        self._usage: UsageHook | None = None
        self._running: dict[str, asyncio.Task[None]] = {}
        self._lost: set[str] = set()  # runs here whose job another process ended: they stop, writing nothing more
        self._finishing: set[str] = set()  # runs here past their last event: their own write ends their job
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False

    def start(self, factory: RunFactory, turn: TurnHook | None = None, usage: UsageHook | None = None) -> None:
        self._factory = factory
        self._turn = turn
        self._usage = usage
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._dispatch(), name="parley-bg-dispatch"),
                       loop.create_task(self._leases(), name="parley-bg-leases"),
                       loop.create_task(self._listen(), name="parley-bg-listen")]

    async def _listen(self) -> None:
        """Wake followers of runs on other processes when they log events (PostgreSQL only)."""
        stop = await self._store.listen_for_events(self._poked)
        if stop is None:
            return
        try:
            await asyncio.Event().wait()  # until the runner stops
        finally:
            with contextlib.suppress(Exception):
                await stop()

    def _poked(self, response_id: str) -> None:
        if response_id not in self._running:  # this process's own runs reach their followers directly
            self.hub.poke(response_id)

    async def stop(self) -> None:
        self._stopping = True  # runs cancelled from here on fail (shut down), they were not cancelled by a user
        for task in self._loops:
            task.cancel()
        for task in list(self._running.values()):
            task.cancel()
        for task in [*self._loops, *self._running.values()]:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def notify(self) -> None:
        """A job was queued: look for work now rather than at the next poll."""
        self._wake.set()

    def is_local(self, response_id: str) -> bool:
        return response_id in self._running

    @property
    def running(self) -> int:
        """Runs executing in this process now (/metrics)."""
        return len(self._running)

    async def cancel_local(self, response_id: str, wait_s: float = 10.0) -> None:
        """Stop the run if it runs in this process, and wait (bounded) until it has written what it produced (its
        items closed as incomplete), so the cancel's reply is the response as stored."""
        task = self._running.get(response_id)
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=wait_s)

    # -- loops -----------------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._limits.poll_s * 5)
            self._wake.clear()
            free = self._limits.max_concurrent - len(self._running)
            if free <= 0:
                continue
            try:
                jobs = await self._store.claim_background(self.worker_id, self._limits.lease_ms, free)
            except Exception:
                log.exception("claiming background jobs failed")
                continue
            for job in jobs:
                task = asyncio.get_running_loop().create_task(self._execute(job), name=f"bg-{job.response_id}")
                self._running[job.response_id] = task

    async def _leases(self) -> None:
        interval = self._limits.lease_ms / 3000
        while True:
            try:
                lost = await self._store.renew_leases(self.worker_id, list(self._running), self._limits.lease_ms)
                for response_id in lost:
                    self._lose(response_id)
                for response_id, _project in await self._store.expired_runs():
                    if response_id in self._running:
                        # Its run is alive here: a lease renewal that landed after the lease it set (a slow
                        # commit, a stalled process) says nothing about this process, only to the others.
                        continue
                    await self._end_interrupted(response_id)
            except Exception:
                log.exception("background lease upkeep failed")
            await asyncio.sleep(interval)

    def _lose(self, response_id: str) -> None:
        """Another process took this run's job (this one stalled past its lease: the other ended the run as
        interrupted, or queued it again): stop it here, writing nothing more (its log and its status are the other
        process's now), and close its upstream call."""
        task = self._running.get(response_id)
        if task is None or response_id in self._finishing or response_id in self._lost:
            return  # it ended here meanwhile (its own last write ended its job), or is stopping already
        self._lost.add(response_id)
        task.cancel()

    async def _end_interrupted(self, response_id: str) -> None:
        run = await self._store.interrupted_run(response_id)
        if run is None:
            return
        if _never_started(run) and await self._store.requeue_interrupted(run, _MAX_ATTEMPTS):
            # Nothing of the run was logged (its process died opening the upstream, say): no sequence number is
            # taken, so it can run again from the start, on any process.
            log.warning("background response %s was interrupted before it started; queued again", response_id)
            self._wake.set()
            return
        response, events, items = _close_interrupted(run)
        if await self._store.end_interrupted(run, response, events, items) and events:
            log.warning("background response %s was interrupted; marked failed", response_id)

    # -- one run ---------------------------------------------------------------------------------

    async def _execute(self, job: BackgroundJob) -> None:
        set_request_id(job.response_id)  # this task's log lines name the response it runs
        try:
            await self._run(job)
        except Exception:
            log.exception("background response %s could not be ended", job.response_id)
        finally:
            self._running.pop(job.response_id, None)
            self._lost.discard(job.response_id)
            self._finishing.discard(job.response_id)
            self.hub.close(job.response_id)
            self._wake.set()

    async def _run(self, job: BackgroundJob) -> None:
        assert self._factory is not None
        usage, turn = self._usage, self._turn
        log_writer = _EventLog(self._store, job, self.hub, self._limits.flush_ms,
                               (lambda response: usage(job, response)) if usage is not None else None,
                               (lambda response: turn(job, response)) if turn is not None else None)
        run: ResponseRun | None = None
        try:
            async with asyncio.timeout(self._limits.time_limit_s):
                try:
                    run = await self._factory(job)
                except ParleyError as err:
                    await log_writer.fail_before_start(job, err)
                    return
                await log_writer.write_run(run)
        except TimeoutError:
            message = f"The background response exceeded the time limit of {self._limits.time_limit_s:g} s."
            await log_writer.end_failed(run, job, UpstreamError.timeout(message))
        except asyncio.CancelledError:
            if job.response_id in self._lost:
                # Another process ended it (its lease ran out while this one stalled): nothing more is written
                # here, not even what is pending (its sequence numbers are taken), and no second terminal event.
                _stop_lost(log_writer, job)
            elif run is not None and self._stopping:
                # The server is shutting down: the run cannot go on here (its events are already logged,
                # so it cannot start over elsewhere); it fails with a terminal event followers will see.
                message = "The server shut down before the background response finished."
                await log_writer.add(run.builder.fail("server_error", message), run.builder.response, final=True)
            elif run is not None:
                # Cancelled through the API: the status is already `cancelled` (the update below cannot
                # change it back); keep what was produced, its items closed as incomplete.
                run.builder.cancel()
                await log_writer.flush_final(run.builder.response)
            raise
        except Exception:
            if await self._lease_lost(job):
                # A flush that resumed after a stall collided with the events of the process that ended the run.
                self._lost.add(job.response_id)
                _stop_lost(log_writer, job)
                return
            # A bug or a broken store: the response must still end (a failed run never stays in progress).
            log.exception("background response %s crashed", job.response_id)
            with contextlib.suppress(Exception):
                await log_writer.end_failed(run, job, InternalError())
        finally:
            if run is not None:
                with contextlib.suppress(Exception):
                    await run.aclose()
            if job.response_id not in self._lost:  # a lost job is the other process's to end (it has)
                self._finishing.add(job.response_id)
                await self._store.finish_background(job.response_id)

    async def _lease_lost(self, job: BackgroundJob) -> bool:
        """Whether another process has taken the run's job (asked by renewing its lease: harmless, the run ends next
        either way); False when that cannot be told (a broken store)."""
        try:
            lost = await self._store.renew_leases(self.worker_id, [job.response_id], self._limits.lease_ms)
        except Exception:
            return False
        return job.response_id in lost


class _EventLog:
    """Collects a run's events and writes them to the log at most `flush_ms` after they were produced
    (with the output items finished so far), then hands them to live followers."""

    def __init__(self, store: SqlBackground, job: BackgroundJob, hub: EventHub, flush_ms: int,
                 usage: Callable[[dict[str, Any]], UsageRecord | None] | None = None,
                 turn: Callable[[dict[str, Any]], ConversationTurn | None] | None = None) -> None:
        self._store = store
        self._usage = usage  # the run's usage record, added to its final flush (once)
        self._turn = turn  # its conversation turn, likewise
        self._job = job
        self._hub = hub
        self._flush_s = flush_ms / 1000
        self._pending: list[tuple[int, bytes]] = []
        self._done: set[int] = set()
        self._stored_items = 0
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None
        self._started = False  # whether the run's first events are stored
        self._failed: Exception | None = None  # a timed flush's failure, raised in the run (write_run) next
        self.cancelled = False

    async def write_run(self, run: ResponseRun) -> None:
        async for batch in run.batches():
            batch = [event for event in batch if event["sequence_number"] >= _FIRST_RUN_SEQ]
            final = bool(batch) and batch[-1]["type"] in TERMINAL_EVENTS
            if self._failed is not None:  # (once: the run's own handling may still write its end)
                failed, self._failed = self._failed, None
                raise failed
            await self.add(batch, run.builder.response, final=final)
            if self.cancelled:
                return

    async def add(self, events: list[dict[str, Any]], response: dict[str, Any], *, final: bool) -> None:
        for event in events:
            self._pending.append((int(event["sequence_number"]), sse_frame(event)))
            if event["type"] == "response.output_item.done":
                self._done.add(int(event["output_index"]))
        if final:
            await self.flush_final(response)
        elif not self._started:
            # The run's first events (response.in_progress) are stored before it goes on: from here it counts as
            # started, and a process dying later fails it rather than queueing it again (it may have run a tool).
            self._started = True
            await self._flush(response, final=False)
        elif self._timer is None and self._pending:
            self._timer = asyncio.ensure_future(self._flush_soon(response))

    def abandon(self) -> None:
        """The run was ended by another process: drop what is not written (a flush on its way may still commit, or
        collide with that process's events and write nothing)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending = []
        self._failed = None

    async def _flush_soon(self, response: dict[str, Any]) -> None:
        await asyncio.sleep(self._flush_s)
        self._timer = None
        try:
            await self._flush(response, final=False)
        except Exception as exc:  # it fails the run where the run goes on (a task's exception nobody reads is lost)
            self._failed = exc

    async def flush_final(self, response: dict[str, Any]) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._flush(response, final=True)

    async def _flush(self, response: dict[str, Any], *, final: bool) -> None:
        async with self._lock:
            output = response["output"]
            end = self._stored_items
            while end < len(output) and (final or end in self._done):
                end += 1  # finished items in order; at the end, all of them
            events, self._pending = self._pending, []
            items = output[self._stored_items:end]
            usage = turn = None
            if final and self._usage is not None:
                usage, self._usage = self._usage(response), None
            if final and self._turn is not None:
                turn, self._turn = self._turn(response), None
            ok = await self._store.append_events(self._job.project_id, response, events, items, self._stored_items,
                                                 usage, turn)
            self._stored_items = end
            self._hub.publish(self._job.response_id, events)
            if not ok:
                self.cancelled = True

    async def end_failed(self, run: ResponseRun | None, job: BackgroundJob, err: ParleyError) -> None:
        """End the response as failed with `err`, whether or not its run had started."""
        if run is None:
            await self.fail_before_start(job, err)
        else:
            await self.add(run.builder.fail("server_error", err.message), run.builder.response, final=True)

    async def fail_before_start(self, job: BackgroundJob, err: ParleyError) -> None:
        """The upstream refused the call: the response fails with the error (events 2.. of the log)."""
        builder = StreamBuilder(_stored_snapshot(job), emit=True, obfuscate=False)
        builder.start()  # seq 0-1, already logged
        events = builder.in_progress() + builder.fail(
            "rate_limit_exceeded" if err.status == 429 else "server_error", err.message)
        await self.add(events, builder.response, final=True)


def _stop_lost(log_writer: _EventLog, job: BackgroundJob) -> None:
    log_writer.abandon()
    log.warning("background response %s: its lease ran out while this process stalled, and another process ended "
                "the run; stopped here without writing more", job.response_id)


# response.created and response.queued (seq 0 and 1) are logged when the job is accepted.
_FIRST_RUN_SEQ = 2
# Claims of a job whose process died before its run logged anything, before it fails instead (a job that kills
# its process every time must not do so forever).
_MAX_ATTEMPTS = 3


def _never_started(run: InterruptedRun) -> bool:
    """Whether the run logged nothing of its own: the response is still `queued`, its log only what accepting it
    wrote."""
    return run.status == "queued" and all(seq < _FIRST_RUN_SEQ for seq, _ in run.events)

_INTERRUPTED = "The background response was interrupted: the server running it stopped before it finished."


def _close_interrupted(run: InterruptedRun) -> tuple[dict[str, Any] | None, list[tuple[int, bytes]], list[Item]]:
    """How a run whose worker died ends: its log is taken up by a stream builder, which fails it as a live run
    fails, closing the items the log left open (what their deltas built, `incomplete`) with the events that close
    them, before `response.failed`. A run cancelled meanwhile gets its items closed, without events (as a live
    cancel). Returns the response row to store (None: unchanged), the events after the log, the new output items."""
    if run.status not in ("queued", "in_progress", "cancelled"):
        return None, [], []  # it finished (or was deleted) before its job was marked done: only the job ends
    include = (run.request.get("request") or {}).get("include")
    builder = StreamBuilder({**run.response, "output": []}, emit=True, obfuscate=False, present=presenter(include))
    builder.resume(fold_log(data for _, data in run.events), run.output)
    stored = len(run.output)
    if run.status == "cancelled":
        builder.cancel()
        return None, [], builder.output[stored:]
    events = builder.fail("server_error", _INTERRUPTED)
    return builder.response, [(int(e["sequence_number"]), sse_frame(e)) for e in events], builder.output[stored:]


def _stored_snapshot(job: BackgroundJob) -> dict[str, Any]:
    snapshot = job.request.get("response")
    if not isinstance(snapshot, dict):
        raise RuntimeError(f"job {job.response_id} has no response snapshot")
    return dict(snapshot)


async def follow(
    store: SqlBackground, runner: BackgroundRunner, project_id: str, response_id: str, after: int,
    poll_s: float = 0.2,
) -> AsyncGenerator[bytes, None]:
    """Replay a response's logged events after `after`, then follow live ones until the terminal event.

    Live events come from this process's hub when it runs the job, otherwise from polling the log (so a
    follower on another process, sharing the database, sees the same stream)."""
    queue = runner.hub.subscribe(response_id)
    last = after
    try:
        while True:
            for seq, data in await store.read_events(response_id, last):
                last = seq
                yield data
                if _is_terminal(data):
                    return
            status = await store.response_status(project_id, response_id)
            if status in ("completed", "incomplete", "failed", "cancelled"):
                # Cancelled runs have no terminal event (OpenAI has no response.cancelled): end here,
                # after a last read so nothing logged before the status change is missed.
                for seq, data in await store.read_events(response_id, last):
                    last = seq
                    yield data
                return
            with contextlib.suppress(TimeoutError):
                while True:
                    item = await asyncio.wait_for(queue.get(), poll_s)
                    if item is None or item is _POKE:
                        break  # the run ended here, or logged events elsewhere: read the log
                    seq, data = item
                    if seq <= last:
                        continue
                    last = seq
                    yield data
                    if _is_terminal(data):
                        return
    finally:
        runner.hub.unsubscribe(response_id, queue)


_TERMINAL_FRAMES = tuple(b"event: " + kind.encode() + b"\n" for kind in TERMINAL_EVENTS)


def _is_terminal(frame: bytes) -> bool:
    return frame.startswith(_TERMINAL_FRAMES)
