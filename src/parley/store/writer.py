"""Group commit: writes from concurrent requests are merged into one transaction.

Each caller awaits its own write; the writer task takes everything queued, inserts rows of the same
table together (multi-row INSERTs on SQLite, executemany elsewhere), and commits once. If a merged
batch fails, each write is retried in its own transaction so one bad write cannot fail the others. A
write that was queued completes even if the caller is cancelled meanwhile, so nothing is half-written
when a client disconnects; its `done` callback (if any) is called, on the event loop, once it has
committed or failed, whether or not its caller still waits (services/live_responses.py uses it).

On SQLite the whole transaction runs in one hop to a dedicated writer thread with the synchronous
driver, instead of one event-loop/thread round trip per statement through aiosqlite: that was most of a
stored request's CPU (bench/README.md). On PostgreSQL a batch of plain inserts (what every response, usage
record and new conversation writes) is one statement and one round trip: each table's rows go as one JSON
parameter, inserted by a data-modifying CTE (`_pg_batch`), with no BEGIN or COMMIT to wait for; each await
on the busy event loop costs a turn of it. Other writes, and a batch that fails, run in one `run_sync` call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Engine,
    Integer,
    String,
    Table,
    Text,
    create_engine,
    event,
    insert,
)
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry

log = logging.getLogger("parley.store")

# A statement runs synchronously inside the write transaction (on the writer thread, or in run_sync).
Statement = Callable[[Connection], Any]


def sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_conn.cursor()
    # The busy timeout first: switching a new database to WAL needs a lock that concurrent openers
    # (several processes or engines starting at once) must wait for rather than fail on.
    cursor.execute("PRAGMA busy_timeout=10000")
    # WAL: readers never block the writer; NORMAL sync is durable across process crashes in WAL mode.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@dataclass(slots=True)
class Write:
    """Rows to insert (merged across writes) and statements to run before them, in one transaction."""

    before: list[Statement] = field(default_factory=list)
    inserts: list[tuple[Table, list[dict[str, Any]]]] = field(default_factory=list)
    # Called once, on the event loop, when the write has committed or failed (or been given up at shutdown), also
    # when its submitter was cancelled meanwhile: what must happen exactly when the row is there, or will not be.
    done: Callable[[], None] | None = None


class WriteObserver(Protocol):
    """The app's telemetry (telemetry/observe.py): batch sizes, and a trace span around each awaited write."""

    def committed(self, writes: int) -> None: ...

    def write(self) -> AbstractContextManager[object]: ...


