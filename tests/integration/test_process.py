"""Process-level tests: the real ``heartbeat serve`` killed, restarted, and doubled on one file.

These start real processes (the service and the fake Ollama from ``tests/fakes``) on loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DEFAULT_MD, free_port

pytestmark = pytest.mark.slow

POST = {"action": "post", "title": "Digest", "content": "Quiet day.", "reasoning": "routine"}
ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def fake_ollama(
    delay: float = 0.0, reply: dict[str, Any] = POST, protocol: str = "ollama"
) -> Iterator[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakes.llm_servers",
            "--protocol",
            protocol,
            "--delay",
            str(delay),
            "--reply-json",
            json.dumps(reply),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("LISTENING "), line
        yield line.split()[1]
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


class Service:
    def __init__(
        self,
        workspace: Path,
        ollama: str,
        port: int | None = None,
        wrap: tuple[str, ...] = (),
        **env: str,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workspace / f"service-{self.port}-{time.monotonic_ns()}.log"
        full_env = {
            **os.environ,
            "HEARTBEAT_WORKSPACE": str(workspace),
            "OLLAMA_HOST": ollama,
            "HEARTBEAT_LLM_PROVIDER": "ollama",
            "LOG_LEVEL": "INFO",
            **env,
        }
        with self.log.open("w") as fh:
            self.proc = subprocess.Popen(
                [*wrap, sys.executable, "-m", "app", "serve", "--port", str(self.port)],
                cwd=ROOT,
                env=full_env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited: {self.log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                token = env.get("HEARTBEAT_API_TOKEN")
                auth = {"Authorization": f"Bearer {token}"} if token else {}
                ready = httpx.get(f"{self.url}/api/heartbeat/status", headers=auth, timeout=1)
                if ready.status_code == 200:
                    return
            time.sleep(0.1)
        self.kill()  # never left behind
        raise AssertionError(f"service did not start: {self.log.read_text()}")

    def post(self, path: str, body: Any = None, timeout: float = 30) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, timeout=timeout)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def kill_child(self) -> None:
        """kill -9 the service run under a wrapper (its only child); the wrapper then exits."""
        pid = self.proc.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        assert len(children) == 1, children
        os.kill(int(children[0]), signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def db_rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def run_now_in_background(
    svc: Service, db: Path, timeout: float = 90
) -> tuple[threading.Thread, list[httpx.Response], str]:
    """Start a run-now in a thread and wait until its row is ``running``. Returns the thread,
    the list its answer lands in (empty if the call failed) and the row's owner."""
    answers: list[httpx.Response] = []

    def call() -> None:
        with contextlib.suppress(httpx.HTTPError):
            answers.append(svc.post("/api/threads/default/heartbeat/run-now", timeout=timeout))

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    deadline = time.monotonic() + 20
    while not (running := db_rows(db, "SELECT owner FROM runs WHERE status='running'")):
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.05)
    return caller, answers, str(running[0][0])


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "HEARTBEAT.md").write_text(DEFAULT_MD, encoding="utf-8")
    return ws


@pytest.mark.timeout(300)
def test_sigkill_mid_run_then_restart(workspace: Path) -> None:
    db = workspace / ".heartbeat" / "heartbeat.db"
    with fake_ollama() as fast:
        svc = Service(workspace, fast)
        try:
            assert (
                svc.post("/api/threads/default/heartbeat/config", {"every": 600}).status_code == 200
            )
            first = svc.post("/api/threads/default/heartbeat/run-now").json()
            assert first["status"] == "ok"
        finally:
            svc.stop()
    next_run = db_rows(db, "SELECT heartbeat_next_run FROM threads WHERE id='default'")[0][0]

    with fake_ollama(delay=60) as slow:
        svc = Service(workspace, slow)

        run_now_in_background(svc, db)
        svc.kill()

        svc = Service(workspace, slow)
        try:
            statuses = db_rows(db, "SELECT id, status, executed_json FROM runs ORDER BY id")
            assert [s[1] for s in statuses] == ["ok", "interrupted"]
            assert statuses[1][2] is None  # the interrupted run claims no action
            posts = db_rows(db, "SELECT title FROM ledger_posts")
            assert posts == [("Digest",)]  # the first run's post, once; the killed one, none
            after = db_rows(db, "SELECT heartbeat_next_run FROM threads WHERE id='default'")[0][0]
            assert after == next_run
            time.sleep(2)  # no burst of runs follows the restart
            assert len(db_rows(db, "SELECT id FROM runs")) == 2
            cfg = httpx.get(f"{svc.url}/api/threads/default/heartbeat/config", timeout=5).json()
            assert cfg["next_run_at"] is not None
        finally:
            svc.stop()


