"""The storage engine on a real SQLite file: aiosqlite's private hand-over, migrations."""

from __future__ import annotations

import re
import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import aiosqlite
import pytest

from ledger.errors import Conflict
from ledger.storage import engine
from ledger.storage.migrations import MIGRATIONS
from ledger.storage.sqlite import SqliteStore

STORAGE = Path(engine.__file__).parent


def test_aiosqlite_still_has_the_private_api_the_engine_uses() -> None:
    version = getattr(aiosqlite, "__version__", "?")
    for name in engine.PRIVATE_API:
        assert hasattr(aiosqlite.Connection, name), (
            f"aiosqlite {version} no longer has Connection.{name}, which"
            " ledger/storage/engine.py in_thread() needs to run a whole transaction in the"
            " connection's thread: keep aiosqlite at the version pinned in pyproject.toml,"
            " or port in_thread() to what this release offers"
        )
    engine.check_aiosqlite()  # raises with the same explanation


async def test_in_thread_runs_a_function_in_the_connections_own_thread(tmp_path: Path) -> None:
    conn = await aiosqlite.connect(str(tmp_path / "x.db"))
    try:

        def probe(raw: sqlite3.Connection, value: int) -> tuple[int, int, bool]:
            (one,) = raw.execute("SELECT ?", (value,)).fetchone()
            return one, threading.get_ident(), isinstance(raw, sqlite3.Connection)

        await conn.create_function("thread_ident", 0, threading.get_ident)
        (own,) = next(iter(await conn.execute_fetchall("SELECT thread_ident()")))
        one, ident, is_sqlite = await engine.in_thread(conn, probe, 7)
        assert (one, is_sqlite) == (7, True)
        assert ident == own != threading.get_ident()  # aiosqlite's thread, not the loop's
    finally:
        await conn.close()


def test_a_changed_aiosqlite_is_refused_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(aiosqlite.Connection, "_execute")
    with pytest.raises(RuntimeError, match=r"aiosqlite .* pinned in pyproject\.toml"):
        engine.check_aiosqlite()


def test_the_private_api_is_used_in_one_function_only() -> None:
    root = STORAGE.parent.parent
    sources = {
        path: path.read_text(encoding="utf-8")
        for package in ("app", "loops", "ledger", "heartbeat_md")
        for path in sorted((root / package).rglob("*.py"))
    }
    importers = [p for p, text in sources.items() if re.search(r"^import aiosqlite", text, re.M)]
    assert importers == [STORAGE / "engine.py"]
    uses = [line.strip() for line in sources[STORAGE / "engine.py"].splitlines()]
    uses = [u for u in uses if re.search(r"\._(execute|conn)\b", u) and not u.startswith("#")]
    assert uses == [
        "run = cast(Callable[..., Awaitable[T]], conn._execute)",
        "return run(fn, conn._conn, *args)",
    ]


async def test_migrations_set_the_user_version_once(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    for _ in range(2):  # the second open finds nothing to apply
        store = await SqliteStore.open(path, now=lambda: 1.0)
        await store.close()
        with closing(sqlite3.connect(path)) as raw:
            assert raw.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)


async def test_a_database_newer_than_the_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    with closing(sqlite3.connect(path)) as raw:
        raw.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(Conflict, match="newer than this program knows"):
        await SqliteStore.open(path, now=lambda: 1.0)
