"""One run's life, the same for the heartbeat and for the journal loops.

A loop says what its runs do as a ``Work`` and what one run needs as a ``RunPlan``; ``Lifecycle``
does everything else, in one order for every loop::

    the start row (``running``), or the one the scheduler's claim wrote → publish ``run_started``
      → precheck: may end the run before it takes LLM capacity (e.g. an empty HEARTBEAT.md)
      → take LLM capacity (the limiter every loop shares; ``llm_waiting`` counts the queue)
      → ask: read the context, call the model through ``Chat`` (perhaps twice), decode
    release capacity
      → judge: validate the answer → a ``Finish``: the outcome and the effect to write
      → ONE transaction: the work writes its effect and the row is finished → ``run_finished``

One deadline covers everything from ``run_started`` to the judgement, the wait for capacity
included. The model's client is handed the time that remains (so it does not start a retry it
could not finish); when the deadline passes the run is cancelled and recorded ``failed`` with
reason ``timeout``, its error naming the deadline. An ``LLMError`` fails the run with the
error's reason. A step raises ``EndRun`` to end the run with an outcome of its own (a skip, a
refused or unusable reply). A crash anywhere, in the effect too, is recorded ``failed`` with
``internal_error`` and the loop goes on; a storage fault on the way (a read of a damaged file)
is no crash: ``failed`` with ``storage_fault``, its error the fault's message. A cancelled run
(shutdown) is recorded ``interrupted``, shielded from the cancellation. The finishing
transaction is never given up for a lock another process holds: it is tried again, each wait
logged, until it commits (the run's caller waits with it); only shutdown cuts that short: the
outcome, decision included, is then logged whole and kept in the ``spool`` directory, and the
next start records it (``loops.unrecorded``). A full disk or a read-only file is waited out the
same way (writes work again once space is freed); a fault that lasts (``StorageCorrupt``,
``StorageIOError``) is not: the outcome is kept the same way and the fault raised to the run's
caller.
Every outcome is recorded with the run's model and its token counts (0 for a run that got no
reply), and with the time of its LLM calls when it made any.

A start whose ``COMMIT`` is cut (``StorageUnavailable``) is reported failed to its caller, which
runs nothing, but may have committed its ``running`` row. The ids its transaction inserted are
kept, and once the database answers (tried at once, then with a back-off, and in the next
start's own transaction) those of them still ``running`` are ended ``interrupted`` with reason
``start_unconfirmed`` and published: the thread is free again (no ``run_in_flight``, no
``overlap``), and a caller told the start failed may simply try again.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Generic, TypeVar

import msgspec

from ledger.errors import (
    HeartbeatError,
    RunEnded,
    StorageBusy,
    StorageFault,
    StorageUnavailable,
    StoreClosed,
)
from ledger.records import Loop, Reason, Run, RunOutcome, RunStatus, Thread, Trigger, run_to_dict
from ledger.redact import redact
from ledger.storage.interface import RunStart, Storage, Tx
from loops.events import EventBus
from loops.llm import ChatRequest, ChatResult, LLMError, LLMProvider, TokenSink
from loops.outage import waits_for
from loops.unrecorded import keep

__all__ = [
    "Chat",
    "EndRun",
    "Finish",
    "Lifecycle",
    "RunPlan",
    "Work",
    "publish_finished",
    "start_row",
]

log = logging.getLogger(f"heartbeat.{__name__}")

FINISH_RETRY_FIRST = 1.0  # seconds before the finishing write is tried again after a lock
FINISH_RETRY_MAX = 10.0  # the longest wait between two tries
UNCONFIRMED_RETRY_FIRST = 1.0  # seconds before ending unconfirmed starts is tried again
UNCONFIRMED_RETRY_MAX = 10.0

C = TypeVar("C")  # the loop's own settings of a run (the heartbeat: the thread's config)
P = TypeVar("P")  # what the precheck hands on to the ask step
A = TypeVar("A")  # what the ask step hands on to the judge
E = TypeVar("E")  # the effect the finishing transaction writes


class RunPlan(msgspec.Struct, Generic[C], frozen=True, kw_only=True):
    """Everything one run needs, built once before it starts; ``run_id`` once its row exists."""

    thread: Thread
    loop: Loop
    trigger: Trigger
    model: str
    config: C
    deadline: float  # seconds, from ``run_started`` to the judgement
    dry_run: bool = False
    slot: float | None = None
    run_id: int | None = None
    event: str | None = None  # the text of what woke the run (a wake, a Ledger event)

    @property
    def thread_id(self) -> str:
        return self.thread.id

    @property
    def id(self) -> int:
        """The run's id; only a started plan has one."""
        if self.run_id is None:
            raise RuntimeError(f"the {self.loop} run of thread {self.thread.id!r} has no row yet")
        return self.run_id


