"""Live events under load: delivery delay of ``run_finished`` and run throughput vs subscribers.

    python bench/sse.py [--quick] [--duration 10] [--workers 8] [--subscribers 0,100,1000]
                        [--tokens 1] [--sub-procs 1] [--rounds 3] [--rate 50]
                        [--paced-duration 5] [--pin]

For each subscriber count, a fresh server process runs the real app under ``app.sse.Server`` (the
server ``heartbeat serve`` uses) on loopback, with its own database, an instant in-process fake
LLM (one token per reply, so each run publishes ``run_started``, ``token``, ``decision`` and
``run_finished``) and the scheduler off. Then:

1. ``--sub-procs`` subscriber processes (one by default) open that many event streams between
   them (``GET /api/heartbeat/events``, with ``?tokens=0`` when ``--tokens 0``). They are not
   HTTP or SSE clients: each is one ``epoll`` loop over plain non-blocking sockets that only
   reads, stamps each read with ``time.time()`` and scans the completed part of the stream for
   the ``id:`` line that opens every ``run_finished`` event (and for an ``error`` event). Every
   stream has sent its ``: connected`` greeting before the phase starts.
2. This process drives ``POST /api/threads/{id}/heartbeat/run-now`` from ``--workers``
   concurrent loops, one thread each, over keep-alive connections written and parsed by hand
   (no HTTP library), keeping each run's id and ``finished_at``: first flat out for
   ``--duration`` seconds (the throughput, and the delay of a saturated server), then paced at
   ``--rate`` runs/s in all for ``--paced-duration`` seconds (the delivery delay at a load the
   server has room for: under saturation every delay is mostly queueing).
3. After one second for stragglers, the subscriber processes are given every run's
   ``finished_at`` and report histograms (0.1 ms bins, one per part) of receipt minus
   ``finished_at`` for each (subscriber, run) pair, how many events arrived and how many streams
   were cut off as too slow.

Reported, one row a phase: runs/s flat out and its ratio to the phase without subscribers of the
same round, delay p50/p99/max at the paced rate and p99 flat out, the share of ``run_finished``
events delivered, streams cut off, the CPU shares (of one core) of the server, the driver (this
process) and the subscriber processes together, and the cores the whole machine kept busy
meanwhile (including any other work on it); then, over the rounds, the median and range of each.
``--rounds`` repeats the whole sequence, each phase on a fresh server; a round's phases run back
to back, so that drift in other load on the machine touches them alike. Everything shares one
machine: on two cores the subscriber processes take CPU the server could otherwise use.
With ``--pin`` the server process is bound to the first CPU and every client process (the
driver and the subscribers) to the others, so the load generators never take the server's core.
``finished_at`` has millisecond resolution, so delays are overstated by up to 1 ms. Everything
is bounded in time; figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import machine_busy_seconds  # noqa: E402

HEARTBEAT_MD = "# Heartbeat\n\n## Checklist\n- [ ] Scan the Ledger for new posts\n"
REPLY = json.dumps({"action": "none", "reasoning": "bench: nothing needs doing"})
RUN_ID = re.compile(rb"\nid: (\d+)\n")  # only run_finished events carry an id
TOO_SLOW = b"event: error\n"
GREETING = b": connected\n"
BIN = 10_000  # histogram bins per second (0.1 ms)


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


def split_cpus() -> tuple[list[int], list[int]]:
    """For ``--pin``: the server's CPU (the first this process may use) and the clients' CPUs."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit(f"--pin needs at least two usable CPUs, this process may use {cpus}")
    return cpus[:1], cpus[1:]


def serve(workspace: Path, db: Path, port: int, cpus: list[int]) -> None:
    import uvicorn

    from app.main import create_app
    from app.settings import Settings
    from app.sse import Server

    if cpus:
        os.sched_setaffinity(0, cpus)
    settings = Settings.for_workspace(workspace, db_path=db)
    app = create_app(settings, llm=InstantLLM(), start_loops=False)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2
    )
    Server(config).run()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(workspace: Path, db: Path, cpus: list[int]) -> tuple[subprocess.Popen[bytes], int]:
    import httpx

    port = free_port()
    spec = json.dumps([str(workspace), str(db), port, cpus])
    cmd = [sys.executable, __file__, "--serve", spec]
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


