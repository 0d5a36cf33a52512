"""SQL implementation of FileStore and FileChunkStore (tables `files` and `file_chunks`, migration 5), mixed
into SqlStore."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from parley.errors import InvalidRequest
from parley.store import tables
from parley.store.base import FilePage, FileRecord, PageQuery
from parley.store.pages import keyset_page

_f = tables.files
_COLUMNS = (_f.c.id, _f.c.project_id, _f.c.filename, _f.c.purpose, _f.c.bytes, _f.c.created_at,
            _f.c.expires_at, _f.c.content_type, _f.c.status, _f.c.status_details)


def _live(now: int) -> ColumnElement[bool]:
    return and_(_f.c.status != "uploading", or_(_f.c.expires_at.is_(None), _f.c.expires_at > now))


def _record(row: Any) -> FileRecord:
    return FileRecord(row.id, row.project_id, row.filename, row.purpose, int(row.bytes), int(row.created_at),
                      None if row.expires_at is None else int(row.expires_at), row.content_type, row.status,
                      row.status_details)


class SqlFiles:
    engine: AsyncEngine

    async def insert_file(self, record: FileRecord) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(insert(_f).values(
                id=record.id, project_id=record.project_id, filename=record.filename, purpose=record.purpose,
                bytes=record.bytes, created_at=record.created_at, expires_at=record.expires_at,
                content_type=record.content_type, status=record.status, status_details=record.status_details,
            ))

    async def complete_file(self, record: FileRecord) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(_f).where(_f.c.id == record.id, _f.c.status == "uploading").values(
                    filename=record.filename, purpose=record.purpose, bytes=record.bytes,
                    content_type=record.content_type, expires_at=record.expires_at, status=record.status,
                    status_details=record.status_details,
                )
            )
        return bool(result.rowcount)

    async def get_file(self, project_id: str, file_id: str, now: int) -> FileRecord | None:
        query = select(*_COLUMNS).where(_f.c.id == file_id, _f.c.project_id == project_id, _live(now))
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _record(row) if row is not None else None

    async def list_files(self, project_id: str, purpose: str | None, page: PageQuery, now: int) -> FilePage:
        where = [_f.c.project_id == project_id, _live(now)]
        if purpose is not None:
            where.append(_f.c.purpose == purpose)
        query = select(*_COLUMNS).where(and_(*where))
        async with self.engine.connect() as conn:

            async def locate(file_id: str, param: str) -> int:
                return await _seq_of(conn, project_id, file_id, param)

            rows, has_more = await keyset_page(conn, query, _f.c.seq, page, locate)
        return FilePage([_record(row) for row in rows], has_more)

    async def expire_file(self, project_id: str, file_id: str, now: int) -> tuple[FileRecord | None, bool]:
        async with self.engine.begin() as conn:
            # Conditional: of concurrent deleters, exactly one finds the file live.
            expired = await conn.execute(update(_f).where(_f.c.id == file_id, _f.c.project_id == project_id,
                                                          _live(now)).values(expires_at=now))
            row = (await conn.execute(
                select(*_COLUMNS).where(_f.c.id == file_id, _f.c.project_id == project_id)
            )).first()
        return (_record(row) if row is not None else None), bool(expired.rowcount)

    async def delete_file(self, project_id: str, file_id: str) -> FileRecord | None:
        async with self.engine.begin() as conn:
            row = (await conn.execute(
                select(*_COLUMNS).where(_f.c.id == file_id, _f.c.project_id == project_id)
            )).first()
            if row is None:
                return None
            result = await conn.execute(delete(_f).where(_f.c.id == file_id, _f.c.project_id == project_id))
        # Two deleters may both read the row; only the one whose DELETE removed it reports it.
        return _record(row) if result.rowcount else None

    async def expired_files(self, now: int, limit: int) -> list[FileRecord]:
        query = select(*_COLUMNS).where(_f.c.expires_at <= now).order_by(_f.c.expires_at).limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(row) for row in rows]

    # -- bytes in the database ---------------------------------------------------------------------

    async def put_file_chunk(self, file_id: str, seq: int, data: bytes) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(insert(tables.file_chunks).values(file_id=file_id, seq=seq, data=data))

    async def get_file_chunk(self, file_id: str, seq: int) -> bytes | None:
        c = tables.file_chunks
        async with self.engine.connect() as conn:
            data = (await conn.execute(select(c.c.data).where(c.c.file_id == file_id, c.c.seq == seq))).scalar()
        return bytes(data) if data is not None else None

    async def delete_file_chunks(self, file_id: str) -> None:
        c = tables.file_chunks
        async with self.engine.begin() as conn:
            await conn.execute(delete(c).where(c.c.file_id == file_id))


async def _seq_of(conn: AsyncConnection, project_id: str, file_id: str, param: str) -> int:
    seq = (await conn.execute(select(_f.c.seq).where(_f.c.project_id == project_id, _f.c.id == file_id))).scalar()
    if seq is None:
        raise InvalidRequest(f"No file with id '{file_id}'.", param=param)
    return int(seq)
