"""The journal loops: reflection, personality and self-reply.

Each tick finds the work that is owed (threads with messages newer than their last reflection or
profile; reflections without a reply), takes at most ``batch`` items and handles them one by one,
yielding to the event loop between them. One item is one run in ``runs`` (loop ``reflection`` /
``personality`` / ``self_reply``, trigger ``schedule``), carried by ``loops.lifecycle`` as the
heartbeat's are: start row and ``run_started``, LLM capacity (the limiter shared with the
heartbeat), one LLM call with a JSON schema, temperature 0.3 and bounded max_tokens, then the
reply decoded and validated (``loops.journal_prompts``) and the result stored with the run's
row in ONE transaction, ``run_finished``. The run's deadline counts from its start, the wait for
capacity included.

A failed call is a ``failed`` run (reason = ``LLMError.reason``, ``timeout``, or
``invalid_output`` for a reply that does not decode or validate) and the tick goes on with the
next item; items that keep failing are rotated to the back so they never starve the others. Only
a provider-wide outage (``unreachable``, ``model_missing``, ``auth``) ends a tick early, after
recording that one failed run: the next tick tries again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import msgspec

from ledger.records import (
    Loop,
    Message,
    NewProfile,
    NewReflection,
    Reason,
    Reflection,
    Run,
    RunOutcome,
    RunStatus,
    Thread,
    Trigger,
)
from ledger.storage.interface import Storage, Tx
from loops.clock import Clock
from loops.events import EventBus
from loops.journal_prompts import (
    PROFILE_SCHEMA,
    REFLECTION_SCHEMA,
    SELF_REPLY_SCHEMA,
    OutputError,
    ProfileOut,
    ReflectionOut,
    SelfReplyOut,
    parse_profile,
    parse_reflection,
    parse_self_reply,
    profile_messages,
    reflection_messages,
    self_reply_messages,
)
from loops.lifecycle import Chat, Finish, Lifecycle, RunPlan, Work
from loops.llm import ChatRequest, ChatResult, LLMProvider
from loops.supervisor import LoopKind, LoopState, interval_body

__all__ = ["BATCH", "JOURNAL_LOOPS", "JournalLoops", "journal_kinds"]

log = logging.getLogger(f"heartbeat.{__name__}")

JOURNAL_LOOPS: Final = (Loop.REFLECTION, Loop.PERSONALITY, Loop.SELF_REPLY)
BATCH: Final = 50
TEMPERATURE: Final = 0.3
MAX_TOKENS: Final[Mapping[Loop, int]] = {
    Loop.REFLECTION: 700,
    Loop.PERSONALITY: 500,
    Loop.SELF_REPLY: 600,
}
# Failures of the provider as a whole: the rest of the tick would only fail the same way.
_OUTAGE: Final = frozenset({Reason.UNREACHABLE, Reason.MODEL_MISSING, Reason.AUTH})
_SUMMARY_MAX: Final = 200

_Out = TypeVar("_Out", ReflectionOut, ProfileOut, SelfReplyOut)
_Key = TypeVar("_Key")
# Stores a validated output inside the run's transaction; gets the run's fields so far
# (model, tokens, timings) and returns the outcome that finishes the run.
_Write = Callable[[Tx, int, _Out, RunOutcome], RunOutcome]


class JournalLoops:
    def __init__(
        self,
        store: Storage,
        llm: Callable[[], LLMProvider],
        bus: EventBus,
        *,
        limiter: asyncio.Semaphore,
        model: Callable[[], str],
        window: int,
        deadline: float = 120.0,
        batch: int = BATCH,
    ) -> None:
        if window < 1 or batch < 1 or deadline <= 0:
            raise ValueError(
                f"window and batch must be >= 1 and deadline > 0,"
                f" got window={window}, batch={batch}, deadline={deadline}"
            )
        self.store = store
        self.model = model
        self.window = window
        self.deadline = deadline
        self.batch = batch
        self.lifecycle = Lifecycle(store, llm, bus, limiter)
        self._locks = {name: asyncio.Lock() for name in JOURNAL_LOOPS}
        self._cursor: dict[str, Any] = {}

    @property
    def ticks(self) -> dict[Loop, Callable[[], Awaitable[int]]]:
        """Each loop's tick by loop name."""
        return {
            Loop.REFLECTION: self.reflection_tick,
            Loop.PERSONALITY: self.personality_tick,
            Loop.SELF_REPLY: self.self_reply_tick,
        }

    # -- ticks ------------------------------------------------------------------------------
    async def reflection_tick(self) -> int:
        """Reflect on each thread with messages newer than its last reflection.

        Returns how many threads got a run (whatever its status).
        """
        async with self._locks[Loop.REFLECTION]:
            owed = await self.store.threads_needing_reflection(limit=self._scan)
            return await self._sweep(Loop.REFLECTION, owed, lambda t: t, self._reflect)

    async def personality_tick(self) -> int:
        """Write a new profile version for each thread with messages newer than its last one."""
        async with self._locks[Loop.PERSONALITY]:
            owed = await self.store.threads_needing_profile(limit=self._scan)
            return await self._sweep(Loop.PERSONALITY, owed, lambda t: t, self._profile)

    async def self_reply_tick(self) -> int:
        """Answer each reflection that has no reply yet."""
        async with self._locks[Loop.SELF_REPLY]:
            owed = await self.store.unanswered_reflections(limit=self._scan)
            return await self._sweep(Loop.SELF_REPLY, owed, lambda r: r.id, self._self_reply)

    @property
    def _scan(self) -> int:
        # Read more than one batch so items that keep failing can be rotated to the back.
        return self.batch * 20

    async def _sweep(
        self,
        loop: Loop,
        owed: Sequence[_Key],
        key: Callable[[_Key], Any],
        work: Callable[[_Key], Awaitable[Run | None]],
    ) -> int:
        """Handle up to ``batch`` items, starting after the last one the previous tick handled."""
        cursor = self._cursor.get(loop)
        if cursor is not None:
            after = [item for item in owed if key(item) > cursor]
            owed = after + [item for item in owed if key(item) <= cursor]
        handled = 0
        for item in owed[: self.batch]:
            self._cursor[loop] = key(item)
            try:
                run = await work(item)
            except Exception:  # one bad item never stops the tick
                log.exception("%s could not handle %r", _tag(loop), key(item))
                run = None
            if run is not None:
                handled += 1
                if run.status == RunStatus.FAILED and run.reason in _OUTAGE:
                    log.warning(
                        "%s LLM unavailable (%s); ending this tick, the next one tries again",
                        _tag(loop),
                        run.reason,
                    )
                    break
            await asyncio.sleep(0)  # let the event loop breathe between items
        return handled

    # -- the three kinds of work --------------------------------------------------------------
    async def _window(self, thread_id: str) -> tuple[Thread, list[Message]] | None:
        """The thread and its newest ``window`` messages; None when it has none."""
        thread = await self.store.get_thread(thread_id)
        messages = await self.store.messages(thread_id, limit=self.window)
        return (thread, messages) if messages else None

    async def _reflect(self, thread_id: str) -> Run | None:
        if (read := await self._window(thread_id)) is None:
            return None
        thread, messages = read
        last_id = messages[-1].id
        log.info(
            "[REFLECTION] Reflecting on thread %s (%d message(s), up to #%d)",
            thread_id,
            len(messages),
            last_id,
        )

        def add(tx: Tx, window: dict[str, Any], out: ReflectionOut) -> tuple[dict[str, Any], str]:
            new = NewReflection(**window, score=out.score, summary=out.summary, notable=out.notable)
            summary = f"score {out.score:.2f}: {out.summary}"
            return {"reflection_id": tx.add_reflection(new)}, summary

        write = _window_write(
            Loop.REFLECTION,
            thread_id,
            last_id,
            lambda tx: tx.reflected_up_to(thread_id),
            "this window was already reflected on",
            add,
        )
        entry = _Entry(
            reflection_messages(thread.title, messages), REFLECTION_SCHEMA, parse_reflection, write
        )
        return await self._run(Loop.REFLECTION, thread, entry)

    async def _profile(self, thread_id: str) -> Run | None:
        if (read := await self._window(thread_id)) is None:
            return None
        thread, messages = read
        last_id = messages[-1].id
        previous = await self.store.profile(thread_id)
        log.info(
            "[PERSONALITY] Updating the profile of thread %s (from version %d)",
            thread_id,
            previous.version if previous else 0,
        )

        def add(tx: Tx, window: dict[str, Any], out: ProfileOut) -> tuple[dict[str, Any], str]:
            version = tx.add_profile(
                NewProfile(**window, traits=out.traits, tone=out.tone, interests=out.interests)
            )
            summary = f"profile v{version}: {out.tone or '-'}; traits: {', '.join(out.traits)}"
            return {"version": version}, summary

        write = _window_write(
            Loop.PERSONALITY,
            thread_id,
            last_id,
            lambda tx: tx.profiled_up_to(thread_id),
            "a newer profile was already written",
            add,
        )
        entry = _Entry(
            profile_messages(thread.title, messages, previous), PROFILE_SCHEMA, parse_profile, write
        )
        return await self._run(Loop.PERSONALITY, thread, entry)

    async def _self_reply(self, reflection: Reflection) -> Run:
        thread = await self.store.get_thread(reflection.thread_id)
        log.info("[SELF_REPLY] Replying to reflection %d of thread %s", reflection.id, thread.id)

        def write(tx: Tx, run_id: int, out: SelfReplyOut, base: RunOutcome) -> RunOutcome:
            decision = {"reflection_id": reflection.id, "reply": out.reply}
            if not tx.add_self_reply(reflection.id, thread.id, out.reply, run_id):
                return _skipped_duplicate(base, decision, "the reflection was already answered")
            log.info("[SELF_REPLY] reflection %d answered: %s", reflection.id, _clip(out.reply))
            return _stored(
                base, Loop.SELF_REPLY, decision, {"reflection_id": reflection.id}, out.reply
            )

        entry = _Entry(
            self_reply_messages(thread.title, reflection),
            SELF_REPLY_SCHEMA,
            parse_self_reply,
            write,
        )
        return await self._run(Loop.SELF_REPLY, thread, entry)

    # -- one run ------------------------------------------------------------------------------
    async def _run(self, loop: Loop, thread: Thread, entry: _Entry[_Out]) -> Run:
        plan: RunPlan[None] = RunPlan(
            thread=thread,
            loop=loop,
            trigger=Trigger.SCHEDULE,
            model=self.model(),
            config=None,
            deadline=self.deadline,
        )
        started = await self.lifecycle.start(lambda tx: plan)
        if started is None:  # pragma: no cover - runs without a slot never collide
            raise RuntimeError(f"could not start a {plan.loop} run for thread {plan.thread_id!r}")
        return await self.lifecycle.run(started, entry)


