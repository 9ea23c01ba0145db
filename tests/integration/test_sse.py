"""``GET /api/heartbeat/events`` against a live uvicorn server, plus the stream's own timing.

httpx's ASGITransport buffers whole bodies, so every stream here goes over a real socket.
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn

from app import sse
from app.main import create_app
from app.service import Service
from app.settings import Settings
from loops.clock import Clock
from loops.events import EventBus
from loops.llm import ChatRequest, ChatResult, Health, TokenSink
from tests.conftest import free_port, live_server

NONE_REPLY = {"action": "none", "reasoning": "nothing needs doing"}
TOKEN = "sse-test-token-0123"


class FakeLLM:
    """An LLMProvider that streams a fixed reply in ``chunks`` pieces, ``pause`` s apart."""

    name = "fake"
    base_url = "http://fake-llm.invalid:11434"

    def __init__(self, reply: dict[str, Any] | None = None, chunks: int = 1, pause: float = 0.0):
        self.reply = reply or NONE_REPLY
        self.chunks = chunks
        self.pause = pause
        self.calls = 0

    @property
    def text(self) -> str:
        return json.dumps(self.reply)

    async def chat(
        self, req: ChatRequest, *, on_token: TokenSink | None = None, deadline: float | None = None
    ) -> ChatResult:
        self.calls += 1
        text = self.text
        size = -(-len(text) // self.chunks)
        for i in range(0, len(text), size):
            if self.pause:
                await asyncio.sleep(self.pause)
            if on_token is not None:
                on_token(text[i : i + size])
        return ChatResult(
            text=text,
            model=req.model,
            done_reason="stop",
            prompt_tokens=20,
            completion_tokens=self.chunks,
            load_ms=0.0,
            total_ms=1.0,
            attempts=1,
        )

    async def health(self, model: str) -> Health:
        return Health(self.name, self.base_url, True, "fake", model, True, None)

    async def aclose(self) -> None:
        return None


# -- a small SSE client ----------------------------------------------------------------------
@dataclass
class Received:
    kind: str  # the event name, "comment" for ": ..." lines, "eof" at the end
    data: Any
    id: str | None
    at: float  # time.time() when the blank line closing it arrived


class EventClient:
    """Reads one event stream in the background; ``next``/``until`` take what arrived."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.queue: asyncio.Queue[Received] = asyncio.Queue()
        self.task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        fields: dict[str, str] = {}
        try:
            async for line in self.response.aiter_lines():
                if line.startswith(":"):
                    self.queue.put_nowait(Received("comment", line[1:].strip(), None, time.time()))
                elif line == "":
                    if "data" in fields:
                        self.queue.put_nowait(
                            Received(
                                fields.get("event", "message"),
                                json.loads(fields["data"]),
                                fields.get("id"),
                                time.time(),
                            )
                        )
                    fields = {}
                else:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
        except httpx.HTTPError:
            pass
        self.queue.put_nowait(Received("eof", None, None, time.time()))

    async def next(self, timeout: float = 5.0) -> Received:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def until(self, done: Callable[[Received], bool], timeout: float = 5.0) -> list[Received]:
        """Everything received up to and including the first item for which ``done`` holds."""
        got: list[Received] = []
        async with asyncio.timeout(timeout):
            while True:
                item = await self.queue.get()
                got.append(item)
                if done(item):
                    return got
                assert item.kind != "eof", f"stream ended early after {got}"

    async def events(self, kinds: set[str], count: int, timeout: float = 5.0) -> list[Received]:
        """The next ``count`` events whose kind is in ``kinds`` (others are skipped)."""
        found: list[Received] = []
        async with asyncio.timeout(timeout):
            while len(found) < count:
                item = await self.queue.get()
                assert item.kind != "eof", f"stream ended early after {found}"
                if item.kind in kinds:
                    found.append(item)
        return found


def finished(run_id: int) -> Callable[[Received], bool]:
    return lambda r: r.kind == "run_finished" and r.data["run_id"] == run_id


