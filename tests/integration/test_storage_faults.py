"""Storage faults answered clearly: a full disk, a read-only database, a damaged one or a file
that is not a database (at start-up and under a running service), an unwritable start, a
HEARTBEAT.md that is a directory or larger on disk than its limit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app import cli
from ledger.errors import (
    StorageCorrupt,
    StorageFault,
    StorageFull,
    StorageIOError,
    StorageReadOnly,
)
from ledger.limits import INSTRUCTIONS_MAX_BYTES
from ledger.storage import engine
from ledger.storage.faults import storage_fault
from loops import lifecycle
from loops.clock import FakeClock
from loops.events import EventBus
from loops.supervisor import LoopKind, LoopState, Supervisor, interval_body
from tests.conftest import AppFactory, Running
from tests.fakes.provider import ScriptedLLM
from tests.integration.test_scheduler import START, runs, service

MSGS = "/api/threads/default/messages"
MD = "/api/heartbeat/heartbeat.md"


@pytest.fixture
async def api(make_app: AppFactory) -> Running:
    return await make_app(llm=ScriptedLLM(), start_loops=False)


def pragma(sql: str) -> Any:
    """A write that changes the writer connection's settings (the engine's own SQL seam)."""
    return lambda tx: tx.conn.execute(sql).fetchall()


def sqlite_error(code: int, text: str) -> sqlite3.DatabaseError:
    """SQLite's error as the sqlite3 module raises it: its words and its (extended) code."""
    err = sqlite3.DatabaseError(text)
    err.sqlite_errorcode = code
    return err


# SQLite's I/O errors (SQLITE_IOERR and its extended codes) are hard to cause for real on a
# working disk, so this table is their test; the other faults are also caused for real below.
@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (sqlite_error(sqlite3.SQLITE_FULL, "database or disk is full"), StorageFull),
        (
            sqlite_error(sqlite3.SQLITE_READONLY, "attempt to write a readonly database"),
            StorageReadOnly,
        ),
        (
            sqlite_error(sqlite3.SQLITE_READONLY_DBMOVED, "attempt to write a readonly database"),
            StorageReadOnly,
        ),
        (sqlite_error(sqlite3.SQLITE_CORRUPT, "database disk image is malformed"), StorageCorrupt),
        (
            sqlite_error(sqlite3.SQLITE_CORRUPT_INDEX, "database disk image is malformed"),
            StorageCorrupt,
        ),
        (sqlite_error(sqlite3.SQLITE_NOTADB, "file is not a database"), StorageCorrupt),
        (sqlite_error(sqlite3.SQLITE_IOERR, "disk I/O error"), StorageIOError),
        (sqlite_error(sqlite3.SQLITE_IOERR_SHORT_READ, "disk I/O error"), StorageIOError),
        (sqlite_error(sqlite3.SQLITE_IOERR_FSYNC, "disk I/O error"), StorageIOError),
        (sqlite_error(sqlite3.SQLITE_IOERR_NOMEM, "out of memory"), None),  # memory, not disk
        (sqlite_error(sqlite3.SQLITE_BUSY, "database is locked"), None),
        (
            sqlite_error(sqlite3.SQLITE_CONSTRAINT_UNIQUE, "UNIQUE constraint failed: runs.id"),
            None,
        ),  # the code decides
        (sqlite_error(sqlite3.SQLITE_ERROR, "no such table: malformed"), None),
        # made without a code: told by SQLite's words
        (sqlite3.OperationalError("database or disk is full"), StorageFull),
        (sqlite3.DatabaseError("database or disk is full"), StorageFull),
        (sqlite3.OperationalError("attempt to write a readonly database"), StorageReadOnly),
        (sqlite3.DatabaseError("database disk image is malformed"), StorageCorrupt),
        (sqlite3.DatabaseError("file is not a database"), StorageCorrupt),
        (sqlite3.OperationalError("disk I/O error"), StorageIOError),
        (sqlite3.OperationalError("database is locked"), None),
        (sqlite3.IntegrityError("UNIQUE constraint failed: runs.id"), None),
        (ValueError("disk is full"), None),  # not SQLite's
    ],
)
def test_storage_fault_table(error: Exception, fault: type[Exception] | None) -> None:
    got = storage_fault(error, "/data/heartbeat.db")
    assert (None if got is None else type(got)) is fault
    if got is not None:
        assert got.http_status == 503 and got.cause == str(error)