@dataclass(frozen=True, slots=True)
class _Entry(Work[None, None, ChatResult, _Out], Generic[_Out]):
    """One journal item's steps: one call, the reply decoded, the output stored."""

    messages: list[dict[str, str]]
    schema: dict[str, Any]
    parse: Callable[[str], _Out]
    store: _Write[_Out]

    async def precheck(self, run: RunPlan[None]) -> None:
        return None

    async def ask(self, run: RunPlan[None], prepared: None, chat: Chat) -> ChatResult:
        request = ChatRequest(
            model=run.model,
            messages=self.messages,
            schema=self.schema,
            temperature=TEMPERATURE,
            max_tokens=MAX_TOKENS[run.loop],
        )
        return await chat(request)

    async def judge(self, run: RunPlan[None], answer: ChatResult) -> Finish[_Out]:
        try:
            out = self.parse(answer.text)
        except OutputError as err:
            log.warning("%s unusable reply for thread %s: %s", _tag(run.loop), run.thread_id, err)
            failed = RunOutcome(status=RunStatus.FAILED, reason=err.reason, error=err.message)
            return Finish(failed)
        return Finish(RunOutcome(status=RunStatus.OK), out)

    def write(self, tx: Tx, run: RunPlan[None], finish: Finish[_Out]) -> RunOutcome:
        if finish.effect is None:
            return finish.outcome
        return self.store(tx, run.id, finish.effect, finish.outcome)