@dataclass
class Live:
    base: str
    client: httpx.AsyncClient
    streams: httpx.AsyncClient
    service: Service

    @asynccontextmanager
    async def subscribe(self, query: str = "", **headers: str) -> AsyncIterator[EventClient]:
        url = f"{self.base}/api/heartbeat/events{query}"
        async with self.streams.stream("GET", url, headers=headers) as resp:
            assert resp.status_code == 200, await resp.aread()
            assert resp.headers["content-type"].startswith("text/event-stream")
            reader = EventClient(resp)
            first = await reader.next()
            assert first.kind == "comment" and first.data == "connected"
            try:
                yield reader
            finally:
                reader.task.cancel()

    async def run_now(self, thread_id: str = "default") -> dict[str, Any]:
        r = await self.client.post(f"/api/threads/{thread_id}/heartbeat/run-now")
        assert r.status_code == 200, r.text
        run: dict[str, Any] = r.json()
        return run

    async def thread(self, thread_id: str) -> None:
        r = await self.client.post("/api/threads", json={"thread_id": thread_id})
        assert r.status_code in (200, 201), r.text


@asynccontextmanager
async def serve(
    workspace: Path,
    llm: FakeLLM,
    *,
    clock: Clock | None = None,
    start_loops: bool = False,
    **settings: Any,
) -> AsyncIterator[Live]:
    app = create_app(
        Settings.for_workspace(workspace, **settings),
        clock=clock,
        llm=llm,
        start_loops=start_loops,
    )
    auth = {"Authorization": f"Bearer {settings['api_token']}"} if "api_token" in settings else {}
    async with (
        live_server(app) as base,
        httpx.AsyncClient(base_url=base, timeout=10.0, headers=auth) as client,
        httpx.AsyncClient(
            timeout=httpx.Timeout(10.0, read=None),
            limits=httpx.Limits(max_connections=300, max_keepalive_connections=0),
            headers=auth,
        ) as streams,
    ):
        yield Live(base, client, streams, app.state.service)


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@pytest.fixture
def llm() -> FakeLLM:
    return FakeLLM(
        {"action": "none", "reasoning": "The ledger is quiet; nothing to add right now."},
        chunks=4,
        pause=0.12,
    )


@pytest.fixture
async def live(workspace: Path, llm: FakeLLM) -> AsyncIterator[Live]:
    async with serve(workspace, llm) as running:
        yield running


# -- delivery ---------------------------------------------------------------------------------
async def test_run_finished_arrives_within_a_second_and_equals_the_run(live: Live) -> None:
    async with live.subscribe() as events:
        run = await live.run_now()
        got = await events.until(finished(run["run_id"]))
    event = got[-1]
    assert event.data == run
    assert event.id == str(run["run_id"])
    delay = event.at - ts(run["finished_at"])
    assert delay < 1.0, f"run_finished arrived {delay:.3f} s after the run finished"
    kinds = [r.kind for r in got if r.kind != "comment"]
    assert kinds[0] == "run_started" and kinds[-2:] == ["decision", "run_finished"]


async def test_tokens_stream_before_the_decision_and_the_finished_run(
    live: Live, llm: FakeLLM
) -> None:
    async with live.subscribe() as events:
        run = await live.run_now()
        got = await events.until(finished(run["run_id"]))
    kinds = [r.kind for r in got if r.kind != "comment"]
    tokens = [r for r in got if r.kind == "token"]
    assert len(tokens) >= 2, kinds  # streamed in pieces, not one lump at the end
    assert all(t.data["run_id"] == run["run_id"] for t in tokens)
    assert "".join(t.data["text"] for t in tokens) == llm.text
    assert kinds.index("run_started") < kinds.index("token")
    last_token = len(kinds) - 1 - kinds[::-1].index("token")
    assert last_token < kinds.index("decision") < kinds.index("run_finished")
    # the first token arrived while the LLM was still streaming, well before the run finished
    assert tokens[0].at < got[-1].at - 0.15
    decision = next(r for r in got if r.kind == "decision")
    assert decision.data["decision"]["action"] == "none"


