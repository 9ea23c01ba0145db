"""Live events under load: delivery delay of ``run_finished`` and run throughput vs subscribers.

    python bench/sse.py [--quick] [--duration 10] [--workers 8] [--subscribers 0,100,1000]

For each subscriber count, a fresh server process runs the real app under uvicorn on loopback
(its own database, an instant in-process fake LLM, the scheduler off), then this process:

1. opens that many SSE subscribers on ``/api/heartbeat/events`` as raw asyncio sockets (cheap
   enough for a thousand) and waits until every one has its ``: connected`` greeting;
2. drives ``POST /api/threads/{id}/heartbeat/run-now`` from ``--workers`` concurrent loops, one
   thread each, for ``--duration`` seconds;
3. waits one second for stragglers, then reports runs/s, the delay from each run's
   ``finished_at`` to each subscriber's receipt of its ``run_finished`` event (p50/p99/max over
   every (subscriber, run) pair), the share of events delivered, the subscribers cut off as
   too slow, and the server process's CPU share.

The server and this client are separate processes, so each has its own core on a two-core
machine. ``finished_at`` has millisecond resolution: delays are overstated by up to 1 ms.
Everything is bounded in time; figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import msgspec  # noqa: E402
import psutil  # noqa: E402

HEARTBEAT_MD = "# Heartbeat\n\n## Checklist\n- [ ] Scan the Ledger for new posts\n"
REPLY = json.dumps({"action": "none", "reasoning": "bench: nothing needs doing"})
FINISHED = re.compile(rb"event: run_finished\ndata: ([^\n]*)\n\n")
TOO_SLOW = b"event: error\n"


# -- the server process ------------------------------------------------------------------------
class InstantLLM:
    """An LLMProvider that answers every chat at once, in one token."""

    name = "instant"
    base_url = "memory://instant"

    async def chat(self, req: Any, *, on_token: Any = None, deadline: float | None = None) -> Any:
        from loops.llm import ChatResult

        if on_token is not None:
            on_token(REPLY)
        return ChatResult(
            text=REPLY,
            model=req.model,
            done_reason="stop",
            prompt_tokens=1,
            completion_tokens=1,
            load_ms=0.0,
            total_ms=0.0,
            attempts=1,
        )

    async def health(self, model: str) -> Any:
        from loops.llm import Health

        return Health(self.name, self.base_url, True, "instant", model, True, None)

    async def aclose(self) -> None:
        return None


def serve(workspace: Path, db: Path, port: int) -> None:
    import uvicorn

    from app.main import create_app
    from app.settings import Settings
    from app.sse import Server

    settings = Settings.for_workspace(workspace, db_path=db)
    app = create_app(settings, llm=InstantLLM(), start_loops=False)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2
    )
    Server(config).run()  # the server `heartbeat serve` uses


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(workspace: Path, db: Path) -> tuple[subprocess.Popen[Any], int]:
    port = free_port()
    cmd = [sys.executable, __file__, "--serve", json.dumps([str(workspace), str(db), port])]
    proc = subprocess.Popen(cmd, cwd=REPO)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc, port
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the server did not start within 20 s")


# -- subscribers --------------------------------------------------------------------------------
class Finished(msgspec.Struct):
    run_id: int
    finished_at: str


_decode_finished = msgspec.json.Decoder(Finished)
_finish_times: dict[str, float] = {}


def finished_ts(iso: str) -> float:
    ts = _finish_times.get(iso)
    if ts is None:
        ts = _finish_times[iso] = datetime.fromisoformat(iso).timestamp()
    return ts


@dataclass
class Subscriber:
    port: int
    delays: dict[int, float] = field(default_factory=dict)  # run id -> receipt delay
    cut_off: bool = False
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    writer: asyncio.StreamWriter | None = None

    async def run(self) -> None:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(
            b"GET /api/heartbeat/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream"
            b"\r\n\r\n"
        )
        buf = b""
        while True:
            data = await reader.read(1 << 16)
            if not data:
                return
            now = time.time()
            buf += data
            if not self.connected.is_set() and b": connected" in buf:
                self.connected.set()
            end = 0
            for match in FINISHED.finditer(buf):
                run = _decode_finished.decode(match.group(1))
                if run.run_id not in self.delays:
                    self.delays[run.run_id] = now - finished_ts(run.finished_at)
                end = match.end()
            if TOO_SLOW in buf:
                self.cut_off = True
            # what follows the last blank line is an incomplete frame; the rest is done with
            done = max(end, buf.rfind(b"\n\n") + 2)
            if done > 1:
                buf = buf[done:]

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()


# -- one phase ------------------------------------------------------------------------------
@dataclass
class Phase:
    subscribers: int
    runs: int
    seconds: float
    delays: list[float]
    delivered: float
    cut_off: int
    server_cpu: float
    client_cpu: float
    errors: int

    @property
    def rate(self) -> float:
        return self.runs / self.seconds


async def drive(base: str, workers: int, duration: float) -> tuple[list[int], float, int]:
    """``workers`` loops of run-now, one thread each, for ``duration`` seconds."""
    ids: list[int] = []
    errors = 0
    limits = httpx.Limits(max_connections=workers + 2)
    async with httpx.AsyncClient(base_url=base, timeout=30.0, limits=limits) as client:
        for i in range(workers):
            r = await client.post("/api/threads", json={"thread_id": f"bench-{i}"})
            r.raise_for_status()
        await client.post("/api/threads/bench-0/heartbeat/run-now")  # warm up

        async def loop(tid: str, stop: float) -> None:
            nonlocal errors
            while time.monotonic() < stop:
                r = await client.post(f"/api/threads/{tid}/heartbeat/run-now")
                if r.status_code == 200:
                    ids.append(r.json()["run_id"])
                else:
                    errors += 1

        t0 = time.monotonic()
        stop = t0 + duration
        async with asyncio.TaskGroup() as tg:
            for i in range(workers):
                tg.create_task(loop(f"bench-{i}", stop))
        return ids, time.monotonic() - t0, errors


async def phase(port: int, proc: psutil.Process, count: int, args: argparse.Namespace) -> Phase:
    subs = [Subscriber(port) for _ in range(count)]
    tasks = [asyncio.create_task(s.run()) for s in subs]
    try:
        async with asyncio.timeout(60):
            for i in range(0, count, 100):  # connect in waves, not as one herd
                await asyncio.gather(*(s.connected.wait() for s in subs[i : i + 100]))
        cpu0, mine0 = proc.cpu_times(), psutil.Process().cpu_times()
        t0 = time.monotonic()
        ids, seconds, errors = await drive(f"http://127.0.0.1:{port}", args.workers, args.duration)
        await asyncio.sleep(1.0)  # stragglers
        cpu1, mine1 = proc.cpu_times(), psutil.Process().cpu_times()
        wall = time.monotonic() - t0
        cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall
        client_cpu = (mine1.user + mine1.system - mine0.user - mine0.system) / wall
    finally:
        for s in subs:
            s.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.5)  # let the server see the disconnects before it is stopped
    wanted = set(ids)
    delays = [d for s in subs for run_id, d in s.delays.items() if run_id in wanted]
    return Phase(
        subscribers=count,
        runs=len(ids),
        seconds=seconds,
        delays=delays,
        delivered=len(delays) / (len(wanted) * count) if count and wanted else 1.0,
        cut_off=sum(s.cut_off for s in subs),
        server_cpu=cpu,
        client_cpu=client_cpu,
        errors=errors,
    )


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def table(results: list[Phase]) -> str:
    base = results[0].rate if results and results[0].subscribers == 0 else None
    head = (
        "| subscribers | runs | runs/s | vs 0 subs | delivered | p50 ms | p99 ms | max ms |"
        " cut off | server CPU | client CPU |"
    )
    lines = [head, "|" + "---|" * 11]
    for p in results:
        ratio = f"{p.rate / base:.2f}" if base else "—"
        if p.subscribers:
            d = f"{pct(p.delays, 50) * 1000:.1f} | {pct(p.delays, 99) * 1000:.1f} | "
            d += f"{max(p.delays, default=float('nan')) * 1000:.1f}"
        else:
            d = "— | — | —"
        lines.append(
            f"| {p.subscribers} | {p.runs} | {p.rate:.1f} | {ratio} | {p.delivered:.1%} | {d}"
            f" | {p.cut_off} | {p.server_cpu:.0%} | {p.client_cpu:.0%} |"
        )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    counts = [int(n) for n in args.subscribers.split(",")]
    results: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="hb-bench-sse-") as tmp:
        workspace = Path(tmp)
        (workspace / "HEARTBEAT.md").write_text(HEARTBEAT_MD, encoding="utf-8")
        for count in counts:
            server, port = start_server(workspace, workspace / f"db-{count}.sqlite")
            try:
                print(f"phase: {count} subscribers, {args.duration:g} s ...", file=sys.stderr)
                result = await phase(port, psutil.Process(server.pid), count, args)
                results.append(result)
                if result.errors:
                    print(f"  {result.errors} run-now calls failed", file=sys.stderr)
            finally:
                server.terminate()
                server.wait(10)
    print()
    print(
        f"SSE bench: {args.workers} run-now workers, {args.duration:g} s per phase, "
        f"instant fake LLM; {platform.python_version()} on {os.cpu_count()} CPU(s)"
    )
    print(table(results))
    print(
        "\ndelay = subscriber receipt of run_finished - the run's finished_at; "
        "delivered = run_finished events received / (runs x subscribers)"
    )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s phases: a smoke run")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--workers", type=int, default=8, help="concurrent run-now loops")
    parser.add_argument("--subscribers", default="0,100,1000", help="comma-separated counts")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.duration = min(args.duration, 2.0)
    return args


if __name__ == "__main__":
    arguments = parse()
    if arguments.serve:
        ws, db, port = json.loads(arguments.serve)
        serve(Path(ws), Path(db), int(port))
    else:
        asyncio.run(main(arguments))