class GroupCommitWriter:
    def __init__(self, engine: AsyncEngine, max_batch: int = 512, defer_s: float = 0.05) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._defer_s = defer_s
        self._deferred: dict[Table, list[dict[str, Any]]] = {}
        self._defer_timer: asyncio.TimerHandle | None = None
        self._queue: asyncio.Queue[tuple[Write, asyncio.Future[None]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.transactions = 0  # committed write transactions, for tests and diagnostics
        self.observer: WriteObserver | None = None
        self._detached: set[asyncio.Task[None]] = set()
        self._sync: Engine | None = None
        self._sync_conn: Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._pg = engine.dialect.name == "postgresql"
        self._pg_held: list[tuple[AsyncConnection, Any]] = []  # (connection, its asyncpg connection): _commit_pg
        if engine.dialect.name == "sqlite":
            self._sync = create_engine(engine.url.set(drivername="sqlite"), pool_size=1, max_overflow=0)
            event.listen(self._sync, "connect", sqlite_pragmas)
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="parley-sqlite-writer")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="parley-store-writer")

    async def stop(self) -> None:
        """Finish what is queued (deferred rows too), then stop."""
        self.flush_deferred()
        if self._task is None:
            if self._detached:
                await asyncio.wait(list(self._detached))
            await self._release_held()
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        await self._release_held()
        if self._thread is not None and self._sync is not None:
            if self._sync_conn is not None:
                await asyncio.get_running_loop().run_in_executor(self._thread, self._sync_conn.close)
                self._sync_conn = None
            self._thread.shutdown(wait=True)
            self._sync.dispose()

    async def submit(self, write: Write) -> None:
        if self._task is None:
            try:
                await self._commit([write])
            finally:
                _settled(write)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((write, future))
        # If the caller is cancelled, only its future is: the write itself stays queued and is committed.
        if self.observer is None:
            await future
            return
        with self.observer.write():
            await future

    def defer(self, table: Table, row: dict[str, Any]) -> None:
        """Insert a row nobody waits for (the usage record of a response that stores nothing else). The rows
        deferred within `defer_s` are queued together as one write, so they cost no transaction of their own
        even when requests come one at a time; a failure is logged. `stop()` still commits them."""
        self._deferred.setdefault(table, []).append(row)
        if self._defer_timer is None:
            self._defer_timer = asyncio.get_running_loop().call_later(self._defer_s, self.flush_deferred)

    def flush_deferred(self) -> None:
        """Queue the deferred rows now, as one write."""
        if self._defer_timer is not None:
            self._defer_timer.cancel()
            self._defer_timer = None
        if self._deferred:
            write, self._deferred = Write(inserts=list(self._deferred.items())), {}
            self._enqueue(write)

    def _enqueue(self, write: Write) -> None:
        """Queue a write nobody waits for: it joins the next group commit; a failure is logged."""
        if self._task is None:  # not started: commit it in a task of its own, held until it ends
            task = asyncio.ensure_future(self._commit([write]))
            self._detached.add(task)
            task.add_done_callback(self._detached.discard)
            task.add_done_callback(_log_failure)
            if write.done is not None:
                task.add_done_callback(lambda _: _settled(write))
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_log_failure)
        self._queue.put_nowait((write, future))

    async def _run(self) -> None:
        in_flight: set[asyncio.Task[None]] = set()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            # PostgreSQL: a batch of plain inserts is one statement that commutes with any other such batch, so
            # up to `_PG_IN_FLIGHT` commit at once: the event loop need not idle while one is on its way (at c=64
            # it did, ~1/4 of the time). Anything else waits for those in flight and runs alone, in order.
            statement = _pg_batch([w for w, _ in batch]) if self._pg else None
            if statement is None:
                if in_flight:
                    await asyncio.wait(in_flight)
                await self._commit_batch(batch, None)
                continue
            if len(in_flight) >= _PG_IN_FLIGHT:
                await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            task = asyncio.get_running_loop().create_task(self._commit_batch(batch, statement))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)

    async def _commit_batch(self, batch: list[tuple[Write, asyncio.Future[None]]],
                            statement: tuple[str, ...] | None) -> None:
        try:
            try:
                if statement is not None:
                    await self._commit_pg(statement)
                else:
                    await self._commit([w for w, _ in batch], batched=False)
            except Exception:
                log.warning("group commit of %d writes failed; retrying one by one", len(batch), exc_info=True)
                await self._one_by_one(batch)
                return
            if self.observer is not None:
                try:
                    self.observer.committed(len(batch))
                except Exception:  # telemetry must never leave the committed writes' callers waiting
                    log.exception("the write observer failed")
            for write, future in batch:
                if write.done is not None:
                    _settled(write)
                if not future.done():
                    future.set_result(None)
        finally:
            for write, _ in batch:
                if write.done is not None:  # given up (the writer cancelled mid-commit): nobody commits it now
                    _settled(write)
                self._queue.task_done()

    async def _one_by_one(self, batch: list[tuple[Write, asyncio.Future[None]]]) -> None:
        for write, future in batch:
            try:
                await self._commit([write], batched=False)
            except Exception as exc:
                _settled(write)
                if not future.done():
                    future.set_exception(exc)
            else:
                _settled(write)
                if not future.done():
                    future.set_result(None)

    async def _commit(self, writes: list[Write], batched: bool = True) -> None:
        """`batched`: plain inserts into PostgreSQL as one statement when they can be; False: the ordinary path
        (a write retried alone after its batch failed, whose errors are mapped: store/sql.py `_nul_in_text`; or
        a batch `_run` already found cannot be one statement)."""
        if self._sync is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._commit_sync, writes)
        elif batched and self._pg and (statement := _pg_batch(writes)) is not None:
            await self._commit_pg(statement)
            return
        else:
            async with self._engine.begin() as conn:
                await conn.run_sync(_apply, writes)
        self.transactions += 1

    async def _release_held(self) -> None:
        while self._pg_held:
            await self._pg_held.pop()[0].close()

    async def _commit_pg(self, statement: tuple[str, ...]) -> None:
        """One statement on asyncpg's own connection, outside SQLAlchemy's transactions (it is its own
        transaction). The writer keeps the connections it used (one per batch in flight at most) rather than
        taking one from the pool and giving it back for every batch; one that fails is dropped."""
        held = self._pg_held.pop() if self._pg_held else None
        if held is None:
            conn = await self._engine.connect()
            held = (conn, (await conn.get_raw_connection()).driver_connection)
        try:
            await held[1].execute(*statement)
        except BaseException:
            with contextlib.suppress(Exception):
                await held[0].invalidate()
                await held[0].close()
            raise
        self._pg_held.append(held)
        self.transactions += 1

    @property
    def sync_engine(self) -> Engine | None:
        """The engine of the SQLite writer thread (None on other databases)."""
        return self._sync

    def _commit_sync(self, writes: list[Write]) -> None:
        # One connection held by the writer thread for its lifetime: a pool checkout, return and reset
        # per transaction cost more than the inserts of a small batch.
        if self._sync_conn is None:
            assert self._sync is not None
            self._sync_conn = self._sync.connect()
        conn = self._sync_conn
        with conn.begin():
            _apply(conn, writes)


def _settled(write: Write) -> None:
    """Call the write's `done` callback, once (it is cleared first); a callback that raises is logged, never lets
    the writer fail the other writes."""
    done, write.done = write.done, None
    if done is None:
        return
    try:
        done()
    except Exception:
        log.exception("a write's done callback failed")