async def test_config_changed_and_loop_state_events(live: Live) -> None:
    async with live.subscribe() as events:
        r = await live.client.post(
            "/api/threads/default/heartbeat/config", json={"every_seconds": 120}
        )
        assert r.status_code == 200
        (changed,) = await events.events({"config_changed"}, 1)
        assert changed.data["thread_id"] == "default"
        assert changed.data["config"]["every_seconds"] == 120
        assert (await live.client.post("/api/heartbeat/start")).status_code == 200
        (state,) = await events.events({"loop_state"}, 1)
        assert state.data["name"] == "heartbeat" and state.data["running"] is True
        assert (await live.client.post("/api/heartbeat/stop")).status_code == 200
        (state,) = await events.events({"loop_state"}, 1)
        assert state.data["running"] is False


# -- replay -------------------------------------------------------------------------------------
async def test_last_event_id_replays_exactly_the_missed_runs(live: Live, llm: FakeLLM) -> None:
    llm.pause = 0
    await live.thread("other")
    async with live.subscribe() as events:
        first = await live.run_now()
        got = await events.until(finished(first["run_id"]))
        last_seen = got[-1].id
    assert last_seen == str(first["run_id"])
    missed = [
        (await live.run_now(tid))["run_id"] for tid in ("default", "other", "default", "other")
    ]
    async with live.subscribe(**{"Last-Event-ID": last_seen}) as events:
        replay = await events.events({"run_finished"}, len(missed))
        assert [int(r.id or 0) for r in replay] == missed
        assert [r.data["run_id"] for r in replay] == missed
        live_run = await live.run_now()
        rest = await events.until(finished(live_run["run_id"]))
    seen = [r.data["run_id"] for r in rest if r.kind == "run_finished"]
    assert seen == [live_run["run_id"]], "no replayed run is sent again"

    # the query parameter works as the header does, and a thread filter applies to the replay
    async with live.subscribe(f"?thread_id=other&last_event_id={last_seen}") as events:
        replay = await events.events({"run_finished"}, 2)
    assert [r.data["run_id"] for r in replay] == [missed[1], missed[3]]


async def test_a_run_both_replayed_and_published_live_is_sent_once(
    live: Live, llm: FakeLLM
) -> None:
    llm.pause = 0
    async with live.subscribe() as events:
        first = await live.run_now()
        await events.until(finished(first["run_id"]))
    second = await live.run_now()
    store = live.service.store
    original = store.runs_finished_after

    async def racing(*args: Any, **kwargs: Any) -> Any:
        runs = await original(*args, **kwargs)
        for run in runs:  # the same runs land in the fresh subscription's queue meanwhile
            live.service.bus.publish(
                "run_finished", {"run_id": run.id}, id=run.id, thread_id=run.thread_id
            )
        return runs

    store.runs_finished_after = racing  # type: ignore[method-assign]
    try:
        async with live.subscribe(**{"Last-Event-ID": str(first["run_id"])}) as events:
            third = await live.run_now()
            got = await events.until(finished(third["run_id"]))
    finally:
        store.runs_finished_after = original  # type: ignore[method-assign]
    ids = [r.data["run_id"] for r in got if r.kind == "run_finished"]
    assert ids == [second["run_id"], third["run_id"]]


