"""What a heartbeat may spend: the local day, the budget, the back-off, the quiet time."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from ledger.limits import BACKOFF_SECONDS, PAUSE_AFTER_FAILURES
from loops.spend import (
    backoff_seconds,
    day_start,
    decision_key,
    over_budget,
    quiet_until,
    should_pause,
    still_deferred,
    user_active,
)


def at(zone: str, *args: int, fold: int = 0) -> float:
    return datetime(*args, tzinfo=ZoneInfo(zone), fold=fold).timestamp()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("zone", "now", "midnight"),
    [
        # Paris springs forward on 2026-03-29 at 02:00: that day has 23 hours
        ("Europe/Paris", at("Europe/Paris", 2026, 3, 29, 1, 30), at("Europe/Paris", 2026, 3, 29)),
        ("Europe/Paris", at("Europe/Paris", 2026, 3, 29, 23, 59), at("Europe/Paris", 2026, 3, 29)),
        ("Europe/Paris", at("Europe/Paris", 2026, 3, 30, 0, 0), at("Europe/Paris", 2026, 3, 30)),
        # and falls back on 2026-10-25 at 03:00: 25 hours, 02:30 happens twice
        ("Europe/Paris", at("Europe/Paris", 2026, 10, 25, 2, 30, fold=1),
         at("Europe/Paris", 2026, 10, 25)),
        ("Europe/Paris", at("Europe/Paris", 2026, 10, 25, 23, 0), at("Europe/Paris", 2026, 10, 25)),
        # Santiago skips midnight itself (00:00 -> 01:00 on 2026-09-06)
        ("America/Santiago", at("America/Santiago", 2026, 9, 6, 1, 30),
         at("America/Santiago", 2026, 9, 5, 23, 0) + 3600),
        ("UTC", 1_767_225_600.0 + 3599, 1_767_225_600.0),
    ],
)  # fmt: skip
def test_the_budget_day_starts_at_local_midnight(zone: str, now: float, midnight: float) -> None:
    assert day_start(now, zone) == midnight
    assert day_start(midnight, zone) == midnight  # midnight itself opens the day


def test_the_day_across_a_dst_change_is_23_or_25_hours() -> None:
    paris = "Europe/Paris"
    spring = day_start(at(paris, 2026, 3, 30, 12), paris) - day_start(
        at(paris, 2026, 3, 29, 12), paris
    )
    autumn = day_start(at(paris, 2026, 10, 26, 12), paris) - day_start(
        at(paris, 2026, 10, 25, 12), paris
    )
    assert (spring, autumn) == (23 * 3600, 25 * 3600)


@pytest.mark.parametrize(
    ("used", "estimate", "budget", "over"),
    [(0, 500, None, False), (0, 500, 500, False), (1, 500, 500, True), (900, 50, 1000, False),
     (990, 50, 1000, True)],
)  # fmt: skip
def test_over_budget(used: int, estimate: int, budget: int | None, over: bool) -> None:
    assert over_budget(used, estimate, budget) is over


def test_backoff_doubles_from_the_beat_interval_up_to_the_cap() -> None:
    assert [backoff_seconds(n, 1800) for n in (1, 2, 3, 4)] == [1800, 3600, 7200, 14400]
    assert backoff_seconds(50, 1800) == BACKOFF_SECONDS.hi
    assert backoff_seconds(1, 1) == BACKOFF_SECONDS.lo


def test_pausing_takes_the_limit_of_failures() -> None:
    assert not should_pause(PAUSE_AFTER_FAILURES - 1)
    assert should_pause(PAUSE_AFTER_FAILURES)


@pytest.mark.parametrize(
    ("now", "last", "quiet", "active"),
    [(100.0, 95.0, None, False), (100.0, None, 60, False), (100.0, 41.0, 60, True),
     (100.0, 40.0, 60, False)],
)  # fmt: skip
def test_user_active(now: float, last: float | None, quiet: int | None, active: bool) -> None:
    assert user_active(now, last, quiet) is active


@pytest.mark.parametrize(
    ("last", "quiet", "until"),
    [(None, 60, None), (100.0, None, None), (100.0, 60, 160.0), (100.5, 10, 110.5)],
)  # fmt: skip
def test_quiet_until_is_the_last_message_plus_the_quiet_seconds(
    last: float | None, quiet: int | None, until: float | None
) -> None:
    assert quiet_until(last, quiet) == until
    if until is not None:  # active just before the quiet end, not at it
        assert user_active(until - 0.5, last, quiet) and not user_active(until, last, quiet)


@pytest.mark.parametrize(
    ("reason", "end", "open_then", "owed"),
    [
        ("user_active", 160.0, False, 160.0),  # still ahead: owed, its hours checked when due
        ("user_active", 160.0, True, 160.0),
        ("user_active", 90.0, True, 90.0),  # passed while down, inside the hours: owed now
        ("user_active", 90.0, False, None),  # passed outside them: dropped, the slot decides
        ("user_active", None, True, None),  # no message of the user's left in the window
        (None, 160.0, True, None),  # the last run decided: nothing owed
        ("unchanged", 160.0, True, None),
        ("overlap", 160.0, True, None),
    ],
)
def test_a_beat_deferred_before_a_restart_is_owed_again(
    reason: str | None, end: float | None, open_then: bool, owed: float | None
) -> None:
    assert still_deferred(reason, end, 100.0, open_then) == owed


def test_the_same_decision_is_the_same_action_target_and_text_not_the_reasoning() -> None:
    vote = {"action": "vote", "post_id": "p1", "vote_direction": "up", "reasoning": "a"}
    assert decision_key(vote) == decision_key({**vote, "reasoning": "b"})
    assert decision_key(vote) != decision_key({**vote, "post_id": "p2"})
    assert decision_key({"action": "none", "reasoning": "quiet"}) is None
    assert decision_key(None) is None