class Finish(msgspec.Struct, Generic[E], frozen=True):
    """How a run finishes: the outcome recorded, and the effect written with it (if any)."""

    outcome: RunOutcome
    effect: E | None = None


class EndRun(HeartbeatError, code="run_ended"):
    """Raised by a step to end its run now with ``outcome``. A result rather than an error:
    the outcome is recorded as given (it never reaches the HTTP edge)."""

    def __init__(self, outcome: RunOutcome) -> None:
        super().__init__(outcome.reason or outcome.status)
        self.outcome = outcome


class Chat:
    """The model as one run calls it: each call gets the time left before the run's deadline
    (``expiry``, in event-loop time); the time spent in calls and the last reply are kept for
    the run's row."""

    __slots__ = ("_expiry", "_llm", "_loop", "ms", "reply")

    def __init__(self, llm: Callable[[], LLMProvider], expiry: float) -> None:
        self._llm, self._expiry = llm, expiry
        self._loop = asyncio.get_running_loop()
        self.ms: float | None = None  # None until the model is called
        self.reply: ChatResult | None = None  # the last call's reply, None if it failed

    async def __call__(self, request: ChatRequest, on_token: TokenSink | None = None) -> ChatResult:
        self.reply = None
        # The client's own deadline falls at the run's, never before: when both pass, the
        # run's is the one recorded.
        remaining = self._expiry - self._loop.time()
        started = time.perf_counter()
        try:
            self.reply = await self._llm().chat(request, on_token=on_token, deadline=remaining)
        finally:
            self.ms = (self.ms or 0.0) + (time.perf_counter() - started) * 1000
        return self.reply

    def stamp(self, outcome: RunOutcome, model: str) -> RunOutcome:
        """``outcome`` with the run's model and tokens (0 when no reply came: a silent run
        costs nothing) and, when the model was called, its time."""
        reply = self.reply
        return msgspec.structs.replace(
            outcome,
            model=model,
            llm_ms=None if self.ms is None else round(self.ms, 1),
            prompt_tokens=0 if reply is None else reply.prompt_tokens,
            completion_tokens=0 if reply is None else reply.completion_tokens,
        )


class Work(abc.ABC, Generic[C, P, A, E]):
    """What one loop's runs do: the steps ``Lifecycle.run`` calls, in order."""

    @abc.abstractmethod
    async def precheck(self, run: RunPlan[C]) -> P:
        """Before capacity is taken; raise ``EndRun`` to end the run without the model."""

    @abc.abstractmethod
    async def ask(self, run: RunPlan[C], prepared: P, chat: Chat) -> A:
        """With LLM capacity held: read the context and ask the model through ``chat``."""

    @abc.abstractmethod
    async def judge(self, run: RunPlan[C], answer: A) -> Finish[E]:
        """After capacity is released: validate the answer."""

    @abc.abstractmethod
    def write(self, tx: Tx, run: RunPlan[C], finish: Finish[E]) -> RunOutcome:
        """In the finishing transaction, for every outcome: write the effect (when there is
        one) and return the outcome the row records."""

    def effect_refused(
        self, run: RunPlan[C], finish: Finish[E], exc: Exception
    ) -> RunOutcome | None:
        """The outcome to record when ``write`` raised ``exc`` for a reason of the product (it
        is then called again without the effect); None for a crash (``internal_error``)."""
        return None

    async def finished(self, run: RunPlan[C], row: Run, finish: Finish[E]) -> None:
        """After ``run_finished`` was published (e.g. to notify a channel)."""