def _log_failure(future: asyncio.Future[None] | asyncio.Task[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("a queued write failed", exc_info=future.exception())


_PG_IN_FLIGHT = 4  # PostgreSQL batches of plain inserts committing at once (GroupCommitWriter._run)

_JSON_EXACT_TYPES = (Integer, BigInteger, Boolean, String, Text)


def _pg_batch(writes: list[Write]) -> tuple[str, ...] | None:
    """The writes as one PostgreSQL statement and its parameters (each table's rows as a JSON array of rows), or
    None when one runs statements of its own, writes a column JSON cannot carry exactly (floats, whose NaN orjson
    writes as null; bytes; vectors) or holds a value JSON cannot (an integer beyond 64 bits)."""
    groups: dict[tuple[Table, tuple[str, ...]], list[list[Any]]] = {}
    for write in writes:
        if write.before:
            return None
        for table, rows in write.inserts:
            if not rows:
                continue
            columns = tuple(rows[0])
            if not _pg_json_exact(table, columns):
                return None
            values, names = groups.setdefault((table, columns), []), rows[0].keys()
            for row in rows:
                if row.keys() != names:
                    return None  # rows of one table with different columns: the ordinary path inserts them
                values.append([row[c] for c in columns])
    if not groups:
        return None
    try:
        params = [orjson.dumps(rows).decode() for rows in groups.values()]
    except TypeError:
        return None
    return (_pg_batch_sql(tuple(groups)), *params)


@functools.cache
def _pg_json_exact(table: Table, columns: tuple[str, ...]) -> bool:
    return all(c in table.c and isinstance(table.c[c].type, _JSON_EXACT_TYPES) for c in columns)


@functools.cache
def _pg_batch_sql(tables: tuple[tuple[Table, tuple[str, ...]], ...]) -> str:
    """One INSERT per table as data-modifying CTEs, rows in the order given (jsonb_array_elements WITH ORDINALITY)
    so serial columns number them as a multi-row VALUES would. Text goes in as text (an explicit cast to
    VARCHAR(n) would truncate silently; the insert's own assignment refuses an over-long value, as before)."""
    ctes = []
    for n, (table, columns) in enumerate(tables):
        values = ", ".join(f"(v->>{i}){_pg_cast(table.c[column].type)}" for i, column in enumerate(columns))
        names = ", ".join(f'"{column}"' for column in columns)
        ctes.append(f'w{n} AS (INSERT INTO "{table.name}" ({names}) SELECT {values} '
                    f"FROM jsonb_array_elements(${n + 1}::jsonb) WITH ORDINALITY AS e(v, n) ORDER BY n)")
    return f"WITH {', '.join(ctes)} SELECT 1"


def _pg_cast(kind: Any) -> str:
    if isinstance(kind, Boolean):
        return "::boolean"
    if isinstance(kind, (Integer, BigInteger)):
        return "::bigint"
    return ""  # String, Text: ->> gives text


def _apply(conn: Connection, writes: list[Write]) -> None:
    # Inserts are merged per table; statements flush what is pending first, so order is preserved.
    pending: dict[Table, list[dict[str, Any]]] = {}
    for write in writes:
        if write.before:
            _flush(conn, pending)
            for statement in write.before:
                statement(conn)
        for table, rows in write.inserts:
            pending.setdefault(table, []).extend(rows)
    _flush(conn, pending)


def _flush(conn: Connection, pending: dict[Table, list[dict[str, Any]]]) -> None:
    for table, rows in pending.items():
        if not rows:
            continue
        if conn.dialect.name == "sqlite":
            _sqlite_insert_rows(conn, table.name, rows)
        else:
            conn.execute(insert(table), rows)
    pending.clear()


def _sqlite_insert_rows(conn: Connection, table: str, rows: list[dict[str, Any]]) -> None:
    """Multi-row INSERTs through the DB-API directly, in power-of-two sizes (so the driver's statement
    cache keeps hitting). SQLAlchemy's per-row parameter processing was most of the writer's CPU; and
    executemany releases and re-takes the GIL for every row, where one statement per size does it once.
    (The GIL hand-overs between this thread and the event loop still show in `perf` as futex wake-ups,
    ~5% of the loop thread's CPU: they come with the thread, not only with the rows.)"""
    columns = tuple(rows[0])
    driver: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
    per_statement = min(_MAX_ROWS, driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(columns))
    cursor = driver.cursor()
    try:
        start = 0
        while start < len(rows):
            size = 1 << (min(len(rows) - start, per_statement).bit_length() - 1)
            chunk = rows[start:start + size]
            cursor.execute(_sqlite_insert(table, columns, size), [row[c] for row in chunk for c in columns])
            start += size
    finally:
        cursor.close()


_MAX_ROWS = 256


@functools.lru_cache(maxsize=128)
def _sqlite_insert(table: str, columns: tuple[str, ...], rows: int) -> str:
    values = f"({', '.join('?' * len(columns))})"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([values] * rows)}"