# -- a subscriber process -----------------------------------------------------------------------
def subscribe_main(port: int, count: int, query: str) -> None:
    """Hold ``count`` streams; say READY once all are greeted; on STOP report delays."""
    request = (
        f"GET /api/heartbeat/events{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()
    socks: dict[int, socket.socket] = {}
    tails: dict[int, bytes] = {}
    index: dict[int, int] = {}  # fd -> subscriber number
    greeted: set[int] = set()
    cut_off: set[int] = set()
    ended: set[int] = set()
    run_ids, times, subs = array("q"), array("d"), array("l")
    poller = select.epoll()
    for n in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(request)
        s.setblocking(False)
        fd = s.fileno()
        socks[fd], tails[fd], index[fd] = s, b"", n
        poller.register(fd, select.EPOLLIN)
    stdin = sys.stdin.buffer
    poller.register(stdin.fileno(), select.EPOLLIN)
    ready_sent = False
    command = b""
    while True:
        for fd, _ in poller.poll(0.1):
            if fd == stdin.fileno():
                command += os.read(fd, 1 << 20)
                continue
            try:
                data = socks[fd].recv(1 << 18)
            except BlockingIOError:
                continue
            now = time.time()
            if not data:
                poller.unregister(fd)
                ended.add(index[fd])
                continue
            buf = tails[fd] + data
            cut = buf.rfind(b"\n\n") + 2
            if cut < 2 or (cut == 2 and buf[:1] == b"\n"):  # no event completed yet
                tails[fd] = buf
                continue
            done, tails[fd] = buf[: cut - 1], buf[cut - 1 :]  # the tail keeps its "\n"
            n = index[fd]
            for match in RUN_ID.finditer(done):
                run_ids.append(int(match.group(1)))
                times.append(now)
                subs.append(n)
            if n not in greeted and GREETING in done:
                greeted.add(n)
            if TOO_SLOW in done:
                cut_off.add(n)
        if not ready_sent and len(greeted) == count:
            print("READY", flush=True)
            ready_sent = True
        if command.endswith(b"\n") and command.startswith(b"STOP "):
            break
    finished = {int(k): v for k, v in json.loads(command[5:]).items()}  # id -> [at, part]
    hists: dict[str, Counter[int]] = {}
    for run_id, at in zip(run_ids, times, strict=True):
        ts = finished.get(run_id)
        if ts is not None:
            hists.setdefault(ts[1], Counter())[round((at - ts[0]) * BIN)] += 1
    result = {"hists": hists, "cut_off": len(cut_off), "ended": len(ended - cut_off)}
    print("RESULT " + json.dumps(result), flush=True)
    for s in socks.values():
        s.close()


class Subscribers:
    """The subscriber processes of one phase."""

    def __init__(self, port: int, count: int, procs: int, tokens: bool) -> None:
        query = "" if tokens else "?tokens=0"
        shares = [count // procs + (i < count % procs) for i in range(procs)]
        self.children: list[subprocess.Popen[bytes]] = [
            subprocess.Popen(
                [sys.executable, __file__, "--subscribe", json.dumps([port, n, query])],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=REPO,
            )
            for n in shares
            if n
        ]

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for child in self.children:
            assert child.stdout is not None
            while time.monotonic() < deadline:
                ready, _, _ = select.select([child.stdout], [], [], 0.2)
                if ready:
                    line = child.stdout.readline()
                    if line.strip() == b"READY":
                        break
                    raise SystemExit(f"a subscriber process said {line!r}")
                if child.poll() is not None:
                    raise SystemExit("a subscriber process exited early")
            else:
                raise SystemExit(f"subscribers were not connected within {timeout:g} s")

    def results(self, finished: dict[int, tuple[float, str]]) -> list[dict[str, Any]]:
        stop = b"STOP " + json.dumps(finished).encode() + b"\n"
        out = []
        for child in self.children:
            assert child.stdin is not None
            child.stdin.write(stop)
            child.stdin.flush()
        for child in self.children:
            assert child.stdout is not None
            line = _result_line(child.stdout)
            out.append(json.loads(line))
            child.wait(10)
        return out

    def kill(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()
                child.wait()


def _result_line(stream: IO[bytes]) -> bytes:
    for line in stream:
        if line.startswith(b"RESULT "):
            return line[len(b"RESULT ") :]
    raise SystemExit("a subscriber process gave no result")


# -- the driver -----------------------------------------------------------------------------------
async def run_now_loop(
    port: int,
    tid: str,
    stop: float,
    finished: dict[int, float],
    errors: list[bytes],
    every: float = 0.0,
    offset: float = 0.0,
) -> None:
    """run-now for one thread, over one keep-alive connection, until ``stop``: back to back, or
    with ``every`` one every that many seconds (a late one is not made up for)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        f"POST /api/threads/{tid}/heartbeat/run-now HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    next_at = time.monotonic() + offset
    try:
        while time.monotonic() < stop:
            if every:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at = max(next_at + every, time.monotonic())
                if time.monotonic() >= stop:
                    break
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
            body = await reader.readexactly(length)
            if head.startswith(b"HTTP/1.1 200 "):
                run = json.loads(body)
                finished[run["run_id"]] = datetime.fromisoformat(run["finished_at"]).timestamp()
            else:
                errors.append(head.split(b"\r\n", 1)[0] + b" " + body[:200])
    finally:
        writer.close()


async def drive(
    port: int, workers: int, duration: float, rate: float = 0.0
) -> tuple[dict[int, float], float, int]:
    """``workers`` loops of run-now, one thread each, for ``duration`` seconds: as fast as the
    server answers, or ``rate`` runs/s in all, evenly spaced."""
    finished: dict[int, float] = {}
    errors: list[bytes] = []
    t0 = time.monotonic()
    stop = t0 + duration
    every = workers / rate if rate else 0.0
    async with asyncio.TaskGroup() as tg:
        for i in range(workers):
            tg.create_task(
                run_now_loop(port, f"bench-{i}", stop, finished, errors, every, every * i / workers)
            )
    seconds = time.monotonic() - t0
    if errors:
        print(f"  {len(errors)} run-now calls failed, first: {errors[0]!r}", file=sys.stderr)
    return finished, seconds, len(errors)


def setup_threads(port: int, workers: int) -> None:
    import httpx

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0) as client:
        for i in range(workers):
            client.post("/api/threads", json={"thread_id": f"bench-{i}"}).raise_for_status()
        client.post("/api/threads/bench-0/heartbeat/run-now").raise_for_status()  # warm up


# -- one phase ------------------------------------------------------------------------------
@dataclass
class Phase:
    subscribers: int
    runs: int
    seconds: float
    hist: Counter[int]  # delays at the paced rate
    hist_full: Counter[int]  # delays while the server runs flat out
    delivered: float
    cut_off: int
    ended: int
    server_cpu: float
    driver_cpu: float
    subscriber_cpu: float
    machine: float  # cores busy, all processes together
    errors: int
    round: int = 1

    @property
    def rate(self) -> float:
        return self.runs / self.seconds

    def delay(self, q: float, *, full: bool = False) -> float:
        """The q-th percentile delay in seconds (nearest rank over the histogram)."""
        hist = self.hist_full if full else self.hist
        total = sum(hist.values())
        if not total:
            return float("nan")
        rank = max(1, round(q / 100 * total))
        seen = 0
        for key in sorted(hist):
            seen += hist[key]
            if seen >= rank:
                return key / BIN
        return max(hist) / BIN


def cpu_seconds(procs: list[Any]) -> float:
    total = 0.0
    for p in procs:
        t = p.cpu_times()
        total += t.user + t.system
    return total


def phase(port: int, server: Any, count: int, args: argparse.Namespace) -> Phase:
    import psutil

    setup_threads(port, args.workers)
    subs = Subscribers(port, count, max(1, args.sub_procs), bool(args.tokens))
    try:
        subs.wait_ready(60)
        children = [psutil.Process(c.pid) for c in subs.children]
        me = psutil.Process()
        before = (cpu_seconds([server]), cpu_seconds([me]), cpu_seconds(children))
        busy0 = machine_busy_seconds()
        t0 = time.monotonic()
        finished, seconds, errors = asyncio.run(drive(port, args.workers, args.duration))
        time.sleep(0.5)  # stragglers
        wall = time.monotonic() - t0
        after = (cpu_seconds([server]), cpu_seconds([me]), cpu_seconds(children))
        machine = (machine_busy_seconds() - busy0) / wall
        paced, _, paced_errors = asyncio.run(
            drive(port, args.workers, args.paced_duration, args.rate)
        )
        time.sleep(1.0)
        errors += paced_errors
        parts = {k: (v, "full") for k, v in finished.items()}
        parts.update({k: (v, "paced") for k, v in paced.items()})
        reports = subs.results(parts)
    finally:
        subs.kill()
    time.sleep(0.5)  # let the server see the disconnects before it is stopped
    hist: Counter[int] = Counter()
    hist_full: Counter[int] = Counter()
    for report in reports:
        hist.update({int(k): v for k, v in report["hists"].get("paced", {}).items()})
        hist_full.update({int(k): v for k, v in report["hists"].get("full", {}).items()})
    received = sum(hist.values()) + sum(hist_full.values())
    runs = len(finished) + len(paced)
    return Phase(
        subscribers=count,
        runs=len(finished),
        seconds=seconds,
        hist=hist,
        hist_full=hist_full,
        delivered=received / (runs * count) if count and runs else 1.0,
        cut_off=sum(r["cut_off"] for r in reports),
        ended=sum(r["ended"] for r in reports),
        server_cpu=(after[0] - before[0]) / wall,
        driver_cpu=(after[1] - before[1]) / wall,
        subscriber_cpu=(after[2] - before[2]) / wall,
        machine=machine,
        errors=errors,
    )


def table(results: list[Phase]) -> str:
    """One row a phase; "vs 0 subs" compares with the phase without subscribers of its round."""
    base = {p.round: p.rate for p in results if p.subscribers == 0}
    head = (
        "| round | subscribers | runs | runs/s | vs 0 subs | delivered | p50 ms | p99 ms | max ms |"
        " flat-out p99 ms | cut off | server CPU | driver CPU | subscribers' CPU | machine |"
    )
    lines = [head, "|" + "---|" * 15]
    for p in results:
        ratio = f"{p.rate / base[p.round]:.2f}" if base.get(p.round) else "—"
        if p.subscribers:
            d = (
                f"{p.delay(50) * 1000:.1f} | {p.delay(99) * 1000:.1f} | {p.delay(100) * 1000:.1f}"
                f" | {p.delay(99, full=True) * 1000:.1f}"
            )
        else:
            d = "— | — | — | —"
        lines.append(
            f"| {p.round} | {p.subscribers} | {p.runs} | {p.rate:.1f} | {ratio} | {p.delivered:.1%}"
            f" | {d} | {p.cut_off} | {p.server_cpu:.0%} | {p.driver_cpu:.0%}"
            f" | {p.subscriber_cpu:.0%} | {p.machine:.2f} |"
        )
    return "\n".join(lines)


def summary(results: list[Phase]) -> str:
    """Per subscriber count over the rounds: the median and, in brackets, the range."""
    base = {p.round: p.rate for p in results if p.subscribers == 0}

    def cell(values: list[float], fmt: str) -> str:
        if not values:
            return "—"
        mid = statistics.median(values)
        if len(values) == 1:
            return format(mid, fmt)
        return f"{mid:{fmt}} ({min(values):{fmt}} to {max(values):{fmt}})"

    lines = [
        "| subscribers | runs/s | vs 0 subs | p50 ms | p99 ms | flat-out p99 ms | delivered |",
        "|---|---|---|---|---|---|---|",
    ]
    for count in dict.fromkeys(p.subscribers for p in results):
        ps = [p for p in results if p.subscribers == count]
        ratios = [p.rate / base[p.round] for p in ps if base.get(p.round)]
        live = [p for p in ps if p.subscribers]
        lines.append(
            f"| {count} | {cell([p.rate for p in ps], '.0f')} | {cell(ratios, '.2f')}"
            f" | {cell([p.delay(50) * 1000 for p in live], '.0f')}"
            f" | {cell([p.delay(99) * 1000 for p in live], '.0f')}"
            f" | {cell([p.delay(99, full=True) * 1000 for p in live], '.0f')}"
            f" | {cell([p.delivered * 100 for p in live], '.1f')} |"
        )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    import psutil

    server_cpus: list[int] = []
    if args.pin:  # the driver and the subscriber processes it starts inherit the clients' CPUs
        server_cpus, client_cpus = split_cpus()
        os.sched_setaffinity(0, client_cpus)
    counts = [int(n) for n in args.subscribers.split(",")]
    results: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="hb-bench-sse-") as tmp:
        workspace = Path(tmp)
        (workspace / "HEARTBEAT.md").write_text(HEARTBEAT_MD, encoding="utf-8")
        for round_no in range(1, args.rounds + 1):
            for count in counts:
                db = workspace / f"db-{round_no}-{count}.sqlite"
                server, port = start_server(workspace, db, server_cpus)
                try:
                    print(
                        f"round {round_no}, phase: {count} subscribers, {args.duration:g} s ...",
                        file=sys.stderr,
                    )
                    result = phase(port, psutil.Process(server.pid), count, args)
                    result.round = round_no
                    results.append(result)
                    if result.ended:
                        print(f"  {result.ended} streams ended early", file=sys.stderr)
                finally:
                    server.terminate()
                    server.wait(10)
    print()
    print(
        f"SSE bench: {args.workers} run-now workers, {args.duration:g} s per phase, instant fake"
        f" LLM, subscribers {'with' if args.tokens else 'without'} token events in"
        f" {args.sub_procs} process(es){'; server pinned to one CPU' if args.pin else ''};"
        f" Python {platform.python_version()} on"
        f" {os.cpu_count()} CPU(s)"
    )
    print(table(results))
    if args.rounds > 1:
        print(f"\nover {args.rounds} rounds, median (range):")
        print(summary(results))
    print(
        "\ndelay = subscriber receipt of run_finished - the run's finished_at; "
        "delivered = run_finished events received / (runs x subscribers); CPU in % of one core;"
        " machine = cores busy in all processes (this bench's and any other work) meanwhile"
    )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s phases, one round: a smoke run")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--workers", type=int, default=8, help="concurrent run-now loops")
    parser.add_argument("--subscribers", default="0,100,1000", help="comma-separated counts")
    parser.add_argument(
        "--tokens", type=int, choices=(0, 1), default=1, help="0: subscribe with ?tokens=0"
    )
    parser.add_argument("--sub-procs", type=int, default=1, help="subscriber processes")
    parser.add_argument("--rounds", type=int, default=3, help="repeat every phase this often")
    parser.add_argument(
        "--rate", type=float, default=50.0, help="runs/s of the paced part, for the delays"
    )
    parser.add_argument(
        "--paced-duration", type=float, default=5.0, help="seconds of the paced part of a phase"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="bind the server to the first CPU and the clients to the others",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--subscribe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.duration = min(args.duration, 2.0)
        args.rounds = 1
    return args


if __name__ == "__main__":
    arguments = parse()
    if arguments.serve:
        ws, db, port, cpus = json.loads(arguments.serve)
        serve(Path(ws), Path(db), int(port), [int(c) for c in cpus])
    elif arguments.subscribe:
        port, count, query = json.loads(arguments.subscribe)
        subscribe_main(int(port), int(count), str(query))
    else:
        main(arguments)