def start_row(tx: Tx, plan: RunPlan[C], owner: str | None) -> RunPlan[C] | None:
    """Write the plan's ``running`` row. Returns the plan with its run id, or None when the
    (thread, loop, slot) already has a row (another process claimed the slot)."""
    run_id = tx.start_run(
        RunStart(
            thread_id=plan.thread.id,
            loop=plan.loop,
            trigger=plan.trigger,
            slot=plan.slot,
            model=plan.model,
            dry_run=plan.dry_run,
            owner=owner,
            event_text=plan.event,
        )
    )
    return None if run_id is None else msgspec.structs.replace(plan, run_id=run_id)


def publish_finished(bus: EventBus, row: Run) -> None:
    """A finished row's ``run_finished``: its data and its event id (the run id) are the same
    whichever process publishes it (the one that carried it, a relay, the one that ended it)."""
    bus.publish("run_finished", run_to_dict(row), id=row.id, thread_id=row.thread_id)


def _failed(reason: Reason, error: str) -> Finish[E]:
    return Finish(RunOutcome(status=RunStatus.FAILED, reason=reason, error=error))


def _crashed(exc: BaseException) -> RunOutcome:
    error = redact(f"{type(exc).__name__}: {exc}")
    return RunOutcome(status=RunStatus.FAILED, reason=Reason.INTERNAL_ERROR, error=error)


def _finish_tx(plan: RunPlan[C], work: Work[C, P, A, E], finish: Finish[E], tx: Tx) -> Run:
    return tx.finish_run(plan.id, work.write(tx, plan, finish))


def _end_unconfirmed(run_ids: tuple[int, ...], owner: str, tx: Tx) -> list[Run]:
    return tx.end_unconfirmed_starts(run_ids, owner)


