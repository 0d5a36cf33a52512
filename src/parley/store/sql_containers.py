"""SQL implementation of ContainerStore (tables `containers` and `container_files`, migration 9), mixed into
SqlStore."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, delete, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from parley.errors import InvalidRequest
from parley.store import tables
from parley.store.base import ContainerFileRecord, ContainerRecord, PageQuery
from parley.store.pages import keyset_page

_c = tables.containers
_cf = tables.container_files
_pb = tables.pending_blobs
_C_COLUMNS = (_c.c.id, _c.c.project_id, _c.c.name, _c.c.created_at, _c.c.last_active_at, _c.c.expires_minutes,
              _c.c.memory_limit, _c.c.status, _c.c.session_owner, _c.c.files_generation)
_F_COLUMNS = (_cf.c.id, _cf.c.container_id, _cf.c.project_id, _cf.c.path, _cf.c.bytes, _cf.c.source,
              _cf.c.created_at)


def _container(row: Any) -> ContainerRecord:
    return ContainerRecord(row.id, row.project_id, row.name, int(row.created_at), int(row.last_active_at),
                           int(row.expires_minutes), row.memory_limit, row.status, row.session_owner,
                           int(row.files_generation))


def _file(row: Any) -> ContainerFileRecord:
    return ContainerFileRecord(row.id, row.container_id, row.project_id, row.path, int(row.bytes), row.source,
                               int(row.created_at))


def _unexpired(now: int) -> Any:
    return and_(_c.c.status == "running", _c.c.last_active_at + _c.c.expires_minutes * literal(60) > now)


class SqlContainers:
    engine: AsyncEngine

    async def insert_container(self, record: ContainerRecord, files: Sequence[ContainerFileRecord] = ()) -> None:
        async with self.engine.begin() as conn:
            if files:
                await conn.execute(insert(_cf), _file_rows(files))
                await _claim(conn, [f.id for f in files])
            await conn.execute(insert(_c).values(
                id=record.id, project_id=record.project_id, name=record.name, created_at=record.created_at,
                last_active_at=record.last_active_at, expires_minutes=record.expires_minutes,
                memory_limit=record.memory_limit, status=record.status, session_owner=record.session_owner,
                files_generation=record.files_generation,
            ))

    async def get_container(self, project_id: str, container_id: str) -> ContainerRecord | None:
        query = select(*_C_COLUMNS).where(_c.c.id == container_id, _c.c.project_id == project_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _container(row) if row is not None else None

    async def list_containers(self, project_id: str, name: str | None,
                              page: PageQuery) -> tuple[list[ContainerRecord], bool]:
        query = select(*_C_COLUMNS).where(_c.c.project_id == project_id)
        if name is not None:
            query = query.where(_c.c.name == name)
        async with self.engine.connect() as conn:

            async def locate(container_id: str, param: str) -> int:
                return await _seq(conn, _c.c.seq, and_(_c.c.id == container_id, _c.c.project_id == project_id),
                                  f"No container with id '{container_id}'.", param)

            rows, has_more = await keyset_page(conn, query, _c.c.seq, page, locate)
        return [_container(row) for row in rows], has_more

    async def count_containers(self, project_id: str | None, now: int) -> int:
        query = select(func.count()).select_from(_c).where(_unexpired(now))
        if project_id is not None:
            query = query.where(_c.c.project_id == project_id)
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def delete_container(self, project_id: str, container_id: str) -> list[str] | None:
        async with self.engine.begin() as conn:
            gone = await conn.execute(delete(_c).where(_c.c.id == container_id, _c.c.project_id == project_id))
            if not gone.rowcount:
                return None
            files = list((await conn.execute(select(_cf.c.id).where(_cf.c.container_id == container_id))).scalars())
            await conn.execute(delete(_cf).where(_cf.c.container_id == container_id))
            await _pend(conn, files, 0)
        return files

    async def touch_container(self, container_id: str, now: int, owner: str | None) -> None:
        values: dict[str, Any] = {"last_active_at": now}
        if owner is not None:
            values["session_owner"] = owner
        async with self.engine.begin() as conn:
            await conn.execute(update(_c).where(_c.c.id == container_id).values(**values))

    async def expire_containers(self, now: int, limit: int) -> list[tuple[str, list[str]]]:
        due = (select(_c.c.id).where(_c.c.status == "running",
                                     _c.c.last_active_at + _c.c.expires_minutes * literal(60) <= now)
               .order_by(_c.c.last_active_at).limit(limit))
        expired: list[tuple[str, list[str]]] = []
        async with self.engine.begin() as conn:
            for container_id in list((await conn.execute(due)).scalars()):
                flipped = await conn.execute(update(_c).where(_c.c.id == container_id, _c.c.status == "running")
                                             .values(status="expired"))
                if not flipped.rowcount:  # another process expired it
                    continue
                files = list((await conn.execute(
                    select(_cf.c.id).where(_cf.c.container_id == container_id))).scalars())
                await conn.execute(delete(_cf).where(_cf.c.container_id == container_id))
                await _pend(conn, files, 0)
                expired.append((container_id, files))
        return expired

    async def running_containers(self, container_ids: list[str], now: int) -> set[str]:
        if not container_ids:
            return set()
        query = select(_c.c.id).where(_c.c.id.in_(container_ids), _unexpired(now))
        async with self.engine.connect() as conn:
            return set((await conn.execute(query)).scalars())

    async def change_container_files(self, container_id: str, added: list[ContainerFileRecord],
                                     removed: list[str]) -> tuple[int, list[str]]:
        async with self.engine.begin() as conn:
            if removed:
                await conn.execute(delete(_cf).where(_cf.c.container_id == container_id, _cf.c.id.in_(removed)))
            replaced: list[str] = []
            if added:
                paths = [record.path for record in added]
                replaced = list((await conn.execute(select(_cf.c.id).where(
                    _cf.c.container_id == container_id, _cf.c.path.in_(paths)))).scalars())
                if replaced:
                    await conn.execute(delete(_cf).where(_cf.c.id.in_(replaced)))
                await conn.execute(insert(_cf), _file_rows(added))
                await _claim(conn, [r.id for r in added])
            await _pend(conn, [*removed, *replaced], 0)
            await conn.execute(update(_c).where(_c.c.id == container_id)
                               .values(files_generation=_c.c.files_generation + 1))
            generation = (await conn.execute(
                select(_c.c.files_generation).where(_c.c.id == container_id))).scalar()
        return int(generation or 0), replaced

    async def pend_blobs(self, keys: Sequence[str], due_at: int) -> None:
        async with self.engine.begin() as conn:
            await _pend(conn, keys, due_at)

    async def drop_pending_blobs(self, keys: Sequence[str]) -> None:
        async with self.engine.begin() as conn:
            await _claim(conn, keys)

    async def due_blobs(self, now: int, limit: int) -> list[str]:
        # A key a row claims is not removed (its bytes are that file's): its entry just goes.
        query = select(_pb.c.key, _cf.c.id).select_from(_pb.outerjoin(_cf, _cf.c.id == _pb.c.key)).where(
            _pb.c.due_at <= now).order_by(_pb.c.due_at).limit(limit)
        async with self.engine.begin() as conn:
            rows = (await conn.execute(query)).all()
            await _claim(conn, [key for key, claimed in rows if claimed is not None])
        return [key for key, claimed in rows if claimed is None]

    async def list_container_files(self, project_id: str, container_id: str,
                                   page: PageQuery) -> tuple[list[ContainerFileRecord], bool]:
        query = select(*_F_COLUMNS).where(_cf.c.container_id == container_id, _cf.c.project_id == project_id)
        async with self.engine.connect() as conn:

            async def locate(file_id: str, param: str) -> int:
                return await _seq(conn, _cf.c.seq, and_(_cf.c.id == file_id, _cf.c.container_id == container_id),
                                  f"No container file with id '{file_id}'.", param)

            rows, has_more = await keyset_page(conn, query, _cf.c.seq, page, locate)
        return [_file(row) for row in rows], has_more

    async def all_container_files(self, container_id: str) -> list[ContainerFileRecord]:
        query = select(*_F_COLUMNS).where(_cf.c.container_id == container_id).order_by(_cf.c.seq)
        async with self.engine.connect() as conn:
            return [_file(row) for row in (await conn.execute(query)).all()]

    async def get_container_file(self, project_id: str, container_id: str,
                                 file_id: str) -> ContainerFileRecord | None:
        query = select(*_F_COLUMNS).where(_cf.c.id == file_id, _cf.c.container_id == container_id,
                                          _cf.c.project_id == project_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _file(row) if row is not None else None


def _file_rows(records: Sequence[ContainerFileRecord]) -> list[dict[str, Any]]:
    return [{"id": r.id, "container_id": r.container_id, "project_id": r.project_id, "path": r.path,
             "bytes": r.bytes, "source": r.source, "created_at": r.created_at} for r in records]


async def _pend(conn: AsyncConnection, keys: Sequence[str], due_at: int) -> None:
    # A key may pend already: two processes removing one file both pend it (the first's entry goes once the bytes do).
    if keys:
        pend = postgresql.insert(_pb) if conn.dialect.name == "postgresql" else sqlite.insert(_pb)
        await conn.execute(pend.on_conflict_do_nothing(),
                           [{"key": key, "due_at": due_at} for key in dict.fromkeys(keys)])


async def _claim(conn: AsyncConnection, keys: Sequence[str]) -> None:
    for start in range(0, len(keys), 500):
        await conn.execute(delete(_pb).where(_pb.c.key.in_(keys[start:start + 500])))


async def _seq(conn: AsyncConnection, column: Any, where: Any, message: str, param: str) -> int:
    seq = (await conn.execute(select(column).where(where))).scalar()
    if seq is None:
        raise InvalidRequest(message, param=param)
    return int(seq)