@pytest.mark.timeout(600)
def test_two_processes_on_one_database_never_run_a_slot_twice(workspace: Path) -> None:
    seconds = float(os.environ.get("HEARTBEAT_SOAK_SECONDS", "150"))
    threads = 200
    db = workspace / ".heartbeat" / "heartbeat.db"
    with fake_ollama(reply={"action": "none", "reasoning": "quiet"}) as url:
        env = {"HEARTBEAT_MAX_CONCURRENCY": "8", "LOG_LEVEL": "WARNING"}
        a = Service(workspace, url, **env)
        b = None
        try:
            with httpx.Client(base_url=a.url, timeout=30) as client:
                for i in range(threads):
                    r = client.post(f"/api/threads/t{i:03d}/heartbeat/config", json={"every": 60})
                    assert r.status_code == 200
            b = Service(workspace, url, **env)
            time.sleep(seconds)
        finally:
            a.stop()
            if b is not None:
                b.stop()
    rows = db_rows(
        db,
        "SELECT thread_id, slot, COUNT(*) FROM runs WHERE slot IS NOT NULL"
        " GROUP BY thread_id, slot HAVING COUNT(*) > 1",
    )
    assert rows == []
    per_thread = dict(
        db_rows(
            db,
            "SELECT thread_id, COUNT(*) FROM runs WHERE loop='heartbeat' AND status='ok'"
            " GROUP BY thread_id",
        )
    )
    expected = int(seconds // 60)
    assert len(per_thread) == threads
    assert all(expected - 1 <= n <= expected + 1 for n in per_thread.values()), per_thread
    both = {r[0] for r in db_rows(db, "SELECT DISTINCT owner FROM runs WHERE owner IS NOT NULL")}
    assert len(both) == 2, "both processes should have claimed slots"


def _pid_namespace_works() -> bool:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            [*PID1, "sh", "-c", "echo $$"], capture_output=True, text=True, timeout=10
        )
        return out.returncode == 0 and out.stdout.strip() == "1"
    return False


PID1 = ("unshare", "--pid", "--fork", "--mount-proc", "--kill-child=SIGTERM")


@pytest.mark.timeout(300)
@pytest.mark.skipif(not _pid_namespace_works(), reason="needs unshare of a PID namespace (root)")
def test_sigkill_of_pid_1_then_restart_as_pid_1_interrupts_the_run(workspace: Path) -> None:
    """In a container the service is PID 1 at every start: the restart must still see that
    the killed start's run is dead."""
    db = workspace / ".heartbeat" / "heartbeat.db"
    with fake_ollama(delay=60) as slow:
        svc = Service(workspace, slow, wrap=PID1)

        _, _, owner = run_now_in_background(svc, db)
        assert owner.split(":")[1] == "1"  # owned by PID 1
        svc.kill_child()

        svc = Service(workspace, slow, wrap=PID1)
        try:
            rows = db_rows(db, "SELECT status, reason, finished_at FROM runs ORDER BY id")
            assert [(r[0], r[1]) for r in rows] == [("interrupted", "process_died")]
            assert rows[0][2] is not None
        finally:
            svc.stop()