class Lifecycle:
    """Starts, carries and finishes the runs of one loop family (the heartbeat, the journal)."""

    def __init__(
        self,
        store: Storage,
        llm: Callable[[], LLMProvider],
        bus: EventBus,
        limiter: asyncio.Semaphore,
    ) -> None:
        self.store = store
        self.llm = llm
        self.bus = bus
        self.limiter = limiter
        self.llm_waiting = 0  # runs waiting for LLM capacity now
        # where an outcome is kept when shutdown cuts its wait for a lock (``loops.unrecorded``)
        self.spool: Path | None = None
        self.observers: list[Callable[[Run], None]] = []  # told every finished row (metrics)
        self.lost_finishes = 0  # runs whose finish came after another replica ended them
        # rows inserted by starts reported failed (their COMMIT cut): ended once the database
        # answers, by ``_resolver`` or by the next start
        self.unconfirmed: set[int] = set()
        self._resolver: asyncio.Task[None] | None = None

    async def start(self, build: Callable[[Tx], RunPlan[C]]) -> RunPlan[C] | None:
        """Build the plan and write its start row in one transaction (see ``start_row``); the
        rows of earlier starts reported failed are ended in it first."""
        owner = self.store.owner
        pending = tuple(sorted(self.unconfirmed))
        inserted: list[int] = []  # every try's row id (a cut transaction may be made again)

        def tx_start(tx: Tx) -> tuple[list[Run], RunPlan[C] | None]:
            ended = tx.end_unconfirmed_starts(pending, owner) if pending else []
            plan = start_row(tx, build(tx), owner)
            if plan is not None:
                inserted.append(plan.id)
            return ended, plan

        try:
            ended, plan = await self.store.write(tx_start)
        except StorageUnavailable:
            if inserted:  # it may have committed: the caller runs nothing, so end it
                self.unconfirmed.update(inserted)
                if self._resolver is None or self._resolver.done():
                    self._resolver = asyncio.create_task(
                        self._resolve(), name="end-unconfirmed-starts"
                    )
            raise
        self.unconfirmed.difference_update(pending)
        self._ended_unconfirmed(ended)
        return plan

    async def _resolve(self) -> None:
        """End the unconfirmed starts' rows as soon as the database answers."""
        delay = 0.0
        while self.unconfirmed:
            await asyncio.sleep(delay)
            pending, owner = tuple(sorted(self.unconfirmed)), self.store.owner
            try:
                ended = await self.store.write(partial(_end_unconfirmed, pending, owner))
            except StorageBusy:
                delay = min(max(delay * 2, UNCONFIRMED_RETRY_FIRST), UNCONFIRMED_RETRY_MAX)
                continue
            except StoreClosed:  # closing marks them interrupted (shutdown)
                return
            self.unconfirmed.difference_update(pending)
            self._ended_unconfirmed(ended)

    def _ended_unconfirmed(self, rows: list[Run]) -> None:
        for row in rows:
            log.warning(
                "[%s] run %d for thread %s was started after all by a start reported failed"
                " (its COMMIT cut), which nothing runs: recorded interrupted (%s)",
                row.loop.upper(),
                row.id,
                row.thread_id,
                row.reason,
            )
            publish_finished(self.bus, row)
            for observe in self.observers:
                observe(row)

    async def run(self, plan: RunPlan[C], work: Work[C, P, A, E]) -> Run:
        """Carry a started run to its end; returns the finished row."""
        tag = f"[{plan.loop.upper()}]"
        started: dict[str, object] = {
            "run_id": plan.id,
            "thread_id": plan.thread_id,
            "loop": plan.loop,
            "trigger": plan.trigger,
            "model": plan.model,
            "dry_run": plan.dry_run,
        }
        if plan.event is not None:  # what woke the run, when something did
            started["event_text"] = plan.event
        self.bus.publish("run_started", started, thread_id=plan.thread_id)
        expiry = asyncio.get_running_loop().time() + plan.deadline
        chat = Chat(self.llm, expiry)
        deadline = asyncio.timeout_at(expiry)
        finish: Finish[E]
        try:
            async with deadline:
                finish = await self._settle(plan, work, chat, tag)
        except asyncio.CancelledError:
            await asyncio.shield(self.store.interrupt_run(plan.id, plan.model))
            raise
        except Exception as exc:  # one bad run never stops the loop
            if isinstance(exc, TimeoutError) and deadline.expired():
                log.warning("%s run %d for thread %s timed out", tag, plan.id, plan.thread_id)
                error = f"the run passed its deadline of {plan.deadline:g} s and was cancelled"
                finish = _failed(Reason.TIMEOUT, error)
            elif isinstance(exc, StorageFault):  # no bug: the storage logs it, once
                log.warning("%s run %d for thread %s failed: %s", tag, plan.id, plan.thread_id, exc)
                finish = _failed(Reason.STORAGE_FAULT, exc.message)
            else:
                log.exception("%s run %d for thread %s crashed", tag, plan.id, plan.thread_id)
                finish = Finish(_crashed(exc))
        return await self._finish(plan, work, chat, finish)

    async def _finish(
        self, plan: RunPlan[C], work: Work[C, P, A, E], chat: Chat, finish: Finish[E]
    ) -> Run:
        """The effect and the finished row in one transaction (if writing the effect fails, the
        row alone, with the failure's outcome), then ``run_finished`` and the work's last step."""
        finish = Finish(chat.stamp(finish.outcome, plan.model), finish.effect)
        try:
            row = await self._commit(plan, work, finish)
        except RunEnded as ended:
            return await self._lost(plan, finish.outcome, ended)
        except StorageFault:  # kept and logged by _commit; another try meets the same fault
            raise
        except Exception as exc:
            refused = work.effect_refused(plan, finish, exc)
            if refused is None:
                log.exception(
                    "[%s] run %d for thread %s could not write its result",
                    plan.loop.upper(),
                    plan.id,
                    plan.thread_id,
                )
                refused = _crashed(exc)
            finish = Finish(chat.stamp(refused, plan.model))
            try:
                row = await self._commit(plan, work, finish)
            except RunEnded as ended:
                return await self._lost(plan, finish.outcome, ended)
        publish_finished(self.bus, row)
        for observe in self.observers:
            observe(row)
        await work.finished(plan, row, finish)
        return row

    async def _lost(self, plan: RunPlan[C], outcome: RunOutcome, ended: RunEnded) -> Run:
        """The run was ended by another replica before it finished (this replica's lease ran
        out while it was alive: paused, cut off): its outcome and effect are not written, the
        row keeps what the other replica wrote (its ``run_finished`` comes through the relay).
        The late outcome is logged whole; returns the row as it stands."""
        self.lost_finishes += 1
        log.error(
            "[%s] run %d for thread %s finished after it was marked %s by another replica"
            " (this replica's lease had run out); its outcome is not recorded, its effect not"
            " written: %s",
            plan.loop.upper(),
            plan.id,
            plan.thread_id,
            ended.status,
            msgspec.json.encode(outcome).decode(),
        )
        return await self.store.get_run(plan.id)

    async def _commit(self, plan: RunPlan[C], work: Work[C, P, A, E], finish: Finish[E]) -> Run:
        """The finishing transaction, tried again for as long as another process holds the
        database locked, its disk is full or its file read-only (each wait logged): the outcome
        is never dropped for these. Cut short by shutdown, or by a fault that lasts (a damaged
        file, the disk's I/O); the outcome is then logged whole and kept in ``spool``."""
        tag, waited, delay, locked, ended = plan.loop.upper(), 0.0, FINISH_RETRY_FIRST, False, ""
        try:
            while True:
                try:
                    row = await self.store.write(partial(_finish_tx, plan, work, finish))
                except (StorageBusy, StorageFault) as exc:
                    if isinstance(exc, StorageFault) and exc.lasting:
                        raise
                    locked = True
                    awaited, ended = waits_for(exc)
                    log.warning(
                        "[%s] run %d for thread %s waits for the database %s to record its"
                        " %s outcome (%.0f s so far, next try in %.0f s)",
                        tag,
                        plan.id,
                        plan.thread_id,
                        awaited,
                        finish.outcome.status,
                        waited,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    waited += delay
                    delay = min(delay * 2, FINISH_RETRY_MAX)
                    continue
                if locked:
                    log.info("[%s] run %d recorded after %s", tag, plan.id, ended)
                return row
        except StorageFault as fault:  # a damaged file, the disk's I/O: no wait ends it
            self._keep(plan, finish.outcome, f"could not be recorded ({fault.code})")
            raise
        except (asyncio.CancelledError, StoreClosed):
            if locked:
                self._keep(plan, finish.outcome, f"stopped before {ended}")
            raise

    def _keep(self, plan: RunPlan[C], outcome: RunOutcome, why: str) -> None:
        """The outcome cannot be written (shutdown came before the lock freed, a storage
        fault): log it whole, keep it for the next start."""
        kept: Path | str = "no file"
        if self.spool is not None:
            try:
                kept = keep(self.spool, plan.id, outcome)
            except OSError as exc:
                kept = f"no file ({exc})"
        log.error(
            "[%s] run %d for thread %s %s; its outcome, kept in %s for the next start: %s",
            plan.loop.upper(),
            plan.id,
            plan.thread_id,
            why,
            kept,
            msgspec.json.encode(outcome).decode(),
        )

    async def _settle(
        self, plan: RunPlan[C], work: Work[C, P, A, E], chat: Chat, tag: str
    ) -> Finish[E]:
        """precheck → capacity → ask → release → judge, or how the run ended on the way."""
        try:
            prepared = await work.precheck(plan)
            # Capacity before the context: runs queued behind the limit do not crowd the
            # readers (the API reads there too), and the context is fresh when the model reads it.
            self.llm_waiting += 1
            try:
                await self.limiter.acquire()
            finally:
                self.llm_waiting -= 1
            try:
                answer = await work.ask(plan, prepared, chat)
            finally:
                self.limiter.release()
            return await work.judge(plan, answer)
        except EndRun as end:
            return Finish(end.outcome)
        except LLMError as err:
            message = redact(err.message)  # it may quote the server's URL, credentials too
            log.warning("%s LLM call failed for thread %s: %s", tag, plan.thread_id, message)
            return _failed(Reason(err.reason), message)
