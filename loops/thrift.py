"""The heartbeat's thrift: whether a beat may call the model, and what the beat taught it.

Before a beat takes LLM capacity, ``BeatGate.admit`` reads the thread's memo and the beat's
inputs and ends the beat, recorded ``skipped``, when calling the model would be waste:

- ``paused``: the thread paused itself after failures of one kind in a row; it probes the LLM's
  cheap health check once its back-off has passed (resuming when it answers) and resumes at
  once when its config changed;
- ``user_active``: the user wrote in the thread within ``quiet_after_user_seconds``; the gate
  tells ``on_defer`` when the thread will have been quiet that long (the scheduler arms the
  deferred beat then), and the skip gives back the wakes held for the beat, for the next one;
- ``repeated``: the breaker tripped on these inputs (the same decision ``REPEAT_LIMIT`` times);
- ``unchanged``: nothing the decision reads changed since the last decided beat (or, when the
  rules hold of each post on its own and that beat did nothing, only posts of others left the
  feed: ``loops.fingerprint.unchanged``);
- ``budget``: the beat would take the thread's tokens today past ``daily_token_budget``.

Manual runs always decide, except past the breaker; wakes skip only for the breaker, a pause
and the budget. In the run's finishing transaction ``BeatGate.settle`` stores what the beat
taught the memo: the fingerprint and decision of a decided beat, the run of failures and a
pause, and it stops the effect of a decision that trips the breaker.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import msgspec

from ledger.config import HeartbeatConfig
from ledger.limits import REPEAT_LIMIT, WAKE_EVENTS_MAX
from ledger.records import BeatMemo, Reason, RunContext, RunOutcome, RunStatus, Trigger, iso
from ledger.storage.interface import USER, Storage, Tx
from loops.clock import Clock
from loops.fingerprint import Inputs, inputs, unchanged
from loops.lifecycle import EndRun, RunPlan
from loops.llm import LLMProvider
from loops.procedure import pick_strategy
from loops.scope import scope_of
from loops.spend import (
    PAUSING_FAILURES,
    backoff_seconds,
    day_start,
    decision_key,
    last_user_at,
    over_budget,
    quiet_until,
    should_pause,
    user_active,
)

__all__ = ["Admission", "BeatGate"]

log = logging.getLogger("heartbeat")

_DECIDED = frozenset({RunStatus.OK, RunStatus.DRY_RUN, RunStatus.REJECTED})
_SCHEDULED = frozenset({Trigger.SCHEDULE, Trigger.CATCH_UP})


@dataclass(frozen=True)
class Admission:
    """What ``admit`` learned about a beat: the memo as it stands now, the inputs' fingerprint
    (None when the beat ended before it was computed) and what else the fingerprint reads."""

    memo: BeatMemo
    fingerprint: Inputs | None = None
    rules: str = ""
    events: tuple[str, ...] = ()
    stored: BeatMemo | None = None  # the memo as read (an unchanged one is not written again)


def _skip(reason: Reason, summary: str) -> EndRun:
    return EndRun(RunOutcome(status=RunStatus.SKIPPED, reason=reason, summary=summary))


class BeatGate:
    """Admits heartbeat beats and settles their memo (see the module's docstring)."""

    def __init__(
        self,
        store: Storage,
        clock: Clock,
        llm: Callable[[], LLMProvider],
        *,
        window: int,
        ledger_feed: int,
    ) -> None:
        self.store, self.clock, self.llm = store, clock, llm
        self.window, self.ledger_feed = window, ledger_feed
        self._admitted: dict[int, Admission] = {}  # run id -> its admission, until settled
        # told (thread id, quiet end) when a beat yields to the user (the scheduler's ``defer``)
        self.on_defer: Callable[[str, float], None] | None = None

    async def admit(
        self, run: RunPlan[HeartbeatConfig], rules: str, events: tuple[str, ...] = ()
    ) -> None:
        """End the beat (``EndRun``) when it must not call the model; else remember its
        fingerprint for ``settle``. ``events``: text the beat was woken with, an input too."""
        stored, ctx = await self.store.beat_inputs(
            run.thread_id, messages=self.window, posts=self.ledger_feed
        )
        memo = await self._resume_or_stay(run, stored)
        cfg, trigger, now = run.config, run.trigger, self.clock.now()
        self._admitted[run.id] = Admission(memo, stored=stored)
        if trigger in _SCHEDULED:
            last_user = last_user_at(ctx.messages, USER)
            if user_active(now, last_user, cfg.quiet_after_user_seconds):
                until = quiet_until(last_user, cfg.quiet_after_user_seconds)
                if until is not None and self.on_defer is not None:
                    self.on_defer(run.thread_id, until)
                raise _skip(
                    Reason.USER_ACTIVE,
                    "skipped: the user wrote in the thread"
                    f" less than {cfg.quiet_after_user_seconds} s ago",
                )
        fp = self._fingerprint(run, rules, ctx, events)
        self._admitted[run.id] = Admission(memo, fp, rules, events, stored)
        same = fp.whole == memo.fingerprint
        if same and memo.decision_key is not None and memo.repeats >= REPEAT_LIMIT:
            raise _skip(
                Reason.REPEATED,
                f"skipped: the same decision {memo.repeats} times on unchanged inputs",
            )
        if cfg.skip_unchanged and trigger in _SCHEDULED and not events and unchanged(memo, fp):
            left = "" if same else ", but for posts of others that left the feed"
            raise _skip(Reason.UNCHANGED, f"skipped: nothing changed since the last decision{left}")
        if trigger != Trigger.MANUAL and cfg.daily_token_budget is not None:
            day = await self.store.beat_day(run.thread_id, day_start(now, cfg.timezone))
            estimate = memo.last_cost or cfg.max_tokens
            if over_budget(day.tokens, estimate, cfg.daily_token_budget):
                raise _skip(
                    Reason.BUDGET,
                    f"skipped: {day.tokens} tokens spent today, about {estimate} more would pass"
                    f" the daily budget of {cfg.daily_token_budget}",
                )

    async def _resume_or_stay(self, run: RunPlan[HeartbeatConfig], memo: BeatMemo) -> BeatMemo:
        """A paused thread's memo resumed (config changed, a manual run, the probe answered),
        or the beat skipped ``paused`` (and the next probe put off when this one failed)."""
        if memo.paused is None:
            return memo
        resumed = msgspec.structs.replace(
            memo,
            failure=None,
            failures=0,
            paused=None,
            pauses=0,
            probe_at=None,
            paused_config=None,
        )
        if run.thread.config_json != memo.paused_config or run.trigger == Trigger.MANUAL:
            return resumed
        now = self.clock.now()
        if memo.probe_at is not None and now < memo.probe_at:
            self._admitted[run.id] = Admission(memo, stored=memo)
            raise _skip(
                Reason.PAUSED, f"skipped: paused, {memo.paused}; next probe at {iso(memo.probe_at)}"
            )
        try:
            health = await self.llm().health(run.model)
            answered, detail = health.reachable and health.model_present is not False, health.detail
        except Exception as exc:  # a probe that raises is a probe that failed
            answered, detail = False, f"{type(exc).__name__}: {exc}"
        if answered:
            log.info("[HEARTBEAT] thread %s resumes: the LLM answers again", run.thread_id)
            return resumed
        pauses = memo.pauses + 1
        later = msgspec.structs.replace(
            memo, pauses=pauses, probe_at=now + backoff_seconds(pauses, run.config.every_seconds)
        )
        self._admitted[run.id] = Admission(later, stored=memo)
        raise _skip(
            Reason.PAUSED,
            f"skipped: paused, {memo.paused}; the probe failed"
            f" ({detail or 'unreachable'}), next at {iso(later.probe_at)}",
        )

    def seen(self, run: RunPlan[HeartbeatConfig], ctx: RunContext) -> None:
        """The context the model is asked with (read after the wait for capacity, so perhaps
        newer than the one admitted): the fingerprint a decision is remembered with."""
        admission = self._admitted.get(run.id)
        if admission is None or admission.fingerprint is None:
            return
        fp = self._fingerprint(run, admission.rules, ctx, admission.events)
        self._admitted[run.id] = dataclasses.replace(admission, fingerprint=fp)

    def _fingerprint(
        self, run: RunPlan[HeartbeatConfig], rules: str, ctx: RunContext, events: tuple[str, ...]
    ) -> Inputs:
        """The fingerprint of what the beat's decider can act on under the thread's rules."""
        local = datetime.fromtimestamp(self.clock.now(), ZoneInfo(run.config.timezone))
        decider = pick_strategy(run.config.strategy, self.llm().name)
        scope = scope_of(rules, ctx, decider, run.thread_id)
        return inputs(rules, run.thread.title, ctx, local, events, scope)

    def settle(self, tx: Tx, run: RunPlan[HeartbeatConfig], outcome: RunOutcome) -> RunOutcome:
        """Store what the finished beat taught the memo; returns the outcome to record (a
        decision that trips the breaker is recorded ``skipped``/``repeated`` instead)."""
        if outcome.reason == Reason.USER_ACTIVE and run.event is not None:
            # the wakes held for this beat were taken with it: the deferred beat is told them
            tx.hold_wake(run.thread_id, run.event, max_events=WAKE_EVENTS_MAX)
        admission = self._admitted.get(run.id)
        if admission is None:
            return outcome
        memo, fp = admission.memo, admission.fingerprint
        if outcome.status in _DECIDED and fp is not None:
            key = decision_key(outcome.decision)
            again = key is not None and fp.whole == memo.fingerprint and key == memo.decision_key
            repeats = memo.repeats + 1 if again else (0 if key is None else 1)
            memo = msgspec.structs.replace(
                memo,
                fingerprint=fp.whole,
                rest_fingerprint=fp.rest,
                seen_posts=fp.posts,
                decision_key=key,
                repeats=repeats,
                last_cost=(outcome.prompt_tokens or 0) + (outcome.completion_tokens or 0),
                failure=None,
                failures=0,
            )
            if again and repeats >= REPEAT_LIMIT:
                outcome = msgspec.structs.replace(
                    outcome,
                    status=RunStatus.SKIPPED,
                    reason=Reason.REPEATED,
                    executed=[],
                    summary=f"stopped: the same decision {repeats} times on unchanged inputs",
                )
        elif outcome.status == RunStatus.FAILED and outcome.reason in PAUSING_FAILURES:
            failures = memo.failures + 1 if memo.failure == outcome.reason else 1
            memo = msgspec.structs.replace(memo, failure=outcome.reason, failures=failures)
            if memo.paused is None and should_pause(failures):
                memo = msgspec.structs.replace(
                    memo,
                    paused=f"the LLM failed {failures} times in a row ({outcome.reason})",
                    pauses=1,
                    probe_at=tx.now + backoff_seconds(1, run.config.every_seconds),
                    paused_config=run.thread.config_json,
                )
                log.warning("[HEARTBEAT] thread %s pauses: %s", run.thread_id, memo.paused)
        elif outcome.status == RunStatus.FAILED:
            memo = msgspec.structs.replace(memo, failure=None, failures=0)
        if memo != admission.stored:
            tx.set_beat_memo(memo)
        return outcome

    def forget(self, run_id: int) -> None:
        """The run is over: drop its admission."""
        self._admitted.pop(run_id, None)
