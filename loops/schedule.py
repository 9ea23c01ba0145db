"""Schedule math: pure functions of the instants they are given.

Nothing here reads the clock, sleeps or does I/O. Every instant is a float of POSIX seconds (UTC);
the caller reads the clock once and passes ``now`` down.

- **Grid.** Runs fall on ``anchor + k * every`` (k >= 1), found in O(1) with ``math.ceil``.
- **Active hours.** ``start_hour``/``end_hour`` are wall-clock hours in ``tz`` (start inclusive,
  end exclusive, 24 = the next local midnight, end < start = overnight). Each local date's window
  is turned into an absolute span ``[open, close)``:

  - a start that does not exist (spring forward) opens at the transition instant;
  - an ambiguous start (fall back) uses its first occurrence, an ambiguous end its last, so a
    window never reopens in the repeated hour;
  - an end that does not exist closes at the transition instant.

  Spans that touch or overlap are merged. Windows are computed on the fly for at most nine local
  dates (the day before ``t``'s and eight from it on), so no configuration can loop.
- **Next run.** The first grid slot at or after ``not_before`` inside a window; a window that holds
  no grid slot at all runs once, at its opening.
- **Catch-up.** After downtime exactly one run is owed, coalescing every missed slot.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ledger.limits import ACTIVE_HOURS_END, ACTIVE_HOURS_START, EVERY_SECONDS

__all__ = [
    "SEARCH_DAYS",
    "CatchUp",
    "Schedule",
    "catch_up",
    "grid_slot_at_or_after",
    "in_active_hours",
    "next_run",
    "next_window_open",
    "spacing_floor",
    "spread_offset",
    "window_containing",
]

SEARCH_DAYS = 8
"""Searches cover the local day before the instant searched from and this many days from its own."""

_ALWAYS: tuple[float, float] = (-math.inf, math.inf)


@functools.lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    """The ZoneInfo for ``name``; raises ``ValueError`` for anything that is not an IANA zone."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"tz must be an IANA time zone name, got {name!r}") from None


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a thread's heartbeat may run: every ``every`` seconds, within active hours."""

    every: int
    start_hour: int | None = None
    end_hour: int | None = None
    tz: str = "UTC"

    def __post_init__(self) -> None:
        _check_whole("every", self.every, *EVERY_SECONDS, unit=" seconds")
        start, end = self.start_hour, self.end_hour
        if (start is None) != (end is None):
            raise ValueError(
                f"start_hour and end_hour must be given together, got {start!r} and {end!r}"
            )
        if start is not None and end is not None:
            _check_whole("start_hour", start, *ACTIVE_HOURS_START)
            _check_whole("end_hour", end, *ACTIVE_HOURS_END)
            if start == end:
                raise ValueError(f"start_hour and end_hour must differ, got {start} and {end}")
        _zone(self.tz)

    @property
    def always_on(self) -> bool:
        """True when every instant is inside active hours (no hours, or 0..24)."""
        return self.start_hour is None or (self.start_hour == 0 and self.end_hour == 24)