@pytest.mark.timeout(300)
def test_a_run_outlasting_a_foreign_lock_is_recorded_when_the_lock_frees(workspace: Path) -> None:
    """Another process holds the write lock past the engine's retry window while a run-now is
    in flight: the run waits, logs its waits, and ends ``ok`` with its post once the lock frees."""
    db = workspace / ".heartbeat" / "heartbeat.db"
    with fake_ollama(delay=2) as slow:
        svc = Service(workspace, slow)
        try:
            caller, answers, _ = run_now_in_background(svc, db, timeout=120)
            holder = sqlite3.connect(db, timeout=10, isolation_level=None)
            try:
                holder.execute("BEGIN IMMEDIATE")
                time.sleep(35)  # the engine gives up on one transaction well before this
                assert db_rows(db, "SELECT status FROM runs") == [("running",)]
                holder.execute("COMMIT")
            finally:
                holder.close()
            caller.join(60)
            assert answers and answers[0].status_code == 200, answers
            assert answers[0].json()["status"] == "ok"
            rows = db_rows(db, "SELECT status, finished_at FROM runs")
            assert rows[0][0] == "ok" and rows[0][1] is not None
            assert db_rows(db, "SELECT title FROM ledger_posts") == [("Digest",)]
            logged = svc.log.read_text()
            assert "waits for the database lock to record its ok outcome" in logged
            assert "recorded after the database lock freed" in logged
        finally:
            svc.stop()


@pytest.mark.timeout(300)
def test_secrets_stay_out_of_logs_and_open_endpoints(workspace: Path) -> None:
    """The API token (the event stream's ?token=), the LLM URL's credentials and a webhook's
    URL appear neither in the log nor in /healthz, status or a run's error."""
    token, password = "tok-5ecret-123", "pa55word-xyz"
    auth = {"Authorization": f"Bearer {token}"}
    shown: list[str] = []

    def serve(llm: str, **env: str) -> Service:
        return Service(
            workspace,
            "http://127.0.0.1:9",
            HEARTBEAT_API_TOKEN=token,
            HEARTBEAT_LLM_PROVIDER="openai",
            HEARTBEAT_LLM_BASE_URL=llm.replace("http://", f"http://admin:{password}@") + "/v1",
            **env,
        )

    def call(svc: Service, method: str, path: str, **kw: Any) -> httpx.Response:
        r = httpx.request(method, f"{svc.url}{path}", headers=auth, timeout=60, **kw)
        shown.append(r.text)
        return r

    with fake_ollama(protocol="openai") as llm:
        hook = f"{llm}/hooks/T0/hook-s3cret"  # answers 404: the webhook fails
        svc = serve(llm, HEARTBEAT_CHANNELS=json.dumps({"ops": hook}))
        try:
            url = f"{svc.url}/api/heartbeat/events?token={token}&tokens=0"
            with httpx.stream("GET", url, timeout=10) as stream:
                assert stream.status_code == 200
            health = httpx.get(f"{svc.url}/healthz", timeout=10).text
            status = call(svc, "GET", "/api/heartbeat/status").text
            cfg = {"every": 600, "target": "ops"}
            r = call(svc, "POST", "/api/threads/default/heartbeat/config", json=cfg)
            assert r.status_code == 200, r.text
            ok = call(svc, "POST", "/api/threads/default/heartbeat/run-now").json()
            assert ok["status"] == "ok", ok
            time.sleep(1)  # the webhook's failure is logged after the run
        finally:
            svc.stop()
    logged = svc.log.read_text()
    svc = serve(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    try:
        failed = call(svc, "POST", "/api/threads/default/heartbeat/run-now").json()
    finally:
        svc.stop()
    logged += svc.log.read_text()
    assert "/api/heartbeat/events?token=***" in logged  # the access log line, redacted
    assert "channel webhook at 127.0.0.1 failed" in logged
    assert failed["status"] == "failed" and "***@127.0.0.1" in failed["error"], failed
    assert "***@127.0.0.1" in health and "***@127.0.0.1" in status
    for text in (health, *shown, logged):
        assert token not in text and password not in text and "hook-s3cret" not in text
