"""The real ``heartbeat serve`` end to end, against an instant fake Ollama.

    python bench/service.py [--quick] [--threads 10000] [--concurrency 8] [--window SECONDS]
                            [--database-url postgresql://127.0.0.1:5432/test]

1. Starts the fake Ollama of ``tests/fakes/llm_servers.py`` (``python -m tests.fakes.llm_servers
   --protocol ollama``: real HTTP on loopback, NDJSON streaming, answers every chat at once
   with ``{"action": "none", ...}``; ``/api/version`` and ``/api/tags`` answer too).
2. Starts ``heartbeat serve`` as a subprocess with ``HEARTBEAT_LLM_PROVIDER=ollama`` pointed at
   it, a temporary workspace holding a HEARTBEAT.md, its own database, default logging (INFO,
   to a file) and ``HEARTBEAT_MAX_CONCURRENCY`` as given.
3. Seeds 100 Ledger posts, then creates the threads through the API
   (``POST /api/threads/{id}/heartbeat/config`` with ``every_seconds=60`` and skipping off, so
   every beat calls the model), paced evenly over one minute: a thread's first run comes one
   interval after its config, so the runs are then spread evenly over every minute (threads/60
   runs/s of demand).
4. From the moment the last config is in, measures for a bounded window: runs finished per second
   (``runs.finished_at`` in the window, read with sqlite3 read-only), the service process's CPU
   per finished run (psutil), schedule lateness (slot → run row), and the latency of
   ``GET /api/heartbeat/status`` and ``GET /api/ledger/posts`` sampled at a steady rate.

With ``--database-url`` the service stores everything in PostgreSQL (``HEARTBEAT_DATABASE_URL``),
in a fresh schema of that database dropped afterwards; the runs are read there with psycopg.
Everything is bounded in time; figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil
from common import (
    REPO,
    lateness,
    machine,
    machine_busy_seconds,
    md_table,
    ms,
    percentile,
    progress,
    warn_if_busy,
)

HEARTBEAT_MD = """# Heartbeat

## Checklist
- [ ] Scan the Ledger for new posts
- [x] Check open contradictions

## Rules
If nothing needs doing, reply HEARTBEAT_OK.

