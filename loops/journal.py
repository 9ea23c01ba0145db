"""The journal loops of SPEC §9: reflection, personality and self-reply.

Each tick finds the work that is owed (threads with messages newer than their last reflection or
profile; reflections without a reply), takes at most ``batch`` items and handles them one by one,
yielding to the event loop between them. One item is one run in ``runs`` (loop ``reflection`` /
``personality`` / ``self_reply``, trigger ``schedule``)::

    wait for LLM capacity (the limiter shared with the heartbeat)
      → start the run (``running``), publish ``run_started``
      → one LLM call with a JSON schema, temperature 0.3, bounded max_tokens, under a deadline
    release capacity
      → decode and validate (``loops.journal_prompts``)
      → store the result and finish the run in ONE transaction, publish ``run_finished``

A failed call is a ``failed`` run (reason = ``LLMError.reason``, ``timeout``, or
``invalid_output`` for a reply that does not decode or validate) and the tick goes on with the
next item; items that keep failing are rotated to the back so they never starve the others. Only
a provider-wide outage (``unreachable``, ``model_missing``, ``auth``) ends a tick early, after
recording that one failed run: the next tick tries again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, Final, TypeVar

import msgspec

from ledger.records import Reflection, Run, RunOutcome, run_to_dict
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
from loops.llm import ChatRequest, ChatResult, LLMError, LLMProvider
from loops.supervisor import LoopKind, LoopState, interval_body

__all__ = [
    "BATCH",
    "LOOPS",
    "PERSONALITY",
    "REFLECTION",
    "SELF_REPLY",
    "JournalLoops",
    "journal_kinds",
]

log = logging.getLogger("heartbeat")

REFLECTION: Final = "reflection"
PERSONALITY: Final = "personality"
SELF_REPLY: Final = "self_reply"
LOOPS: Final = (REFLECTION, PERSONALITY, SELF_REPLY)
TRIGGER: Final = "schedule"
BATCH: Final = 50
TEMPERATURE: Final = 0.3
MAX_TOKENS: Final[Mapping[str, int]] = {REFLECTION: 700, PERSONALITY: 500, SELF_REPLY: 600}
# Failures of the provider as a whole: the rest of the tick would only fail the same way.
_OUTAGE: Final = frozenset({"unreachable", "model_missing", "auth"})
_TAG: Final[Mapping[str, str]] = {
    REFLECTION: "[REFLECTION]",
    PERSONALITY: "[PERSONALITY]",
    SELF_REPLY: "[SELF_REPLY]",
}
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
        clock: Clock,
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
        self._llm = llm
        self.bus = bus
        self.clock = clock
        self.limiter = limiter
        self.model = model
        self.window = window
        self.deadline = deadline
        self.batch = batch
        self._locks = {name: asyncio.Lock() for name in LOOPS}
        self._cursor: dict[str, Any] = {}

    @property
    def ticks(self) -> dict[str, Callable[[], Awaitable[int]]]:
        """Each loop's tick by loop name."""
        return {
            REFLECTION: self.reflection_tick,
            PERSONALITY: self.personality_tick,
            SELF_REPLY: self.self_reply_tick,
        }

    # -- ticks ------------------------------------------------------------------------------
    async def reflection_tick(self) -> int:
        """Reflect on each thread with messages newer than its last reflection.

        Returns how many threads got a run (whatever its status).
        """
        async with self._locks[REFLECTION]:
            owed = await self.store.threads_needing_reflection(limit=self._scan)
            return await self._sweep(REFLECTION, owed, lambda t: t, self._reflect)

    async def personality_tick(self) -> int:
        """Write a new profile version for each thread with messages newer than its last one."""
        async with self._locks[PERSONALITY]:
            owed = await self.store.threads_needing_profile(limit=self._scan)
            return await self._sweep(PERSONALITY, owed, lambda t: t, self._profile)

    async def self_reply_tick(self) -> int:
        """Answer each reflection that has no reply yet."""
        async with self._locks[SELF_REPLY]:
            owed = await self.store.unanswered_reflections(limit=self._scan)
            return await self._sweep(SELF_REPLY, owed, lambda r: r.id, self._self_reply)

    @property
    def _scan(self) -> int:
        # Read more than one batch so items that keep failing can be rotated to the back.
        return self.batch * 20

    async def _sweep(
        self,
        loop: str,
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
                log.exception("%s could not handle %r", _TAG[loop], key(item))
                run = None
            if run is not None:
                handled += 1
                if run.status == "failed" and run.reason in _OUTAGE:
                    log.warning(
                        "%s LLM unavailable (%s); ending this tick, the next one tries again",
                        _TAG[loop],
                        run.reason,
                    )
                    break
            await asyncio.sleep(0)  # let the event loop breathe between items
        return handled

    # -- the three kinds of work --------------------------------------------------------------
    async def _reflect(self, thread_id: str) -> Run | None:
        thread = await self.store.get_thread(thread_id)
        messages = await self.store.messages(thread_id, limit=self.window)
        if not messages:
            return None
        last_id = messages[-1].id
        log.info(
            "[REFLECTION] Reflecting on thread %s (%d message(s), up to #%d)",
            thread_id,
            len(messages),
            last_id,
        )

        def write(tx: Tx, run_id: int, out: ReflectionOut, base: RunOutcome) -> RunOutcome:
            decision = msgspec.structs.asdict(out)
            if tx.reflected_up_to(thread_id) >= last_id:
                return _skipped_duplicate(base, decision, "this window was already reflected on")
            reflection_id = tx.add_reflection(
                thread_id, out.score, out.summary, out.notable, last_id, run_id
            )
            summary = f"score {out.score:.2f}: {out.summary}"
            log.info("[REFLECTION] thread %s %s", thread_id, _clip(summary))
            return msgspec.structs.replace(
                base,
                status="ok",
                action=REFLECTION,
                decision=decision,
                executed=[
                    {"type": REFLECTION, "reflection_id": reflection_id, "last_message_id": last_id}
                ],
                summary=_clip(summary),
            )

        return await self._unit(
            REFLECTION,
            thread_id,
            reflection_messages(thread.title, messages),
            REFLECTION_SCHEMA,
            parse_reflection,
            write,
        )

    async def _profile(self, thread_id: str) -> Run | None:
        thread = await self.store.get_thread(thread_id)
        messages = await self.store.messages(thread_id, limit=self.window)
        if not messages:
            return None
        last_id = messages[-1].id
        previous = await self.store.profile(thread_id)
        log.info(
            "[PERSONALITY] Updating the profile of thread %s (from version %d)",
            thread_id,
            previous.version if previous else 0,
        )

        def write(tx: Tx, run_id: int, out: ProfileOut, base: RunOutcome) -> RunOutcome:
            decision = msgspec.structs.asdict(out)
            if tx.profiled_up_to(thread_id) >= last_id:
                return _skipped_duplicate(base, decision, "a newer profile was already written")
            version = tx.add_profile(
                thread_id, out.traits, out.tone, out.interests, last_id, run_id
            )
            summary = f"profile v{version}: {out.tone or '-'}; traits: {', '.join(out.traits)}"
            log.info("[PERSONALITY] thread %s %s", thread_id, _clip(summary))
            return msgspec.structs.replace(
                base,
                status="ok",
                action=PERSONALITY,
                decision=decision,
                executed=[{"type": PERSONALITY, "version": version, "last_message_id": last_id}],
                summary=_clip(summary),
            )

        return await self._unit(
            PERSONALITY,
            thread_id,
            profile_messages(thread.title, messages, previous),
            PROFILE_SCHEMA,
            parse_profile,
            write,
        )

    async def _self_reply(self, reflection: Reflection) -> Run:
        thread = await self.store.get_thread(reflection.thread_id)
        log.info("[SELF_REPLY] Replying to reflection %d of thread %s", reflection.id, thread.id)

        def write(tx: Tx, run_id: int, out: SelfReplyOut, base: RunOutcome) -> RunOutcome:
            decision = {"reflection_id": reflection.id, "reply": out.reply}
            if not tx.add_self_reply(reflection.id, thread.id, out.reply, run_id):
                return _skipped_duplicate(base, decision, "the reflection was already answered")
            log.info("[SELF_REPLY] reflection %d answered: %s", reflection.id, _clip(out.reply))
            return msgspec.structs.replace(
                base,
                status="ok",
                action=SELF_REPLY,
                decision=decision,
                executed=[{"type": SELF_REPLY, "reflection_id": reflection.id}],
                summary=_clip(out.reply),
            )

        return await self._unit(
            SELF_REPLY,
            thread.id,
            self_reply_messages(thread.title, reflection),
            SELF_REPLY_SCHEMA,
            parse_self_reply,
            write,
        )

    # -- one run ------------------------------------------------------------------------------
    async def _unit(
        self,
        loop: str,
        thread_id: str,
        messages: list[dict[str, str]],
        schema: dict[str, Any],
        parse: Callable[[str], _Out],
        write: _Write[_Out],
    ) -> Run:
        """One recorded run: capacity → start → LLM → validate → store and finish → events."""
        request = ChatRequest(
            model=self.model(),
            messages=messages,
            schema=schema,
            temperature=TEMPERATURE,
            max_tokens=MAX_TOKENS[loop],
        )
        run_id: int | None = None
        try:
            async with self.limiter:
                run_id = await self._start(loop, thread_id, request.model)
                answer = await self._ask(loop, thread_id, request)
            if isinstance(answer, RunOutcome):
                outcome = answer
                await self.store.write(lambda tx: tx.finish_run(run_id, outcome))
            else:
                result, base = answer
                out: _Out | None = None
                try:
                    out = parse(result.text)
                except OutputError as err:
                    log.warning("%s unusable reply for thread %s: %s", _TAG[loop], thread_id, err)
                    base = msgspec.structs.replace(
                        base, status="failed", reason=err.reason, error=err.message
                    )
                await self.store.write(partial(_finish, run_id, base, out, write))
        except asyncio.CancelledError:
            if run_id is not None:
                await asyncio.shield(self.store.interrupt_run(run_id, request.model))
            raise
        except Exception as exc:
            if run_id is None:
                raise
            log.exception("%s run %d for thread %s crashed", _TAG[loop], run_id, thread_id)
            crashed = RunOutcome(
                status="failed",
                reason="internal_error",
                model=request.model,
                error=f"{type(exc).__name__}: {exc}",
            )
            await self.store.write(lambda tx: tx.finish_run(run_id, crashed))
        run = await self.store.get_run(run_id)
        self.bus.publish("run_finished", run_to_dict(run), id=run.id, thread_id=thread_id)
        return run

    async def _start(self, loop: str, thread_id: str, model: str) -> int:
        owner = self.store.owner
        run_id = await self.store.write(
            lambda tx: tx.start_run(thread_id, loop, TRIGGER, model=model, owner=owner)
        )
        if run_id is None:  # pragma: no cover - runs without a slot never collide
            raise RuntimeError(f"could not start a {loop} run for thread {thread_id!r}")
        self.bus.publish(
            "run_started",
            {
                "run_id": run_id,
                "thread_id": thread_id,
                "loop": loop,
                "trigger": TRIGGER,
                "model": model,
                "dry_run": False,
            },
            thread_id=thread_id,
        )
        return run_id

    async def _ask(
        self, loop: str, thread_id: str, request: ChatRequest
    ) -> tuple[ChatResult, RunOutcome] | RunOutcome:
        """The reply with the run's fields so far, or the failed outcome."""
        t0 = time.perf_counter()

        def elapsed() -> float:
            return round((time.perf_counter() - t0) * 1000, 1)

        try:
            async with asyncio.timeout(self.deadline):
                result = await self._llm().chat(request, deadline=self.deadline)
        except TimeoutError:
            log.warning("%s LLM call for thread %s timed out", _TAG[loop], thread_id)
            return RunOutcome(
                status="failed",
                reason="timeout",
                model=request.model,
                error=f"the LLM call passed its deadline of {self.deadline:g} s and was cancelled",
                llm_ms=elapsed(),
            )
        except LLMError as err:
            log.warning("%s LLM call failed for thread %s: %s", _TAG[loop], thread_id, err)
            return RunOutcome(
                status="failed",
                reason=err.reason,
                model=request.model,
                error=err.message,
                llm_ms=elapsed(),
            )
        return result, RunOutcome(
            status="ok",
            model=request.model,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            llm_ms=elapsed(),
        )


def journal_kinds(
    loops: JournalLoops, clock: Clock, settings: Mapping[str, tuple[bool, float]]
) -> list[LoopKind]:
    """The three supervised loop kinds, named ``reflection``, ``personality``, ``self_reply``.

    ``settings`` maps each name to ``(enabled, seconds)``, e.g.
    ``{"reflection": (s.reflection.enabled, s.reflection.seconds), ...}``.
    """
    missing = [name for name in LOOPS if name not in settings]
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


def _finish(run_id: int, base: RunOutcome, out: _Out | None, write: _Write[_Out], tx: Tx) -> None:
    """Store a journal run's result and finish its row, in one transaction."""
    tx.finish_run(run_id, base if out is None else write(tx, run_id, out, base))


def _skipped_duplicate(base: RunOutcome, decision: dict[str, Any], why: str) -> RunOutcome:
    return msgspec.structs.replace(
        base, status="skipped", reason="duplicate", decision=decision, summary=f"skipped: {why}"
    )


def _clip(text: str, limit: int = _SUMMARY_MAX) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