def journal_kinds(
    loops: JournalLoops, clock: Clock, settings: Mapping[str, tuple[bool, float]]
) -> list[LoopKind]:
    """The three supervised loop kinds, named ``reflection``, ``personality``, ``self_reply``.

    ``settings`` maps each name to ``(enabled, seconds)``, e.g.
    ``{"reflection": (s.reflection.enabled, s.reflection.seconds), ...}``.
    """
    missing = [name for name in JOURNAL_LOOPS if name not in settings]
    if missing:
        raise ValueError(f"journal_kinds needs (enabled, seconds) for {', '.join(missing)}")
    kinds = []
    for name, tick in loops.ticks.items():
        enabled, seconds = settings[name]
        if seconds <= 0:
            raise ValueError(f"{name} interval must be > 0 seconds, got {seconds}")
        kinds.append(
            LoopKind(
                state=LoopState(name=name, enabled=bool(enabled), interval=float(seconds)),
                body=interval_body(clock, tick),
            )
        )
    return kinds


# -- helpers ---------------------------------------------------------------------------------


def _tag(loop: Loop) -> str:
    return f"[{loop.upper()}]"


def _skipped_duplicate(base: RunOutcome, decision: dict[str, Any], why: str) -> RunOutcome:
    return msgspec.structs.replace(
        base,
        status=RunStatus.SKIPPED,
        reason=Reason.DUPLICATE,
        decision=decision,
        summary=f"skipped: {why}",
    )


def _window_write(
    loop: Loop,
    thread_id: str,
    last_id: int,
    covered: Callable[[Tx], int],
    already: str,
    add: Callable[[Tx, dict[str, Any], _Out], tuple[dict[str, Any], str]],
) -> _Write[_Out]:
    """The write of a run whose output covers the thread's messages up to ``last_id``: skipped
    as a duplicate when ``covered`` (what the thread's entries already cover) reaches it, else
    ``add`` stores it from the window's fields and says what it wrote and how to summarise it."""

    def write(tx: Tx, run_id: int, out: _Out, base: RunOutcome) -> RunOutcome:
        decision = msgspec.structs.asdict(out)
        if covered(tx) >= last_id:
            return _skipped_duplicate(base, decision, already)
        window = {"thread_id": thread_id, "last_message_id": last_id, "run_id": run_id}
        executed, summary = add(tx, window, out)
        log.info("%s thread %s %s", _tag(loop), thread_id, _clip(summary))
        executed["last_message_id"] = last_id
        return _stored(base, loop, decision, executed, summary)

    return write


def _stored(
    base: RunOutcome, loop: Loop, decision: dict[str, Any], executed: dict[str, Any], summary: str
) -> RunOutcome:
    """The outcome of a run whose output was stored: what it wrote and a short summary."""
    return msgspec.structs.replace(
        base,
        status=RunStatus.OK,
        action=loop,
        decision=decision,
        executed=[{"type": loop, **executed}],
        summary=_clip(summary),
    )


def _clip(text: str, limit: int = _SUMMARY_MAX) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
