"""Storage faults answered clearly: a full disk, a read-only database, an unwritable start, a
HEARTBEAT.md that is a directory or larger on disk than its limit."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from app import cli
from ledger.errors import StorageFull, StorageReadOnly
from ledger.limits import INSTRUCTIONS_MAX_BYTES
from ledger.storage.engine import storage_fault
from tests.conftest import AppFactory, Running
from tests.fakes.provider import ScriptedLLM

MSGS = "/api/threads/default/messages"
MD = "/api/heartbeat/heartbeat.md"


@pytest.fixture
async def api(make_app: AppFactory) -> Running:
    return await make_app(llm=ScriptedLLM(), start_loops=False)


def pragma(sql: str) -> Any:
    """A write that changes the writer connection's settings (the engine's own SQL seam)."""
    return lambda tx: tx.conn.execute(sql).fetchall()


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (sqlite3.OperationalError("database or disk is full"), StorageFull),
        (sqlite3.DatabaseError("database or disk is full"), StorageFull),
        (sqlite3.OperationalError("attempt to write a readonly database"), StorageReadOnly),
        (sqlite3.OperationalError("database is locked"), None),
        (sqlite3.IntegrityError("UNIQUE constraint failed: runs.id"), None),
        (ValueError("disk is full"), None),  # not SQLite's
    ],
)
def test_storage_fault_table(error: Exception, fault: type[Exception] | None) -> None:
    got = storage_fault(error)
    assert (None if got is None else type(got)) is fault


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
    finally:
        await store.write(pragma("PRAGMA max_page_count = 1073741823"))


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