## Proactive Behaviors
- Vote up questions from the user
"""
DECISION = {"action": "none", "reasoning": "bench: nothing needs doing"}
EVERY = 60
SAMPLE_HZ = 4.0  # per sampled endpoint
SAMPLED = ("/api/heartbeat/status", "/api/ledger/posts")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_line(path: Path, prefix: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    """Poll ``path`` until a line starts with ``prefix``; fail if ``proc`` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            for text in path.read_text(errors="replace").splitlines():
                if text.startswith(prefix):
                    return text
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}; see {path}")
        time.sleep(0.05)
    raise TimeoutError(f"no {prefix!r} line in {path} within {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes], name: str, grace: float) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        progress(f"{name} did not stop within {grace:.0f} s of SIGTERM; killing it")
        proc.kill()
        proc.wait()


def heartbeat_command() -> list[str]:
    script = Path(sys.executable).parent / "heartbeat"
    return [str(script)] if script.exists() else [sys.executable, "-m", "app"]


def start_fake_ollama(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The instant fake Ollama in its own process, output to ``log``; returns it and its URL."""
    with open(log, "wb") as out:
        fake = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fakes.llm_servers",
                "--protocol",
                "ollama",
                "--port",
                "0",
                "--reply-json",
                json.dumps(DECISION),
            ],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return fake, wait_for_line(log, "LISTENING ", fake, 20).split()[1]


def serve_env(
    ollama: str, *, workspace: Path, db: Path, database_url: str | None, concurrency: int
) -> dict[str, str]:
    """The environment of a ``heartbeat serve`` on the fake Ollama, logging INFO."""
    env = {
        **os.environ,
        "HEARTBEAT_LLM_PROVIDER": "ollama",
        "OLLAMA_HOST": ollama,
        "HEARTBEAT_WORKSPACE": str(workspace),
        "HEARTBEAT_DB": str(db),
        **({"HEARTBEAT_DATABASE_URL": database_url} if database_url else {}),
        "HEARTBEAT_MAX_CONCURRENCY": str(concurrency),
        "LOG_LEVEL": "INFO",
    }
    env.pop("HEARTBEAT_API_TOKEN", None)
    if not database_url:
        env.pop("HEARTBEAT_DATABASE_URL", None)
    return env


def start_serve(port: int, *, cwd: Path, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``heartbeat serve`` on ``port`` as a process of its own, its output to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [*heartbeat_command(), "serve", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


class Sampler:
    """GETs one path at a fixed rate, open loop: a request starts on every tick whether or not
    the previous ones have answered (so a slow answer cannot hide the ones it delays); at most
    ``cap`` in flight. Requests still unanswered ``grace`` s after the window count as timeouts."""

    def __init__(self, client: httpx.AsyncClient, path: str, hz: float, cap: int = 32) -> None:
        self.client, self.path, self.period, self.cap = client, path, 1.0 / hz, cap
        self.latency: list[float] = []
        self.errors: Counter[str] = Counter()

    async def _one(self) -> None:
        started = time.perf_counter()
        try:
            answer = await self.client.get(self.path)
            if answer.status_code != 200:
                self.errors[f"HTTP {answer.status_code}"] += 1
        except httpx.HTTPError as exc:
            self.errors[type(exc).__name__] += 1
        self.latency.append(time.perf_counter() - started)

    async def run(self, until: float, grace: float = 10.0) -> None:
        tasks: set[asyncio.Task[None]] = set()
        tick = time.monotonic()
        while tick < until:
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
            tasks = {t for t in tasks if not t.done()}
            if len(tasks) >= self.cap:
                self.errors[f"not sent: {self.cap} requests already in flight"] += 1
            else:
                tasks.add(asyncio.create_task(self._one()))
            tick += self.period
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
                self.errors[f"no answer within {grace:.0f} s of the window's end"] += 1


class ServiceBench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.workspace = tmp / "workspace"
        self.workspace.mkdir()
        (self.workspace / "HEARTBEAT.md").write_text(HEARTBEAT_MD, encoding="utf-8")
        self.db = tmp / "heartbeat.db"
        self.schema = f"bench_{os.getpid()}"
        self.database_url = (
            _in_schema(args.database_url, self.schema) if args.database_url else None
        )
        self.where: Path | str = self.database_url or self.db
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.fake_log = tmp / "fake-ollama.log"
        self.service_log = tmp / "heartbeat.log"
        self.fake: subprocess.Popen[bytes] | None = None
        self.service: subprocess.Popen[bytes] | None = None
        self.result: dict[str, Any] = {}

    # -- processes --------------------------------------------------------------------------
    def start(self) -> None:
        self.fake, url = start_fake_ollama(self.fake_log)
        progress(f"fake Ollama listening on {url} (pid {self.fake.pid})")
        self.service = start_serve(
            self.port,
            cwd=self.tmp,
            log=self.service_log,
            env=serve_env(
                url,
                workspace=self.workspace,
                db=self.db,
                database_url=self.database_url,
                concurrency=self.args.concurrency,
            ),
        )
        progress(f"started {' '.join(heartbeat_command())} serve (pid {self.service.pid})")

    def close(self) -> None:
        if self.service is not None:
            stop(self.service, "heartbeat serve", 30)
        if self.fake is not None:
            stop(self.fake, "fake Ollama", 10)

    # -- the run ----------------------------------------------------------------------------
    async def run(self) -> None:
        assert self.service is not None and self.fake is not None
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        async with httpx.AsyncClient(base_url=self.base, timeout=30.0, limits=limits) as client:
            await self._wait_healthy(client)
            await self._seed_posts(client)
            await self._create_threads(client)
            await self._window(client)

    async def _wait_healthy(self, client: httpx.AsyncClient) -> None:
        assert self.service is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.service.poll() is not None:
                raise RuntimeError(f"heartbeat serve exited; see {self.service_log}")
            try:
                answer = await client.get("/healthz")
                if answer.status_code == 200:
                    llm = answer.json().get("llm", {})
                    progress(
                        f"service healthy: {answer.json().get('status')}, LLM reachable="
                        f"{llm.get('reachable')}, model present={llm.get('model_present')}"
                    )
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
        raise TimeoutError("heartbeat serve did not answer /healthz within 30 s")

    async def _seed_posts(self, client: httpx.AsyncClient) -> None:
        for i in range(100):
            answer = await client.post(
                "/api/ledger/posts",
                json={"title": f"bench post {i}", "content": f"Something to read, number {i}."},
            )
            answer.raise_for_status()
        progress("seeded 100 Ledger posts")

    async def _create_threads(self, client: httpx.AsyncClient) -> None:
        """POST every thread's config, paced evenly over one interval; bounded to 2 intervals."""
        n = self.args.threads
        pace = EVERY / n
        started = time.monotonic()
        give_up = started + 2 * EVERY
        latencies: list[float] = []
        failures: Counter[str] = Counter()
        gate = asyncio.Semaphore(32)
        done = 0

        async def one(i: int) -> None:
            nonlocal done
            async with gate:
                if time.monotonic() > give_up:
                    failures["not sent: creation bound reached"] += 1
                    return
                t = time.perf_counter()
                try:
                    # every beat calls the model, as the figures measure (none would skip)
                    answer = await client.post(
                        f"/api/threads/b{i:06d}/heartbeat/config",
                        json={"every_seconds": EVERY, "skip_unchanged": False},
                    )
                    if answer.status_code != 200:
                        failures[f"HTTP {answer.status_code}"] += 1
                except httpx.HTTPError as exc:
                    failures[type(exc).__name__] += 1
                latencies.append(time.perf_counter() - t)
                done += 1

        async def report() -> None:
            while True:
                await asyncio.sleep(10)
                progress(f"created {done:,} of {n:,} thread configs")

        reporter = asyncio.create_task(report())
        async with asyncio.TaskGroup() as tg:
            for i in range(n):
                await asyncio.sleep(max(0.0, started + i * pace - time.monotonic()))
                tg.create_task(one(i))
        reporter.cancel()
        elapsed = time.monotonic() - started
        progress(
            f"created {done:,} thread configs in {elapsed:.1f} s (target {EVERY} s); "
            f"POST p99 {ms(percentile(latencies, 99))}"
            + (f"; failures {dict(failures)}" if failures else "")
        )
        self.result["create"] = {
            "elapsed_s": elapsed,
            "done": done,
            "p50_s": percentile(latencies, 50),
            "p99_s": percentile(latencies, 99),
            "max_s": max(latencies, default=math.nan),
            "failures": dict(failures),
        }

    async def _window(self, client: httpx.AsyncClient) -> None:
        assert self.service is not None and self.fake is not None
        window = self.args.window or (30.0 if self.args.quick else 120.0)
        svc, fake = psutil.Process(self.service.pid), psutil.Process(self.fake.pid)
        me = psutil.Process()
        svc_cpu0, fake_cpu0, my_cpu0 = _cpu(svc), _cpu(fake), _cpu(me)
        busy0 = machine_busy_seconds()
        ctx0 = svc.num_ctx_switches()
        begin_wall, begin = time.time(), time.monotonic()
        progress(f"measuring for {window:.0f} s")
        samplers = [Sampler(client, path, SAMPLE_HZ) for path in SAMPLED]

        async def report() -> None:
            while True:
                await asyncio.sleep(10)
                progress(
                    f"window {time.monotonic() - begin:.0f} s: {_count_runs(self.where):,} runs"
                )

        reporter = asyncio.create_task(report())
        sampling = asyncio.gather(*(s.run(begin + window) for s in samplers))
        await asyncio.sleep(max(0.0, begin + window - time.monotonic()))
        reporter.cancel()
        end_wall = time.time()
        svc_cpu = _cpu(svc) - svc_cpu0
        fake_cpu = _cpu(fake) - fake_cpu0
        my_cpu = _cpu(me) - my_cpu0
        others = machine_busy_seconds() - busy0 - svc_cpu - fake_cpu - my_cpu
        ctx = svc.num_ctx_switches()
        await sampling  # requests still out get a bounded grace period
        status = (await client.get("/api/heartbeat/status")).json()
        self.result["window"] = {
            "seconds": end_wall - begin_wall,
            "service_cpu_s": svc_cpu,
            "fake_cpu_s": fake_cpu,
            "client_cpu_s": my_cpu,
            "others_cpu_s": max(0.0, others),
            "service_rss": svc.memory_info().rss,
            "ctx": (ctx.voluntary - ctx0.voluntary, ctx.involuntary - ctx0.involuntary),
            "status": {
                k: status.get(k) for k in ("armed_threads", "queue_depth", "max_concurrency")
            }
            | {"in_flight": len(status.get("in_flight") or {})},
            "sampled": {
                s.path: {**lateness(s.latency), "errors": dict(s.errors)} for s in samplers
            },
            "runs": _runs_between(self.where, begin_wall, end_wall),
        }

    # -- report -----------------------------------------------------------------------------
    def report(self) -> str:
        n, w, c = self.args.threads, self.result["window"], self.result["create"]
        runs = w["runs"]
        finished = runs["finished"]
        per_run = w["service_cpu_s"] / finished if finished else math.nan
        statuses = ", ".join(f"{k} {v:,}" for k, v in sorted(runs["by_status"].items())) or "none"
        rows: list[list[object]] = [
            ["threads (every 60 s)", f"{n:,} ({c['done']:,} configs created)"],
            ["demand", f"{n / EVERY:,.1f} runs/s"],
            ["window", f"{w['seconds']:.0f} s, from the last config on"],
            ["runs finished in the window", f"{finished:,} ({statuses})"],
            ["end-to-end throughput", f"{finished / w['seconds']:,.1f} runs/s"],
            ["service CPU per finished run", ms(per_run, 2)],
            ["service CPU (share of a core)", f"{w['service_cpu_s'] / w['seconds'] * 100:.0f} %"],
            ["fake Ollama CPU (share of a core)", f"{w['fake_cpu_s'] / w['seconds'] * 100:.0f} %"],
            [
                "bench client CPU / other processes' load (cores)",
                f"{w['client_cpu_s'] / w['seconds']:.2f} / {w['others_cpu_s'] / w['seconds']:.2f}",
            ],
            ["service context switches (vol + invol)", f"{w['ctx'][0]:,} + {w['ctx'][1]:,}"],
            ["service RSS at the end", f"{w['service_rss'] / 2**20:,.0f} MiB"],
            [
                "schedule lateness, slot → run row (p50 / p99 / max)",
                " / ".join(ms(runs["late"][k]) for k in ("p50_s", "p99_s", "max_s")),
            ],
            [
                "slot → finished (p50 / p99 / max)",
                " / ".join(ms(runs["done"][k]) for k in ("p50_s", "p99_s", "max_s")),
            ],
            ["status at the end", json.dumps(w["status"])],
            [
                "POST …/heartbeat/config during creation (p50 / p99 / max)",
                " / ".join(ms(c[k]) for k in ("p50_s", "p99_s", "max_s"))
                + (f"; failures {c['failures']}" if c["failures"] else ""),
            ],
        ]
        for path, s in w["sampled"].items():
            rows.append(
                [
                    f"GET {path} (p50 / p99 / max, {s['count']} samples)",
                    " / ".join(ms(s[k]) for k in ("p50_s", "p99_s", "max_s"))
                    + (f"; errors {s['errors']}" if s["errors"] else ""),
                ]
            )
        notes = []
        for (status, reason, error), count in runs["problems"].most_common(8):
            notes.append(f"- {count:,} x {status} ({reason}): {error}")
        parts = [
            "## Service benchmark" + (" (--quick)" if self.args.quick else ""),
            "",
            f"Machine: {machine()}.",
            f"`heartbeat serve`, HEARTBEAT_MAX_CONCURRENCY={self.args.concurrency}, LOG_LEVEL=INFO "
            "(to a file), instant fake Ollama (tests/fakes/llm_servers.py) in its own process; "
            "the bench client shares the machine.",
            "",
            md_table(["measure", "value"], rows),
        ]
        if notes:
            parts += ["", "Runs other than ok in the window (status, reason: error):", *notes]
        return "\n".join(parts)


def summarize_errors(log: Path) -> Counter[str]:
    """ERROR lines grouped by message (timestamp dropped, digits masked), plus the exception
    line that ends each traceback."""
    kinds: Counter[str] = Counter()
    lines = log.read_text(errors="replace").splitlines()
    for i, text in enumerate(lines):
        if " ERROR " not in text:
            continue
        message = re.sub(r"\d+", "N", text.split(" ERROR ", 1)[1])[:160]
        cause = ""
        for follow in lines[i + 1 : i + 80]:
            if re.match(r"\d{4}-\d\d-\d\d ", follow):
                break
            if follow and not follow.startswith((" ", "Traceback", "During", "The above")):
                cause = follow.strip()[:160]
        kinds[message + (f" — {cause}" if cause else "")] += 1
    return kinds


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _connect_ro(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def _in_schema(url: str, schema: str) -> str:
    """``url`` working in a new schema ``schema`` (created here; see ``_drop_schema``)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    options = urllib.parse.quote(f"-c search_path={schema}")
    if "options=" in url:  # the URL's own options are kept after the search path
        return url.replace("options=", f"options={options}%20", 1)
    return f"{url}{'&' if '?' in url else '?'}options={options}"


def _drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _query(where: Path | str, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """Rows from the service's database: the SQLite file read-only, or PostgreSQL."""
    if isinstance(where, str):
        import psycopg

        with psycopg.connect(where, cursor_factory=psycopg.ClientCursor) as pg:
            return pg.execute(sql.replace("?", "%s"), params).fetchall()
    conn = _connect_ro(where)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _count_runs(where: Path | str) -> int:
    return int(_query(where, "SELECT COUNT(*) FROM runs")[0][0])


def owner_pid(owner: str | None) -> int | None:
    """The process id in a run's ``owner`` (``host:pid:start``)."""
    parts = (owner or "").split(":")
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


def _runs_between(
    where: Path | str, begin: float, end: float, names: dict[int, str] | None = None
) -> dict[str, Any]:
    """The heartbeat runs finished in [begin, end); with ``names`` (process id → name), how
    many each of those processes finished (``by_owner``)."""
    rows = _query(
        where,
        "SELECT status, reason, error, slot, started_at, finished_at, owner FROM runs"
        " WHERE loop = 'heartbeat' AND finished_at >= ? AND finished_at < ?",
        (begin, end),
    )
    by_status: Counter[str] = Counter()
    by_owner: Counter[str] = Counter()
    problems: Counter[tuple[str, str, str]] = Counter()
    late, done = [], []
    finished = 0
    for status, reason, error, slot, started, ended, owner in rows:
        by_status[status] += 1
        if status == "skipped":
            problems[(status, reason or "", error or "")] += 1
            continue
        finished += 1
        if names and (pid := owner_pid(owner)) in names:
            by_owner[names[pid]] += 1
        if status not in ("ok", "dry_run"):
            problems[(status, reason or "", (error or "")[:160])] += 1
        if slot is not None:
            late.append(started - slot)
            done.append(ended - slot)
    return {
        "finished": finished,
        "by_status": dict(by_status),
        "by_owner": dict(by_owner),
        "problems": problems,
        "late": lateness(late),
        "done": lateness(done),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 30 s window instead of 120 s")
    parser.add_argument("--threads", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8, help="HEARTBEAT_MAX_CONCURRENCY")
    parser.add_argument("--window", type=float, default=0.0, help="override the window (s)")
    parser.add_argument("--database-url", default="", help="PostgreSQL instead of SQLite")
    args = parser.parse_args()
    progress(f"machine: {machine()}")
    warn_if_busy()
    with tempfile.TemporaryDirectory(prefix="hb-bench-service-") as tmp:
        bench = ServiceBench(args, Path(tmp))
        try:
            bench.start()
            asyncio.run(bench.run())
        except BaseException:
            if bench.service_log.exists():
                tail = bench.service_log.read_text(errors="replace").splitlines()[-20:]
                print("\n".join(["--- heartbeat serve log (tail) ---", *tail]), file=sys.stderr)
            raise
        finally:
            bench.close()
            if args.database_url:
                _drop_schema(args.database_url, bench.schema)
        kept = REPO / "bench" / "results" / f"service-{time.strftime('%Y%m%d-%H%M%S')}.log"
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bench.service_log, kept)
        log_errors = summarize_errors(bench.service_log)
        progress(f"service log kept at {kept.relative_to(REPO)}")
    report = bench.report()
    if log_errors:
        report += "\n\nERROR lines in the service log (digits masked), by kind:\n" + "\n".join(
            f"- {count:,} x {text}" for text, count in log_errors.most_common(6)
        )
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
