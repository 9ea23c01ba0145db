"""The SQLite backend: ``SqliteStore`` (a ``Storage``) and ``SqliteTx`` (its ``Tx``).

Both are the aggregates' composition (``ledger.storage.aggregates``) over one SQLite
``Engine``. Open with ``await SqliteStore.open(path, now=...)``; close with ``close()``. Only
the composition root names this module; the rest of the program sees the Protocols of
``ledger.storage.interface``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ledger.storage.aggregates import SqlStore, SqlStoreTx
from ledger.storage.engine import READERS, Engine, open_engine
from ledger.storage.interface import Storage
from ledger.storage.migrations import MIGRATIONS

SqliteTx = SqlStoreTx


class SqliteStore(SqlStore):
    """The SQLite file: reads, and writes as plain functions of a ``SqliteTx`` (group commit)."""

    def __init__(self, db: Engine[SqliteTx], path: Path) -> None:
        super().__init__(db)
        self.path = path

    @classmethod
    async def open(
        cls, path: Path | str, *, now: Callable[[], float], readers: int = READERS
    ) -> SqliteStore:
        path = Path(path)
        db = await open_engine(
            path, now=now, make_tx=SqliteTx, migrations=MIGRATIONS, readers=readers
        )
        return cls(db, path)

    @property
    def shared(self) -> bool:
        return False

    @property
    def location(self) -> str:
        return str(self.path)


if TYPE_CHECKING:  # the type checker verifies that SqliteStore implements Storage
    _: type[Storage] = SqliteStore