@pytest.mark.parametrize(
    ("fault", "code", "says"),
    [
        (StorageCorrupt, "storage_corrupt", ("/data/heartbeat.db is damaged", "backup", "-wal")),
        (StorageIOError, "storage_io_error", ("/data/heartbeat.db failed at the disk", "restart")),
    ],
)
def test_a_lasting_fault_names_the_file_sqlite_s_words_and_what_to_do(
    fault: type[StorageFault], code: str, says: tuple[str, ...]
) -> None:
    err = fault(path="/data/heartbeat.db", cause="SQLite's words")
    assert (err.code, err.http_status, err.lasting) == (code, 503, True)
    assert "(SQLite: SQLite's words)" in err.message
    assert all(part in err.message for part in says), err.message
    assert not StorageFull().lasting and "disk is full" in StorageFull(path="x").message


async def test_read_only_database_refuses_writes_with_503_and_reads_go_on(api: Running) -> None:
    c, store = api.client, api.service.store
    assert (await c.post(MSGS, json={"role": "user", "content": "before"})).status_code == 201
    await store.write(pragma("PRAGMA query_only = ON"))  # for good: no write can undo it
    r = await c.post(MSGS, json={"role": "user", "content": "after"})
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "storage_read_only"
    assert "read-only" in r.json()["error"]["message"]
    r = await c.get(MSGS)
    assert r.status_code == 200 and [m["content"] for m in r.json()["items"]] == ["before"]


async def test_full_disk_refuses_writes_with_503_and_reads_go_on(api: Running) -> None:
    c, store = api.client, api.service.store
    pages = (await store.write(pragma("PRAGMA page_count")))[0][0]
    await store.write(pragma(f"PRAGMA max_page_count = {pages}"))
    try:
        answers = [
            await c.post(MSGS, json={"role": "user", "content": f"{i} " + "x" * 9000})
            for i in range(30)
        ]
        refused = [r for r in answers if r.status_code != 201]
        assert refused, "the page limit was never reached"
        assert {r.status_code for r in refused} == {503}
        assert {r.json()["error"]["code"] for r in refused} == {"storage_full"}
        assert (await c.get(MSGS)).status_code == 200
        storage = (await c.get("/healthz")).json()["storage"]
        assert (storage["status"], storage["code"]) == ("failing", "storage_full")
    finally:
        await store.write(pragma("PRAGMA max_page_count = 1073741823"))
    assert (await c.post(MSGS, json={"role": "user", "content": "room again"})).status_code == 201
    assert (await c.get("/healthz")).json()["storage"]["status"] == "ok"  # over with a write