def _check_whole(name: str, value: object, lo: int, hi: int, unit: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be {lo}..{hi}{unit}, got {value!r}")


# --- the grid ---------------------------------------------------------------------------------


def grid_slot_at_or_after(anchor: float, every: int, t: float) -> float:
    """The smallest ``anchor + k * every`` with ``k >= 1`` that is ``>= t``. O(1)."""
    k = max(1, math.ceil((t - anchor) / every))
    # Float division may land one step off either way; settle on the exact smallest k.
    if anchor + k * every < t:
        k += 1
    elif k > 1 and anchor + (k - 1) * every >= t:
        k -= 1
    return anchor + k * every


def spacing_floor(last_run_at: float | None, every: int, now: float) -> float:
    """The earliest instant the next run may take: a run at ``r`` suppresses slots before
    ``r + every / 2``."""
    if last_run_at is None:
        return now
    return max(now, last_run_at + every / 2)


# --- active hours -----------------------------------------------------------------------------


def _wall(t: float, zone: ZoneInfo) -> datetime:
    """The naive local wall-clock time of the instant ``t``."""
    return datetime.fromtimestamp(t, zone).replace(tzinfo=None)


def _resolve(wall: datetime, zone: ZoneInfo, *, last: bool) -> float:
    """The instant the local wall time ``wall`` is reached.

    Ambiguous: the first occurrence, or the last when ``last``. Nonexistent: the transition
    instant, i.e. the first real instant after the gap.
    """
    early = wall.replace(tzinfo=zone, fold=0).timestamp()
    if _wall(early, zone) == wall:  # it exists: once (both folds agree) or twice
        if last:
            late = wall.replace(tzinfo=zone, fold=1).timestamp()
            if _wall(late, zone) == wall:
                return max(early, late)
        return early
    # In a gap, fold=0 maps with the offset before the transition (an instant at or after it)
    # and fold=1 with the offset after (an instant before it): bisect whole seconds between.
    after = early
    before = wall.replace(tzinfo=zone, fold=1).timestamp()
    offset_after = datetime.fromtimestamp(after, zone).utcoffset()
    lo, hi = math.floor(before), math.ceil(after)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == offset_after:
            hi = mid
        else:
            lo = mid
    return float(hi)


def _local_at(day: date, hour: int) -> datetime:
    if hour == 24:
        day += timedelta(days=1)
        hour = 0
    return datetime(day.year, day.month, day.day, hour)


def _windows(s: Schedule, t: float) -> Iterator[tuple[float, float]]:
    """Merged windows ``[open, close)`` with ``close > t``, in order, for the local day before
    ``t``'s and the ``SEARCH_DAYS`` days from ``t``'s own."""
    if s.always_on:
        yield _ALWAYS
        return
    assert s.start_hour is not None and s.end_hour is not None
    zone = _zone(s.tz)
    first = _wall(t, zone).date() - timedelta(days=1)
    overnight = s.end_hour < s.start_hour
    current: tuple[float, float] | None = None
    for i in range(SEARCH_DAYS + 1):
        day = first + timedelta(days=i)
        end_day = day + timedelta(days=1) if overnight else day
        opens = _resolve(_local_at(day, s.start_hour), zone, last=False)
        closes = _resolve(_local_at(end_day, s.end_hour), zone, last=True)
        if closes <= opens:  # a day swallowed by a transition
            continue
        if current is not None and opens <= current[1]:
            current = (min(current[0], opens), max(current[1], closes))
            continue
        if current is not None and current[1] > t:
            yield current
        current = (opens, closes)
    if current is not None and current[1] > t:
        yield current


def window_containing(s: Schedule, t: float) -> tuple[float, float] | None:
    """The active window ``[open, close)`` containing ``t``, or None outside active hours.

    A schedule without active hours is one endless window ``(-inf, inf)``.
    """
    window = next(_windows(s, t), None)
    if window is None or window[0] > t:
        return None
    return window


def next_window_open(s: Schedule, t: float) -> tuple[float, float] | None:
    """The first window ``[open, close)`` with ``close > t``: the one containing ``t`` or the next.

    None only if no window opens within ``SEARCH_DAYS`` local days.
    """
    return next(_windows(s, t), None)


def in_active_hours(s: Schedule, t: float) -> bool:
    """Whether ``t`` lies inside an active window."""
    return window_containing(s, t) is not None


# --- next run, catch-up, spreading ------------------------------------------------------------


def next_run(s: Schedule, anchor: float, not_before: float) -> float:
    """The next scheduled run at or after ``not_before``.

    The first grid slot ``anchor + k * every`` (k >= 1) at or after ``not_before`` that lies in an
    active window. A window that holds no grid slot at all (e.g. daily grid, window 9-10) runs at
    its opening, if that opening is not before ``not_before``; an open window whose remaining
    slots are all taken or passed is left for the next one. If no window opens within the search
    bound (impossible for valid hours), the plain grid slot.
    """
    for opens, closes in _windows(s, not_before):
        slot = grid_slot_at_or_after(anchor, s.every, max(opens, not_before))
        if slot < closes:
            return slot
        if opens >= not_before:
            return opens
        # Window already open at not_before, no slot left in it: its own run (a slot, or its
        # opening) is in the past, so the next window decides.
    return grid_slot_at_or_after(anchor, s.every, not_before)


@dataclass(frozen=True, slots=True)
class CatchUp:
    """The single run owed after downtime."""

    run_at: float
    missed: int


def catch_up(s: Schedule, anchor: float, stored_next: float, now: float) -> CatchUp | None:
    """The run owed when the stored next run has passed, or None if ``stored_next > now``.

    ``missed`` counts the grid slots in ``[stored_next, now]`` (O(1)), at least 1: the stored run
    itself is owed even when it was a window opening rather than a slot. The run is at ``now``
    inside active hours, else at the next window opening.
    """
    if stored_next > now:
        return None
    first = grid_slot_at_or_after(anchor, s.every, stored_next)
    slots = 0 if first > now else math.floor((now - first) / s.every) + 1
    if slots and first + (slots - 1) * s.every > now:  # float division one step high
        slots -= 1
    elif first + slots * s.every <= now:  # float division one step low
        slots += 1
    window = next_window_open(s, now)
    if window is None or window[0] <= now:
        run_at = now
    else:
        run_at = window[0]
    return CatchUp(run_at=run_at, missed=max(1, slots))


def spread_offset(key: str, max_seconds: float = 60.0) -> float:
    """A stable offset in ``[0, max_seconds)`` for ``key``, the same in every process."""
    if max_seconds <= 0:
        return 0.0
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    fraction = (int.from_bytes(digest, "big") >> 11) / (1 << 53)  # exact, in [0, 1)
    return min(fraction * max_seconds, math.nextafter(max_seconds, 0.0))