async def test_bad_last_event_id_and_thread_filter_are_refused(live: Live) -> None:
    url = f"{live.base}/api/heartbeat/events"
    r = await live.client.get(url, headers={"Last-Event-ID": "abc"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "last_event_id"
    # digits to str.isdigit that int() refuses, in the query and as the header's latin-1 byte
    for bad in ({"params": {"last_event_id": "\u00b9"}}, {"headers": {"Last-Event-ID": b"\xb2"}}):
        r = await live.client.get(url, **bad)  # type: ignore[arg-type]
        assert r.status_code == 422 and r.json()["error"]["field"] == "last_event_id"
    r = await live.client.get(url, params={"thread_id": "bad id!"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "thread_id"
    r = await live.client.get(url, params={"thread_id": "nope"})
    assert r.status_code == 404
    r = await live.client.head(url)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")


# -- filtering and fan-out ------------------------------------------------------------------------
async def test_thread_filter_keeps_one_threads_events(live: Live, llm: FakeLLM) -> None:
    llm.pause = 0
    await live.thread("a")
    await live.thread("b")
    async with live.subscribe("?thread_id=a") as only_a, live.subscribe() as everything:
        run_b = await live.run_now("b")
        run_a = await live.run_now("a")
        await live.client.post("/api/threads/b/heartbeat/config", json={"dry_run": True})
        await live.client.post("/api/threads/a/heartbeat/config", json={"dry_run": True})
        await live.client.post("/api/heartbeat/start")
        got_a = await only_a.until(lambda r: r.kind == "loop_state")
        got_all = await everything.until(lambda r: r.kind == "loop_state")
        await live.client.post("/api/heartbeat/stop")
    threads_a = {r.data["thread_id"] for r in got_a if r.kind not in ("comment", "loop_state")}
    assert threads_a == {"a"}
    assert [r.data["run_id"] for r in got_a if r.kind == "run_finished"] == [run_a["run_id"]]
    assert [r.kind for r in got_a if r.kind == "config_changed"] == ["config_changed"]
    finished_all = [r.data["run_id"] for r in got_all if r.kind == "run_finished"]
    assert finished_all == [run_b["run_id"], run_a["run_id"]]
    assert len([r for r in got_all if r.kind == "config_changed"]) == 2


async def test_a_hundred_subscribers_all_receive_every_decision(live: Live, llm: FakeLLM) -> None:
    llm.pause = 0
    for tid in ("t1", "t2", "t3"):
        await live.thread(tid)
    async with _many(live, 100) as readers:
        assert live.service.bus.subscriber_count == 100
        runs = await asyncio.gather(*(live.run_now(t) for t in ("t1", "t2", "t3", "default")))
        ids = {run["run_id"] for run in runs}
        last_finish = max(ts(run["finished_at"]) for run in runs)
        results = await asyncio.gather(
            *(r.events({"decision", "run_finished"}, 2 * len(ids), timeout=10) for r in readers)
        )
    delays = []
    for got in results:
        assert {r.data["run_id"] for r in got if r.kind == "decision"} == ids
        assert {r.data["run_id"] for r in got if r.kind == "run_finished"} == ids
        delays.append(max(r.at for r in got) - last_finish)
    assert max(delays) < 1.0, f"slowest subscriber got the last run {max(delays):.3f} s late"


async def test_concurrent_runs_publish_their_final_state(live: Live, llm: FakeLLM) -> None:
    """run_finished (and run-now) show the committed run, never a stale ``running`` row."""
    llm.pause = 0
    threads = [f"c{i}" for i in range(8)]
    for tid in threads:
        await live.thread(tid)

    async def runs(tid: str) -> list[dict[str, Any]]:
        return [await live.run_now(tid) for _ in range(4)]

    async with live.subscribe() as events:
        done = [run for batch in await asyncio.gather(*map(runs, threads)) for run in batch]
        got = await events.events({"run_finished"}, len(done), timeout=10)
    assert {r["status"] for r in done} == {"ok"}
    assert {r.data["status"] for r in got} == {"ok"}
    assert all(r.data["finished_at"] for r in got)
    by_id = {r["run_id"]: r for r in done}
    assert all(r.data == by_id[r.data["run_id"]] for r in got)


@asynccontextmanager
async def _many(live: Live, count: int) -> AsyncIterator[list[EventClient]]:
    async with asyncio.TaskGroup() as tg:
        opened = [tg.create_task(_enter(live.subscribe())) for _ in range(count)]
    pairs = [t.result() for t in opened]
    try:
        yield [reader for _, reader in pairs]
    finally:
        for cm, _ in pairs:
            await cm.__aexit__(None, None, None)


async def _enter(cm: Any) -> tuple[Any, EventClient]:
    return cm, await cm.__aenter__()


# -- slow clients ------------------------------------------------------------
BIG_POST = {
    "action": "post",
    "title": "A long essay",
    "content": "All work and no play makes the ledger a dull forum. " * 90,
    "reasoning": "Filling the pipe.",
}


class EssayLLM(FakeLLM):
    """``BIG_POST``, a new essay each call: the same post again and again would be stopped by
    the heartbeat's breaker (the same decision on unchanged inputs), and the pipe not filled."""

    @property
    def text(self) -> str:
        return json.dumps({**self.reply, "title": f"A long essay, part {self.calls}"})


async def test_a_client_that_stops_reading_slows_nobody_and_gets_an_error(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "QUEUE_SIZE", 16)
    llm = EssayLLM(BIG_POST, chunks=3)
    async with serve(workspace, llm) as live:
        baseline = [(await _timed_run(live))[0] for _ in range(5)]
        loop = asyncio.get_running_loop()
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.setblocking(False)
        try:
            port = int(live.base.rsplit(":", 1)[1])
            await loop.sock_connect(stalled, ("127.0.0.1", port))
            await loop.sock_sendall(
                stalled, b"GET /api/heartbeat/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            )
            bus = live.service.bus
            async with asyncio.timeout(5):
                while bus.subscriber_count < 1:
                    await asyncio.sleep(0.01)
            async with live.subscribe() as healthy:
                timings, runs = [], []
                while bus.overflows == 0 and len(timings) < 400:
                    took, run = await _timed_run(live)
                    timings.append(took)
                    runs.append(run)
                assert bus.overflows == 1, f"no overflow after {len(timings)} runs"
                assert bus.subscriber_count == 1  # only the healthy one is left on the bus
                got = await healthy.events({"run_finished"}, len(runs))
                assert [r.data["run_id"] for r in got] == [r["run_id"] for r in runs]
                lags = [r.at - ts(r.data["finished_at"]) for r in got]
                assert max(lags) < 1.0, f"the healthy client lagged {max(lags):.3f} s"
                assert max(timings) < 1.0
                assert statistics.median(timings) < 5 * statistics.median(baseline) + 0.05
            # it reads again: what was in the pipe, then the error event and the end
            tail = await _read_until_end(loop, stalled)
        finally:
            stalled.close()
    assert b"event: error\n" in tail
    error_line = tail.split(b"event: error\ndata: ", 1)[1].split(b"\n", 1)[0]
    assert json.loads(error_line)["code"] == "too_slow"
    assert tail.endswith(b"0\r\n\r\n")  # the chunked body was completed


async def _timed_run(live: Live) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    run = await live.run_now()
    return time.perf_counter() - t0, run


async def _read_until_end(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    data = bytearray()
    async with asyncio.timeout(10):
        while not data.endswith(b"0\r\n\r\n"):
            chunk = await loop.sock_recv(sock, 1 << 16)
            if not chunk:
                break
            data += chunk
    return bytes(data[-4096:])


def _asgi_stream(send: Callable[[dict[str, Any]], Any]) -> tuple[EventBus, asyncio.Task[None]]:
    """An event stream on a bare bus, called straight through ASGI with ``send``, its client
    never leaving; returns the bus and the response's task."""
    bus = EventBus()
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await never.wait()
        raise AssertionError

    stream = sse.EventStream(SimpleNamespace(bus=bus, store=None), None, None)  # type: ignore[arg-type]
    return bus, asyncio.create_task(stream({"type": "http", "method": "GET"}, receive, send))


async def test_a_stream_that_cannot_even_take_its_error_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The socket is full for good: the stream ends ``OVERFLOW_GRACE`` after the overflow."""
    monkeypatch.setattr(sse, "QUEUE_SIZE", 4)
    monkeypatch.setattr(sse, "OVERFLOW_GRACE", 0.2)
    sent: list[dict[str, Any]] = []
    full = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if len(sent) >= 3:  # headers and the greeting went out, then the socket filled up
            await full.wait()

    bus, task = _asgi_stream(send)
    async with asyncio.timeout(2):
        while bus.subscriber_count == 0:
            await asyncio.sleep(0.005)
    t0 = time.perf_counter()
    for i in range(1, 20):
        bus.publish("run_finished", {"run_id": i}, id=i)
    assert time.perf_counter() - t0 < 0.05
    assert bus.subscriber_count == 0 and bus.overflows == 1
    await asyncio.wait_for(task, 2)
    assert 0.15 < time.perf_counter() - t0 < 1.5
    assert sent[-1].get("more_body") is True  # never completed: the socket never drained


# -- ping and auth ------------------------------------------------------------
async def test_ping_comments_keep_the_stream_alive(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "PING_SECONDS", 0.2)
    async with live.subscribe() as events:
        t0 = time.time()
        pings = [await events.next(timeout=1.0) for _ in range(3)]
    assert [p.kind for p in pings] == ["comment"] * 3 and {p.data for p in pings} == {"ping"}
    assert pings[-1].at - t0 < 1.0


async def test_pings_go_out_even_while_events_flow(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "PING_SECONDS", 0.3)
    bus = live.service.bus
    async with live.subscribe() as events:

        async def chatter() -> None:
            for _ in range(40):
                bus.publish("loop_state", {"name": "noise"})
                await asyncio.sleep(0.03)

        noise = asyncio.create_task(chatter())
        got = await events.until(lambda r: r.kind == "comment", timeout=1.5)
        noise.cancel()
    assert got[-1].data == "ping" and len(got) > 3


async def test_event_stream_with_api_token(workspace: Path) -> None:
    async with serve(workspace, FakeLLM(), api_token=TOKEN) as live:
        url = f"{live.base}/api/heartbeat/events"
        async with httpx.AsyncClient(timeout=5.0) as anonymous:
            r = await anonymous.get(url)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
            r = await anonymous.get(url, params={"token": "wrong-token-123"})
            assert r.status_code == 401
            r = await anonymous.get(f"{live.base}/api/heartbeat/status", params={"token": TOKEN})
            assert r.status_code == 401, "?token= is accepted on the event stream only"
        live.streams.headers.pop("Authorization")
        async with live.subscribe(f"?token={TOKEN}") as events:
            run = await live.run_now()
            got = await events.until(finished(run["run_id"]))
        assert got[-1].data == run


async def test_middleware_sees_every_byte_the_stream_writes(workspace: Path) -> None:
    """The stream goes out through ASGI ``send``, so middleware wrapping it sees it all."""
    app = create_app(Settings.for_workspace(workspace), llm=FakeLLM(), start_loops=False)
    seen: list[bytes] = []

    class Tap:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            async def tapped(message: dict[str, Any]) -> None:
                if scope.get("path") == "/api/heartbeat/events":
                    if message["type"] == "http.response.start":
                        message["headers"] = [*message["headers"], (b"x-tapped", b"1")]
                    else:
                        seen.append(message.get("body", b""))
                await send(message)

            await self.app(scope, receive, tapped)

    app.add_middleware(Tap)
    async with (
        live_server(app) as base,
        httpx.AsyncClient(base_url=base, timeout=10.0) as client,
        httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as streams,
        streams.stream("GET", f"{base}/api/heartbeat/events") as resp,
    ):
        assert resp.headers["x-tapped"] == "1"
        events = EventClient(resp)
        assert (await events.next()).data == "connected"
        r = await client.post("/api/threads/default/heartbeat/run-now")
        run_id = r.json()["run_id"]
        await events.until(finished(run_id))
        events.task.cancel()
    assert f"id: {run_id}\nevent: run_finished\n".encode() in b"".join(seen)


# -- shutdown ------------------------------------------------------------------------------------
async def test_server_shutdown_ends_open_streams_at_once(workspace: Path) -> None:
    """``heartbeat serve``'s server closes event streams instead of waiting them out."""
    app = create_app(Settings.for_workspace(workspace), llm=FakeLLM(), start_loops=False)
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=20
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(sse.serve(server))
    async with asyncio.timeout(5):
        while not server.started:
            await asyncio.sleep(0.01)
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=None)) as client,
        client.stream("GET", f"http://127.0.0.1:{port}/api/heartbeat/events") as resp,
    ):
        reader = EventClient(resp)
        assert (await reader.next()).data == "connected"
        t0 = time.perf_counter()
        server.should_exit = True
        bye = await reader.next()
        assert bye.kind == "comment" and "shutting down" in bye.data
        assert (await reader.next()).kind == "eof"
        await asyncio.wait_for(task, 5)
    assert time.perf_counter() - t0 < 2.0


# -- tokens flag, HTTP/1.0 and gathering -----------------------------------------------------
async def test_tokens_0_leaves_out_token_events_only(live: Live, llm: FakeLLM) -> None:
    llm.pause = 0
    async with live.subscribe("?tokens=0") as quiet, live.subscribe() as chatty:
        run = await live.run_now()
        got_quiet = await quiet.until(finished(run["run_id"]))
        got_chatty = await chatty.until(finished(run["run_id"]))
    quiet_kinds = [r.kind for r in got_quiet if r.kind != "comment"]
    assert quiet_kinds == ["run_started", "decision", "run_finished"]
    assert "token" in [r.kind for r in got_chatty]
    r = await live.client.get(f"{live.base}/api/heartbeat/events", params={"tokens": "maybe"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "tokens"


async def test_an_http_1_0_client_gets_a_close_delimited_stream(live: Live) -> None:
    port = int(live.base.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /api/heartbeat/events HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        async with asyncio.timeout(5):
            while b": connected" not in data:
                data += await reader.read(4096)
            run = await live.run_now()
            marker = f"id: {run['run_id']}\nevent: run_finished\n".encode()
            while marker not in data:
                data += await reader.read(4096)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()  # close-delimited, no chunk framing
    assert body.startswith(b"retry: ")


async def test_a_stream_writes_at_once_then_gathers_until_the_next_multiple_of_gather(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sse, "GATHER", 0.3)
    loop = asyncio.get_running_loop()
    bodies: list[tuple[float, bytes]] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            bodies.append((loop.time(), message["body"]))

    async def until(count: int) -> None:
        while len(bodies) < count:
            await asyncio.sleep(0.005)

    bus, task = _asgi_stream(send)
    try:
        async with asyncio.timeout(3):
            await until(1)  # the greeting
            while loop.time() % 0.3 > 0.05:  # just after a multiple of GATHER
                await asyncio.sleep(0.005)
            t0 = loop.time()
            bus.publish("run_started", {"run_id": 1})
            await until(2)
            assert bodies[1][0] - t0 < 0.1  # a quiet stream writes at once
            for i in (2, 3):
                bus.publish("decision", {"run_id": i})
                await asyncio.sleep(0.02)
            bus.publish("run_finished", {"run_id": 3}, id=3)
            await until(3)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert bodies[1][1] == b'event: run_started\ndata: {"run_id":1}\n\n'
    assert bodies[2][0] - t0 > 0.2  # the next write waited for the next multiple of GATHER
    assert bodies[2][1] == (  # and took everything published meanwhile
        b'event: decision\ndata: {"run_id":2}\n\n'
        b'event: decision\ndata: {"run_id":3}\n\n'
        b'id: 3\nevent: run_finished\ndata: {"run_id":3}\n\n'
    )
    assert bus.subscriber_count == 0  # the cancelled stream left the bus


async def test_gathering_ends_early_once_a_quarter_of_the_queue_is_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Gathering alone never cuts off a client that keeps up."""
    monkeypatch.setattr(sse, "GATHER", 60.0)
    monkeypatch.setattr(sse, "QUEUE_SIZE", 12)
    bodies: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            bodies.append(message["body"])

    bus, task = _asgi_stream(send)
    try:
        async with asyncio.timeout(2):
            while bus.subscriber_count == 0 or not bodies:
                await asyncio.sleep(0.005)
            bus.publish("run_started", {"run_id": 1})
            while len(bodies) < 2:  # written at once, then a long gathering begins
                await asyncio.sleep(0.005)
            bus.publish("decision", {"run_id": 1})
            bus.publish("token", {"run_id": 1, "text": "x"})
            await asyncio.sleep(0.05)
            assert len(bodies) == 2  # 2 of 12 waiting: still gathering
            bus.publish("run_finished", {"run_id": 1}, id=1)  # 3 of 12: written now
            while len(bodies) < 3:
                await asyncio.sleep(0.005)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert bodies[2].count(b"event: ") == 3