def _serve(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], ws: Path, db: Path
) -> tuple[int, str]:
    monkeypatch.setenv("HEARTBEAT_WORKSPACE", str(ws))
    monkeypatch.setenv("HEARTBEAT_DB", str(db))
    code = cli.main(["serve", "--port", "1"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_start_on_an_unwritable_database_prints_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "a-dir.db").mkdir()
    for db in (tmp_path / "a-file" / "heartbeat.db", tmp_path / "a-dir.db"):
        code, out = _serve(monkeypatch, capsys, tmp_path, db)
        assert code == 1
        assert out.count("\n") == 1 and "Traceback" not in out, out
        assert out.startswith(f"heartbeat: cannot write the database {db}: "), out


def test_start_on_an_immutable_database_prints_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "heartbeat.db"
    sqlite3.connect(db).close()
    if subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        code, out = _serve(monkeypatch, capsys, tmp_path, db)
    finally:
        with contextlib.suppress(OSError):
            subprocess.run(["chattr", "-i", str(db)], check=True)
    assert code == 1 and out.count("\n") == 1, out
    assert "readonly" in out or "read-only" in out or "unable to open" in out, out


async def test_heartbeat_md_that_is_a_directory_is_a_clear_error(api: Running) -> None:
    c = api.client
    md = api.service.settings.heartbeat_md
    md.unlink(missing_ok=True)
    md.mkdir()
    r = await c.get(MD)
    assert r.status_code == 409 and r.json()["error"]["code"] == "instructions_unusable"
    assert "directory" in r.json()["error"]["message"]
    r = await c.post(MD, json={"content": "- [ ] check"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "instructions_unusable"
    run = (await c.post("/api/threads/default/heartbeat/run-now")).json()
    assert (run["status"], run["reason"]) == ("failed", "unusable_instructions")
    assert "directory" in run["error"]


async def test_heartbeat_md_over_the_limit_on_disk_is_never_sent(make_app: AppFactory) -> None:
    llm = ScriptedLLM()
    api = await make_app(llm=llm, start_loops=False)
    c = api.client
    md = api.service.settings.heartbeat_md
    md.write_text("- [ ] check\n" + "x" * (INSTRUCTIONS_MAX_BYTES + 1), encoding="utf-8")
    r = await c.get(MD)
    assert r.status_code == 409 and r.json()["error"]["code"] == "instructions_unusable"
    assert str(INSTRUCTIONS_MAX_BYTES) in r.json()["error"]["message"]
    run = (await c.post("/api/threads/default/heartbeat/run-now")).json()
    assert (run["status"], run["reason"]) == ("failed", "unusable_instructions")
    assert "over its limit" in run["error"]
    assert llm.requests == []


def corrupt(db: Path) -> None:
    """Overwrite every page of ``db`` but the first (the header) with garbage, once the WAL's
    pages are in the file: what a failing disk or a stray write leaves behind."""
    conn = sqlite3.connect(db)
    try:
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    finally:
        conn.close()
    assert busy == 0, "the WAL could not be moved into the file"
    size = db.stat().st_size
    assert size > page, "the file has a single page"
    with db.open("r+b") as fh:
        fh.seek(page)
        fh.write((b"not a b-tree page " * (size // 18 + 1))[: size - page])


def test_start_on_a_file_that_is_not_a_database_prints_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "heartbeat.db"
    db.write_bytes(b"these are someone's notes, not a database\n" * 200)
    code, out = _serve(monkeypatch, capsys, tmp_path, db)
    assert code == 1
    assert out.count("\n") == 1 and "Traceback" not in out, out
    assert out.startswith(f"heartbeat: the database file {db} is damaged or is not a Heartbeat"), (
        out
    )
    assert "(SQLite: file is not a database)" in out and "backup" in out, out
    assert db.read_bytes().startswith(b"these are someone's notes")  # left as it was


def test_start_on_a_damaged_database_prints_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "heartbeat.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.executemany("INSERT INTO notes (body) VALUES (?)", [("x" * 500,)] * 100)
    conn.commit()
    conn.close()
    corrupt(db)
    code, out = _serve(monkeypatch, capsys, tmp_path, db)
    assert code == 1
    assert out.count("\n") == 1 and "Traceback" not in out, out
    assert out.startswith(f"heartbeat: the database file {db} is damaged"), out


def test_start_on_another_program_s_database_prints_one_line_and_leaves_it_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "places.sqlite"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE bookmarks (url TEXT)")
        conn.commit()
    code, out = _serve(monkeypatch, capsys, tmp_path, db)
    assert code == 1 and out.count("\n") == 1, out
    assert out.startswith(f"heartbeat: the database file {db} is damaged or is not a Heartbeat"), (
        out
    )
    assert "(it holds tables, but no Heartbeat schema version)" in out, out
    with contextlib.closing(sqlite3.connect(db)) as conn:
        tables = conn.execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [("bookmarks",)]


async def test_database_damaged_under_a_running_service_answers_503_and_keeps_the_run(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    llm = ScriptedLLM()
    api = await make_app(llm=llm, start_loops=False)
    c, svc = api.client, api.service
    db = svc.settings.db_path
    for i in range(40):
        r = await c.post(MSGS, json={"role": "user", "content": f"{i} " + "x" * 2000})
        assert r.status_code == 201
    health = (await c.get("/healthz")).json()
    assert health["storage"] == {"status": "ok", "code": None, "message": None}

    llm.gate = asyncio.Event()  # a heartbeat in flight: its context read, its model answering
    run = asyncio.create_task(c.post("/api/threads/default/heartbeat/run-now"))
    for _ in range(500):
        if llm.active:
            break
        await asyncio.sleep(0.01)
    assert llm.active, "the run never reached the model"
    corrupt(db)
    caplog.set_level(logging.INFO, logger="heartbeat")

    r = await c.get(MSGS)
    assert r.status_code == 503, r.text
    error = r.json()["error"]
    assert error["code"] == "storage_corrupt"
    assert f"the database file {db} is damaged or is not a Heartbeat database" in error["message"]
    assert "backup" in error["message"]
    again = await c.get(MSGS)
    assert (again.status_code, again.json()["error"]["code"]) == (503, "storage_corrupt")

    llm.gate.set()  # the run finishes: its outcome cannot be written, and says so
    answer = await run
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "storage_corrupt"
    kept = list((db.parent / "unrecorded").glob("run-*.json"))
    assert len(kept) == 1, "the run's outcome was not kept for the next start"
    lost = [
        rec.getMessage() for rec in caplog.records if "could not be recorded" in rec.getMessage()
    ]
    assert len(lost) == 1 and str(kept[0]) in lost[0], lost

    faults = [rec for rec in caplog.records if rec.getMessage().startswith("storage fault:")]
    assert len(faults) == 1, [rec.getMessage() for rec in faults]  # logged once
    assert "backup" in faults[0].getMessage()
    assert not [rec for rec in caplog.records if rec.exc_info], "a traceback was logged"

    health = (await c.get("/healthz")).json()  # the service is up and says what is wrong
    assert health["ok"] is True and health["status"] == "degraded"
    assert health["storage"]["status"] == "failing"
    assert health["storage"]["code"] == "storage_corrupt"
    assert "the database file is damaged" in health["storage"]["message"]
    assert str(db) not in health["storage"]["message"]  # /healthz is open: no path in it


async def test_a_loop_failing_on_a_storage_fault_logs_one_line_not_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, bus = FakeClock(), EventBus()
    fault = StorageCorrupt(path="/data/heartbeat.db", cause="database disk image is malformed")
    deaths: list[float] = []

    async def body(state: LoopState) -> None:  # the heartbeat loop: a task group of its tasks
        deaths.append(clock.now())
        if len(deaths) > 2:
            await asyncio.Event().wait()

        async def claim() -> None:
            raise fault

        async with asyncio.TaskGroup() as tg:
            tg.create_task(claim())

    async def tick() -> int:
        raise fault

    sup = Supervisor(clock, bus)
    sup.add(LoopKind(state=LoopState(name="beats", enabled=True, interval=10), body=body))
    sup.add(
        LoopKind(
            state=LoopState(name="ticks", enabled=True, interval=10),
            body=interval_body(clock, tick),
        )
    )
    caplog.set_level(logging.INFO, logger="heartbeat")
    await sup.start("beats")
    await sup.start("ticks")
    await clock.advance(25)
    await sup.stop_all()
    assert len(deaths) == 3
    assert sup.kinds["beats"].state.last_error == f"StorageCorrupt: {fault}"
    lines = [rec.getMessage() for rec in caplog.records if "storage_corrupt" in rec.getMessage()]
    assert len([line for line in lines if "beats loop died" in line]) == 2, lines
    assert len([line for line in lines if "tick failed" in line]) == 2, lines
    assert not [rec for rec in caplog.records if rec.exc_info], "a traceback was logged"


async def test_an_io_error_in_a_run_s_context_read_fails_the_run_with_storage_fault(
    api: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite's own error where the reader's thread reads (I/O errors are hard to cause for real)
    def unreadable(conn: sqlite3.Connection, queries: Any) -> Any:
        raise sqlite_error(sqlite3.SQLITE_IOERR_SHORT_READ, "disk I/O error")

    monkeypatch.setattr(engine, "_read_all", unreadable)
    run = (await api.client.post("/api/threads/default/heartbeat/run-now")).json()
    assert (run["status"], run["reason"]) == ("failed", "storage_fault")
    assert "failed at the disk (SQLite: disk I/O error)" in run["error"], run["error"]
    monkeypatch.undo()  # reads work again, but one good read says nothing of the disk
    storage = (await api.client.get("/healthz")).json()["storage"]
    assert (storage["status"], storage["code"]) == ("failing", "storage_io_error")


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


async def test_a_run_finishing_on_a_read_only_database_waits_and_is_recorded_once_it_can_be(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "FINISH_RETRY_FIRST", 0.05)
    llm = ScriptedLLM()
    api = await make_app(llm=llm, start_loops=False)
    c, store = api.client, api.service.store
    llm.gate = asyncio.Event()
    run = asyncio.create_task(c.post("/api/threads/default/heartbeat/run-now"))
    await eventually(lambda: llm.active > 0)
    await store.write(pragma("PRAGMA query_only = ON"))  # every write refused from now on
    caplog.set_level(logging.INFO, logger="heartbeat")
    llm.gate.set()
    await eventually(lambda: "waits for the database file to take writes" in caplog.text)
    assert not run.done()  # the outcome is waited with, not dropped
    storage = (await c.get("/healthz")).json()["storage"]
    assert (storage["status"], storage["code"]) == ("failing", "storage_read_only")

    # the one way back from query_only: on the writer's own connection, outside a transaction
    writer = store._db._w  # type: ignore[attr-defined]
    await engine.in_thread(writer, lambda conn: conn.execute("PRAGMA query_only = OFF"))
    answer = await asyncio.wait_for(run, 10)
    assert answer.status_code == 200 and answer.json()["status"] == "ok", answer.text
    assert "recorded after the database took writes again" in caplog.text
    assert (await c.get("/healthz")).json()["storage"]["status"] == "ok"
    assert not list(api.service.settings.db_path.parent.glob("unrecorded/*"))


async def test_a_claim_on_a_read_only_database_keeps_its_slot_until_writes_work_again(
    workspace: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock, llm = FakeClock(START), ScriptedLLM()
    async with service(workspace, clock, llm) as svc:
        await svc.set_config("default", {"every_seconds": 600})
        anchor = (await svc.store.get_thread("default")).anchor
        assert anchor is not None
        await svc.store.write(pragma("PRAGMA query_only = ON"))  # every write refused
        caplog.set_level(logging.INFO, logger="heartbeat.loops.scheduler")
        await clock.advance(600 + 30)  # the slot comes due; the claim is refused, retried
        assert await runs(svc) == [] and "default" in svc.scheduler.timers
        writer = svc.store._db._w  # type: ignore[attr-defined]
        await engine.in_thread(writer, lambda conn: conn.execute("PRAGMA query_only = OFF"))
        await clock.advance(30)
        (row,) = await runs(svc)
        assert (row.slot, row.status) == (anchor + 600, "ok")  # the slot owed, run late
        assert svc.supervisor.kinds["heartbeat"].state.restarts == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "heartbeat.loops.scheduler"]
    waits = [m for m in lines if "claims wait for the database file" in m]
    assert len(waits) == 1 and "read-only" in waits[0], lines
    assert sum("the database is back after" in m for m in lines) == 1, lines
