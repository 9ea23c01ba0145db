"""What a heartbeat may spend, and when it holds back. Pure: times in, verdicts out.

- the day a budget counts is the thread's local calendar day, from local midnight (``day_start``);
- a beat that would take the day's tokens over the budget is skipped (``over_budget``);
- after ``PAUSE_AFTER_FAILURES`` failures of one kind in a row (the LLM unreachable, its model
  missing, refused credentials) a thread pauses, and probes again after a back-off that doubles
  each time up to a cap (``backoff_seconds``);
- a beat yields while the user wrote in the thread recently (``user_active``), and is owed again
  once the thread has been quiet that long (``quiet_until``, from ``last_user_at``);
- the same decision ``REPEAT_LIMIT`` times on unchanged inputs trips the breaker (``decision_key``
  says what "the same" is).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, time
from typing import Any, Final
from zoneinfo import ZoneInfo

import msgspec

from ledger.limits import BACKOFF_SECONDS, PAUSE_AFTER_FAILURES
from ledger.records import Message, Reason

__all__ = [
    "PAUSING_FAILURES",
    "backoff_seconds",
    "day_start",
    "decision_key",
    "last_user_at",
    "over_budget",
    "quiet_until",
    "should_pause",
    "still_deferred",
    "user_active",
]

PAUSING_FAILURES: Final = frozenset({Reason.UNREACHABLE, Reason.MODEL_MISSING, Reason.AUTH})
"""The failures that do not go away by asking again soon: a run of them pauses the thread."""


def day_start(now: float, timezone: str) -> float:
    """The POSIX time of the last local midnight at or before ``now`` in ``timezone``.

    A midnight that the zone skips (clocks jump from 00:00) is the day's first instant, the jump;
    a midnight it repeats counts from its first occurrence.
    """
    zone = ZoneInfo(timezone)
    local = datetime.fromtimestamp(now, zone)
    midnight = datetime.combine(local.date(), time(0), tzinfo=zone)
    return midnight.timestamp()


def over_budget(used: int, estimate: int, budget: int | None) -> bool:
    """Whether a beat expected to cost ``estimate`` tokens would take ``used`` past ``budget``
    (None: no budget)."""
    return budget is not None and used + estimate > budget


def backoff_seconds(pauses: int, every_seconds: int) -> float:
    """How long a paused thread waits before its ``pauses``-th probe (1, 2, ...): one beat
    interval, doubling, within ``BACKOFF_SECONDS``."""
    lo, hi = BACKOFF_SECONDS
    step = max(lo, every_seconds) * 2 ** min(max(pauses - 1, 0), 30)
    return float(min(hi, step))


def should_pause(failures: int) -> bool:
    """Whether ``failures`` pausing failures of one kind in a row pause the thread."""
    return failures >= PAUSE_AFTER_FAILURES


def last_user_at(messages: Iterable[Message], user: str) -> float | None:
    """When ``user`` last wrote among ``messages`` (None: not among them)."""
    return max((m.created_at for m in messages if m.role == user), default=None)


def quiet_until(last_user_at: float | None, quiet_seconds: int | None) -> float | None:
    """The instant the thread has been quiet for ``quiet_seconds`` since the user last wrote:
    when a beat deferred for the user is owed (None: nothing to wait for)."""
    if quiet_seconds is None or last_user_at is None:
        return None
    return last_user_at + quiet_seconds


def still_deferred(
    last_reason: str | None, quiet_end: float | None, now: float, open_at_quiet_end: bool
) -> float | None:
    """When a beat deferred for the user before a restart is owed (None: none is). One is owed
    if the thread's last heartbeat run (its ``last_reason``) yielded to the user and the quiet
    end is still ahead, or passed inside the thread's active hours (``open_at_quiet_end``), when
    the beat would have run had the process been up; one that passed outside them was dropped,
    and the next slot decides."""
    if last_reason != Reason.USER_ACTIVE or quiet_end is None:
        return None
    return quiet_end if quiet_end > now or open_at_quiet_end else None


def user_active(now: float, last_user_at: float | None, quiet_seconds: int | None) -> bool:
    """Whether the user wrote within the last ``quiet_seconds`` (None: never yield)."""
    until = quiet_until(last_user_at, quiet_seconds)
    return until is not None and now < until


def decision_key(decision: dict[str, Any] | None) -> str | None:
    """What makes two decisions "the same": their action, target and text, not their
    reasoning. None for no decision and for ``none`` (doing nothing never runs away)."""
    if not decision or decision.get("action") in (None, "none"):
        return None
    data = {k: v for k, v in decision.items() if k not in ("reasoning", "truncated")}
    return hashlib.sha256(msgspec.json.encode(data, order="sorted")).hexdigest()[:32]
