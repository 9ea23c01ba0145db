"""HEARTBEAT.md's revisions through the API and the command line, on each backend: the file's
(SQLite: a hash of its text) or the database's (PostgreSQL: the number of the save)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from psycopg.conninfo import conninfo_to_dict

from app.cli import main
from tests.backends import Backend
from tests.conftest import AppFactory
from tests.fakes.provider import ScriptedLLM

MD = "/api/heartbeat/heartbeat.md"


async def test_a_save_on_a_stale_revision_is_refused_and_names_the_current_one(
    backend: Backend, make_app: AppFactory, workspace: Path
) -> None:
    api = await make_app(llm=ScriptedLLM(), start_loops=False, **backend.settings())
    where = "file" if backend.name == "sqlite" else "database"
    start = (await api.client.get(MD)).json()  # the workspace's file (imported, on PostgreSQL)
    assert start["stored_in"] == where
    assert start["revision"] == ("1" if where == "database" else start["revision"])
    first = await api.client.post(
        MD, json={"content": "- one\n", "base_revision": start["revision"]}
    )
    assert first.status_code == 200, first.text
    base = first.json()["revision"]
    assert base != "0" and (await api.client.get(MD)).json()["revision"] == base
    second = await api.client.post(MD, json={"content": "- two\n", "base_revision": base})
    assert second.status_code == 200
    current = second.json()["revision"]
    stale = await api.client.post(MD, json={"content": "- lost edit\n", "base_revision": base})
    assert stale.status_code == 409
    error = stale.json()["error"]
    assert (error["code"], error["field"], error["current_revision"]) == (
        "revision_conflict",
        "base_revision",
        current,
    )
    assert current in error["message"] and base in error["message"]
    assert (await api.client.get(MD)).json()["content"] == "- two\n"
    forced = await api.client.post(MD, json={"content": "- three\n"})  # no base: replaces
    assert forced.status_code == 200 and forced.json()["content"] == "- three\n"
    wrong = await api.client.post(MD, json={"content": "x", "base_revision": 3})
    assert wrong.status_code == 422
    on_disk = (workspace / "HEARTBEAT.md").read_text(encoding="utf-8")
    assert (on_disk == "- three\n") == (backend.name == "sqlite")  # PostgreSQL writes no file


def test_import_and_export_from_the_command_line(
    backend: Backend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HEARTBEAT_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("HEARTBEAT_DB", str(tmp_path / "ws" / "heartbeat.db"))
    monkeypatch.delenv("HEARTBEAT_DATABASE_URL", raising=False)
    if backend.name == "postgres":
        info = conninfo_to_dict(backend.where)  # a URL naming the test's schema
        url = (
            f"postgresql://{info.get('user', 'postgres')}@{info.get('host', '127.0.0.1')}"
            f":{info.get('port', 5432)}/{info.get('dbname', 'test')}"
            f"?options={quote(str(info.get('options', '')))}"
        )
        monkeypatch.setenv("HEARTBEAT_DATABASE_URL", url)
    source = tmp_path / "in.md"
    source.write_text("# Rules\n- imported\n", encoding="utf-8")
    assert main(["instructions", "import", str(source)]) == 0
    where = "file" if backend.name == "sqlite" else "database"
    assert f"imported as revision 1 ({where})" in capsys.readouterr().err or where == "file"
    assert main(["instructions", "export"]) == 0
    out = capsys.readouterr()
    assert out.out == "# Rules\n- imported\n"
    revision = out.err.split("revision ")[1].split()[0]
    assert main(["instructions", "import", str(source), "--base-revision", "stale"]) == 1
    assert "current revision is" in capsys.readouterr().err
    target = tmp_path / "out.md"
    assert main(["instructions", "export", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == "# Rules\n- imported\n"
    assert f"revision {revision}" in capsys.readouterr().err
