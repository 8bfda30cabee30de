"""Both guards in dictionaries, for consumers whose effects live elsewhere and for tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from consumers.errors import UnsupportedOperation
from consumers.event import Event
from consumers.store.base import Params, Row, Verdict, Work, is_stale


class _MemoryTransaction:
    async def write(self, sql: str, params: Params = ()) -> None:
        raise UnsupportedOperation("MemoryStore has no SQL; use SqliteStore (CONSUMER_DATABASE).")

    async def write_many(self, sql: str, rows: Iterable[Params]) -> None:
        raise UnsupportedOperation("MemoryStore has no SQL; use SqliteStore (CONSUMER_DATABASE).")

    async def execute(self, sql: str, params: Params = ()) -> int:
        raise UnsupportedOperation("MemoryStore has no SQL; use SqliteStore (CONSUMER_DATABASE).")

    async def executemany(self, sql: str, rows: Iterable[Params]) -> int:
        raise UnsupportedOperation("MemoryStore has no SQL; use SqliteStore (CONSUMER_DATABASE).")

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        raise UnsupportedOperation("MemoryStore has no SQL; use SqliteStore (CONSUMER_DATABASE).")

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        raise UnsupportedOperation("MemoryStore has no SQL; use SqliteStore (CONSUMER_DATABASE).")


class MemoryStore:
    """Both guards in dictionaries (lost on restart): for handlers whose effects live elsewhere."""

    def __init__(self) -> None:
        self.applied: set[str] = set()
        self.last: dict[tuple[str, str], str] = {}
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def apply(self, event: Event, work: Work) -> Verdict:
        async with self._lock:
            if event.message_id in self.applied:
                return "duplicate"
            key = (event.organisation_id or "", event.entity or "")
            if event.entity is not None and is_stale(event, self.last.get(key)):
                return "stale"
            await work(_MemoryTransaction())
            self.applied.add(event.message_id)
            if event.entity is not None and event.date_key is not None:
                self.last[key] = max(self.last.get(key, ""), event.date_key)
            return "applied"
