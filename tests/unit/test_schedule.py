"""Tables for the schedule math (docs/scheduling.md): grid, active hours across DST, catch-up.

Instants are written as local wall times in the case's zone: ``at("2026-11-01 01:30", NY)`` is the
first 01:30 of the fall-back night, ``at("2026-11-01 01:30 2nd", NY)`` the second one. ``at``
refuses wall times that do not exist, so a table cannot silently name a time in a gap.
"""

from __future__ import annotations

import math
import random
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from loops.schedule import (
    CatchUp,
    Schedule,
    catch_up,
    grid_slot_at_or_after,
    in_active_hours,
    next_run,
    next_window_open,
    spacing_floor,
    spread_offset,
    window_containing,
)

NY = "America/New_York"
BERLIN = "Europe/Berlin"
LORD_HOWE = "Australia/Lord_Howe"
HAVANA = "America/Havana"
SANTIAGO = "America/Santiago"
CHATHAM = "Pacific/Chatham"
UTC_ = "UTC"

HOUR = 3600
DAY = 86_400
INF = math.inf


def at(text: str, tz: str = UTC_) -> float:
    """The instant of the local wall time ``YYYY-MM-DD HH:MM[:SS]`` in ``tz``.

    A trailing `` 2nd`` picks the second occurrence of an ambiguous wall time.
    """
    second = text.endswith(" 2nd")
    naive = datetime.fromisoformat(text.removesuffix(" 2nd"))
    zone = ZoneInfo(tz)
    t = naive.replace(tzinfo=zone, fold=int(second)).timestamp()
    assert datetime.fromtimestamp(t, zone).replace(tzinfo=None) == naive, (
        f"{text} does not exist in {tz}"
    )
    if second:
        first = naive.replace(tzinfo=zone, fold=0).timestamp()
        assert first != t, f"{text} is not ambiguous in {tz}"
    return t


def show(t: float | None, tz: str = UTC_) -> str:
    """Readable form of an instant, for assertion messages."""
    if t is None or math.isinf(t):
        return repr(t)
    local = datetime.fromtimestamp(t, ZoneInfo(tz))
    utc = datetime.fromtimestamp(t, UTC)
    return f"{local:%Y-%m-%d %H:%M:%S%z} ({utc:%Y-%m-%d %H:%M:%S}Z)"


def show_window(w: tuple[float, float] | None, tz: str) -> str:
    return "None" if w is None else f"[{show(w[0], tz)}, {show(w[1], tz)})"


# --- Schedule validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"every": 59}, "every must be 60..86400", id="every-too-small"),
        pytest.param({"every": 86_401}, "every must be 60..86400", id="every-too-large"),
        pytest.param({"every": True}, "every must be", id="every-bool"),
        pytest.param({"every": 60, "start_hour": 9}, "together", id="start-without-end"),
        pytest.param({"every": 60, "end_hour": 9}, "together", id="end-without-start"),
        pytest.param({"every": 60, "start_hour": 24, "end_hour": 3}, "start_hour", id="start-24"),
        pytest.param({"every": 60, "start_hour": -1, "end_hour": 3}, "start_hour", id="start-neg"),
        pytest.param({"every": 60, "start_hour": 3, "end_hour": 0}, "end_hour", id="end-0"),
        pytest.param({"every": 60, "start_hour": 3, "end_hour": 25}, "end_hour", id="end-25"),
        pytest.param({"every": 60, "start_hour": 5, "end_hour": 5}, "differ", id="start-eq-end"),
        pytest.param({"every": 60, "tz": "Mars/Olympus"}, "IANA", id="tz-unknown"),
        pytest.param({"every": 60, "tz": "America"}, "IANA", id="tz-directory"),
        pytest.param({"every": 60, "tz": "../etc/passwd"}, "IANA", id="tz-path"),
        pytest.param({"every": 60, "tz": ""}, "IANA", id="tz-empty"),
    ],
)
def test_schedule_refuses_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Schedule(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "schedule",
    [
        pytest.param(Schedule(60), id="min-every"),
        pytest.param(Schedule(86_400, 0, 24, NY), id="whole-day"),
        pytest.param(Schedule(1800, 22, 6, BERLIN), id="overnight"),
        pytest.param(Schedule(1800, 23, 1, LORD_HOWE), id="overnight-short"),
    ],
)
def test_schedule_accepts_valid_values(schedule: Schedule) -> None:
    assert schedule.every >= 60


# --- the grid ---------------------------------------------------------------------------------

ANCHOR = at("2026-01-01 00:00")


@pytest.mark.parametrize(
    ("anchor", "every", "t", "expected"),
    [
        pytest.param(ANCHOR, 600, ANCHOR - DAY, ANCHOR + 600, id="t-before-anchor"),
        pytest.param(ANCHOR, 600, ANCHOR, ANCHOR + 600, id="t-at-anchor-k-is-at-least-1"),
        pytest.param(ANCHOR, 600, ANCHOR + 1, ANCHOR + 600, id="just-after-anchor"),
        pytest.param(ANCHOR, 600, ANCHOR + 6000, ANCHOR + 6000, id="exactly-on-slot-taken"),
        pytest.param(ANCHOR, 600, ANCHOR + 6000.001, ANCHOR + 6600, id="just-after-slot"),
        pytest.param(ANCHOR, 600, ANCHOR + 5999.999, ANCHOR + 6000, id="just-before-slot"),
        pytest.param(
            at("2016-01-01 00:00:07"),
            60,
            at("2036-01-01 00:00:30"),
            at("2036-01-01 00:01:07"),
            id="twenty-years-later-every-minute",
        ),
        pytest.param(0.5, 86_400, 1e12, 0.5 + math.ceil((1e12 - 0.5) / 86_400) * 86_400, id="far"),
        pytest.param(ANCHOR + 0.25, 60, ANCHOR + 60.25, ANCHOR + 60.25, id="fractional-anchor"),
    ],
)
def test_grid_slot_at_or_after(anchor: float, every: int, t: float, expected: float) -> None:
    got = grid_slot_at_or_after(anchor, every, t)
    assert got == expected, f"{show(got)} != {show(expected)}"


def test_grid_is_constant_time_across_a_decade() -> None:
    anchor = at("2016-01-01 00:00")
    later = anchor + 10 * 365 * DAY + 0.5
    started = time.perf_counter()
    for i in range(10_000):
        got = grid_slot_at_or_after(anchor, 60, later + i)
    elapsed = time.perf_counter() - started
    assert got == anchor + (10 * 365 * DAY + 60 * 167)  # later + 9999 rounded up to the minute
    assert elapsed < 0.5, f"10k grid look-ups took {elapsed:.3f}s"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_grid_slot_is_smallest_on_grid(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(2000):
        anchor = rng.uniform(1.5e9, 1.9e9)
        every = rng.randint(60, 86_400)
        t = anchor + rng.uniform(-1e6, 1e9)
        got = grid_slot_at_or_after(anchor, every, t)
        k = round((got - anchor) / every)
        assert k >= 1
        assert got == anchor + k * every
        assert got >= t
        assert k == 1 or anchor + (k - 1) * every < t


# --- active hours: window_containing ----------------------------------------------------------

Expected = tuple[str, str] | None | str  # (open, close) local texts, None, or "always"


def _expected_window(expected: Expected, tz: str) -> tuple[float, float] | None:
    if expected is None:
        return None
    if expected == "always":
        return (-INF, INF)
    assert isinstance(expected, tuple)
    return (at(expected[0], tz), at(expected[1], tz))


WINDOW_CASES = [
    # plain days
    pytest.param(UTC_, None, None, "2026-01-05 03:00", "always", id="no-hours-always-on"),
    pytest.param(NY, 0, 24, "2026-03-08 03:00", "always", id="0-24-always-on"),
    pytest.param(
        UTC_, 9, 17, "2026-01-05 12:00", ("2026-01-05 09:00", "2026-01-05 17:00"), id="inside"
    ),
    pytest.param(
        UTC_,
        9,
        17,
        "2026-01-05 09:00",
        ("2026-01-05 09:00", "2026-01-05 17:00"),
        id="start-inclusive",
    ),
    pytest.param(UTC_, 9, 17, "2026-01-05 17:00", None, id="end-exclusive"),
    pytest.param(UTC_, 9, 17, "2026-01-05 08:59:59", None, id="just-before-start"),
    pytest.param(
        NY, 9, 17, "2026-01-05 16:59:59", ("2026-01-05 09:00", "2026-01-05 17:00"), id="ny-9-17"
    ),
    pytest.param(
        BERLIN, 20, 24, "2026-01-05 23:59", ("2026-01-05 20:00", "2026-01-06 00:00"), id="end-24"
    ),
    # overnight 22-06
    pytest.param(
        BERLIN,
        22,
        6,
        "2026-01-05 23:30",
        ("2026-01-05 22:00", "2026-01-06 06:00"),
        id="overnight-before-midnight",
    ),
    pytest.param(
        BERLIN,
        22,
        6,
        "2026-01-06 00:00",
        ("2026-01-05 22:00", "2026-01-06 06:00"),
        id="overnight-at-midnight",
    ),
    pytest.param(
        BERLIN,
        22,
        6,
        "2026-01-06 05:59:59",
        ("2026-01-05 22:00", "2026-01-06 06:00"),
        id="overnight-after-midnight",
    ),
    pytest.param(BERLIN, 22, 6, "2026-01-06 06:00", None, id="overnight-end-exclusive"),
    pytest.param(BERLIN, 22, 6, "2026-01-06 12:00", None, id="overnight-daytime-outside"),
    # America/New_York spring forward 2026-03-08 02:00 EST -> 03:00 EDT
    pytest.param(
        NY,
        2,
        5,
        "2026-03-08 03:00",
        ("2026-03-08 03:00", "2026-03-08 05:00"),
        id="ny-spring-start-in-gap-opens-at-transition",
    ),
    pytest.param(NY, 2, 5, "2026-03-08 01:59:59", None, id="ny-spring-before-transition"),
    pytest.param(
        NY,
        1,
        2,
        "2026-03-08 01:59:59",
        ("2026-03-08 01:00", "2026-03-08 03:00"),
        id="ny-spring-end-in-gap-closes-at-transition",
    ),
    pytest.param(NY, 1, 2, "2026-03-08 03:00", None, id="ny-spring-closed-at-transition"),
    pytest.param(NY, 2, 3, "2026-03-08 03:00", None, id="ny-spring-window-swallowed-by-gap"),
    pytest.param(
        NY,
        22,
        6,
        "2026-03-08 03:30",
        ("2026-03-07 22:00", "2026-03-08 06:00"),
        id="ny-spring-overnight",
    ),
    # America/New_York fall back 2026-11-01 02:00 EDT -> 01:00 EST (01:00-02:00 twice)
    pytest.param(
        NY,
        1,
        3,
        "2026-11-01 01:00",
        ("2026-11-01 01:00", "2026-11-01 03:00"),
        id="ny-fall-start-ambiguous-first-occurrence",
    ),
    pytest.param(
        NY,
        1,
        3,
        "2026-11-01 01:30 2nd",
        ("2026-11-01 01:00", "2026-11-01 03:00"),
        id="ny-fall-second-pass-still-inside",
    ),
    pytest.param(NY, 1, 3, "2026-11-01 00:59:59", None, id="ny-fall-before-first-occurrence"),
    pytest.param(
        NY,
        0,
        1,
        "2026-11-01 01:30",
        ("2026-11-01 00:00", "2026-11-01 01:00 2nd"),
        id="ny-fall-end-ambiguous-last-occurrence",
    ),
    pytest.param(NY, 0, 1, "2026-11-01 01:00 2nd", None, id="ny-fall-closed-at-last-occurrence"),
    pytest.param(NY, 0, 1, "2026-11-01 01:30 2nd", None, id="ny-fall-never-reopens"),
    pytest.param(
        NY,
        22,
        6,
        "2026-11-01 05:30",
        ("2026-10-31 22:00", "2026-11-01 06:00"),
        id="ny-fall-overnight",
    ),
    # Europe/Berlin spring 2026-03-29 02:00 -> 03:00; fall 2026-10-25 03:00 -> 02:00
    pytest.param(
        BERLIN,
        2,
        6,
        "2026-03-29 03:00",
        ("2026-03-29 03:00", "2026-03-29 06:00"),
        id="berlin-spring-start-in-gap",
    ),
    pytest.param(BERLIN, 2, 6, "2026-03-29 01:59:59", None, id="berlin-spring-before"),
    pytest.param(
        BERLIN,
        2,
        4,
        "2026-10-25 02:30 2nd",
        ("2026-10-25 02:00", "2026-10-25 04:00"),
        id="berlin-fall-start-in-repeated-hour-first-occurrence",
    ),
    pytest.param(
        BERLIN,
        2,
        4,
        "2026-10-25 02:00",
        ("2026-10-25 02:00", "2026-10-25 04:00"),
        id="berlin-fall-opens-at-first-occurrence",
    ),
    pytest.param(
        BERLIN,
        0,
        2,
        "2026-10-25 02:30",
        ("2026-10-25 00:00", "2026-10-25 02:00 2nd"),
        id="berlin-fall-end-last-occurrence",
    ),
    pytest.param(BERLIN, 0, 2, "2026-10-25 02:30 2nd", None, id="berlin-fall-no-reopen"),
    # Australia/Lord_Howe: 30-minute shifts. Back 2026-04-05 02:00 -> 01:30; fwd 2026-10-04
    # 02:00 -> 02:30.
    pytest.param(
        LORD_HOWE,
        0,
        2,
        "2026-04-05 01:45 2nd",
        ("2026-04-05 00:00", "2026-04-05 02:00"),
        id="lord-howe-back-repeated-half-hour-inside",
    ),
    pytest.param(
        LORD_HOWE,
        2,
        4,
        "2026-04-05 01:59:59 2nd",
        None,
        id="lord-howe-back-before-start",
    ),
    pytest.param(
        LORD_HOWE,
        2,
        4,
        "2026-10-04 02:30",
        ("2026-10-04 02:30", "2026-10-04 04:00"),
        id="lord-howe-forward-start-in-gap-opens-at-0230",
    ),
    pytest.param(
        LORD_HOWE,
        1,
        2,
        "2026-10-04 01:59",
        ("2026-10-04 01:00", "2026-10-04 02:30"),
        id="lord-howe-forward-end-in-gap",
    ),
    pytest.param(LORD_HOWE, 1, 2, "2026-10-04 02:30", None, id="lord-howe-forward-closed"),
    # transitions at midnight: Havana 2026-03-08 00:00 -> 01:00 and 2026-11-01 01:00 -> 00:00;
    # Santiago 2026-09-06 00:00 -> 01:00.
    pytest.param(
        HAVANA,
        0,
        6,
        "2026-03-08 01:00",
        ("2026-03-08 01:00", "2026-03-08 06:00"),
        id="havana-midnight-gap-start",
    ),
    pytest.param(
        HAVANA,
        18,
        24,
        "2026-03-07 23:59:59",
        ("2026-03-07 18:00", "2026-03-08 01:00"),
        id="havana-midnight-gap-end-24",
    ),
    pytest.param(HAVANA, 18, 24, "2026-03-08 01:00", None, id="havana-midnight-gap-end-closed"),
    pytest.param(
        HAVANA,
        0,
        6,
        "2026-11-01 00:30",
        ("2026-11-01 00:00", "2026-11-01 06:00"),
        id="havana-midnight-ambiguous-start-first",
    ),
    pytest.param(
        HAVANA,
        20,
        24,
        "2026-11-01 00:30",
        ("2026-10-31 20:00", "2026-11-01 00:00 2nd"),
        id="havana-midnight-ambiguous-end-24-last",
    ),
    pytest.param(HAVANA, 20, 24, "2026-11-01 00:30 2nd", None, id="havana-end-24-no-reopen"),
    pytest.param(
        SANTIAGO,
        0,
        6,
        "2026-09-06 01:00",
        ("2026-09-06 01:00", "2026-09-06 06:00"),
        id="santiago-midnight-gap-start",
    ),
    pytest.param(
        SANTIAGO,
        22,
        2,
        "2026-09-06 01:00",
        ("2026-09-05 22:00", "2026-09-06 02:00"),
        id="santiago-overnight-over-midnight-gap",
    ),
]


@pytest.mark.parametrize(("tz", "start", "end", "t_local", "expected"), WINDOW_CASES)
def test_window_containing(
    tz: str, start: int | None, end: int | None, t_local: str, expected: Expected
) -> None:
    s = Schedule(3600, start, end, tz)
    t = at(t_local, tz)
    want = _expected_window(expected, tz)
    got = window_containing(s, t)
    assert got == want, f"at {show(t, tz)}: {show_window(got, tz)} != {show_window(want, tz)}"
    assert in_active_hours(s, t) is (want is not None)


@pytest.mark.parametrize(
    ("tz", "start", "end", "t_local", "expected"),
    [
        pytest.param(
            UTC_,
            9,
            17,
            "2026-01-05 12:00",
            ("2026-01-05 09:00", "2026-01-05 17:00"),
            id="inside-returns-current",
        ),
        pytest.param(
            UTC_,
            9,
            17,
            "2026-01-05 06:00",
            ("2026-01-05 09:00", "2026-01-05 17:00"),
            id="before-returns-today",
        ),
        pytest.param(
            UTC_,
            9,
            17,
            "2026-01-05 17:00",
            ("2026-01-06 09:00", "2026-01-06 17:00"),
            id="at-close-returns-tomorrow",
        ),
        pytest.param(
            BERLIN,
            22,
            6,
            "2026-01-06 06:00",
            ("2026-01-06 22:00", "2026-01-07 06:00"),
            id="overnight-next",
        ),
        pytest.param(
            NY,
            2,
            3,
            "2026-03-08 00:00",
            ("2026-03-09 02:00", "2026-03-09 03:00"),
            id="ny-swallowed-day-skipped",
        ),
        pytest.param(
            LORD_HOWE,
            2,
            4,
            "2026-10-04 00:00",
            ("2026-10-04 02:30", "2026-10-04 04:00"),
            id="lord-howe-opens-at-transition",
        ),
        pytest.param(
            CHATHAM,
            3,
            4,
            "2026-09-27 00:00",
            ("2026-09-27 03:45", "2026-09-27 04:00"),
            id="chatham-quarter-hour-gap",
        ),
        pytest.param(NY, None, None, "2026-03-08 00:00", "always", id="always-on"),
    ],
)
def test_next_window_open(
    tz: str, start: int | None, end: int | None, t_local: str, expected: Expected
) -> None:
    s = Schedule(3600, start, end, tz)
    t = at(t_local, tz)
    want = _expected_window(expected, tz)
    got = next_window_open(s, t)
    assert got == want, f"from {show(t, tz)}: {show_window(got, tz)} != {show_window(want, tz)}"


# An oracle for active hours that shares no code with the module: sample every 15 minutes (all
# boundaries and transitions of the zones below fall on such instants) and decide from wall clocks
# alone. t is past day D's opening iff the highest wall time seen so far reached D's start (first
# occurrence, or the transition when the start is in a gap); t is before D's closing iff its wall
# time is before D's end or some later instant still reads a wall time <= D's end (last
# occurrence; an end in a gap is passed at the transition).

ORACLE_TRANSITIONS = [
    (NY, "2026-03-08"),
    (NY, "2026-11-01"),
    (BERLIN, "2026-03-29"),
    (BERLIN, "2026-10-25"),
    (LORD_HOWE, "2026-04-05"),
    (LORD_HOWE, "2026-10-04"),
    (HAVANA, "2026-03-08"),
    (HAVANA, "2026-11-01"),
    (SANTIAGO, "2026-04-05"),
    (SANTIAGO, "2026-09-06"),
    (CHATHAM, "2026-04-05"),
    (CHATHAM, "2026-09-27"),
]
ORACLE_HOURS = [(0, 6), (1, 2), (2, 3), (2, 5), (0, 1), (1, 3), (3, 4), (22, 6), (23, 1), (20, 24)]


def _oracle_active(start: int, end: int, walls: list[datetime], days: list[date]) -> list[bool]:
    n = len(walls)
    high: list[datetime] = []
    for w in walls:
        high.append(w if not high or w > high[-1] else high[-1])
    later_low: list[datetime | None] = [None] * n  # min wall strictly after i
    for i in range(n - 2, -1, -1):
        nxt = walls[i + 1]
        prev = later_low[i + 1]
        later_low[i] = nxt if prev is None or nxt < prev else prev
    spans = []
    for d in days:
        opens = datetime(d.year, d.month, d.day) + timedelta(hours=start)
        end_day = d + timedelta(days=1) if end < start else d
        closes = datetime(end_day.year, end_day.month, end_day.day) + timedelta(hours=end)
        spans.append((opens, closes))
    result = []
    for i in range(n):
        low = later_low[i]
        result.append(
            any(high[i] >= o and (walls[i] < c or (low is not None and low <= c)) for o, c in spans)
        )
    return result


@pytest.mark.parametrize(
    ("tz", "day"), ORACLE_TRANSITIONS, ids=[f"{z}-{d}" for z, d in ORACLE_TRANSITIONS]
)
def test_active_hours_match_wall_clock_oracle(tz: str, day: str) -> None:
    zone = ZoneInfo(tz)
    center = datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()
    samples = [center - 3 * DAY + i * 900 for i in range(6 * 96)]
    walls = [datetime.fromtimestamp(t, zone).replace(tzinfo=None) for t in samples]
    days = sorted({w.date() for w in walls} | {walls[0].date() - timedelta(days=1)})
    checked = range(96, len(samples) - 96)  # keep clear of the sampled span's edges
    for start, end in ORACLE_HOURS:
        s = Schedule(3600, start, end, tz)
        oracle = _oracle_active(start, end, walls, days)
        for i in checked:
            got = in_active_hours(s, samples[i])
            assert got is oracle[i], f"{start}-{end} at {show(samples[i], tz)}: {got}"


# --- next_run ---------------------------------------------------------------------------------

NEXT_RUN_CASES = [
    # tz, start, end, every, anchor (UTC text), not_before (local), expected (local)
    pytest.param(
        UTC_,
        None,
        None,
        3600,
        "2026-01-01 00:00",
        "2026-01-05 10:00",
        "2026-01-05 10:00",
        id="slot-equal-to-not-before-is-taken",
    ),
    pytest.param(
        UTC_,
        None,
        None,
        3600,
        "2026-01-01 00:00",
        "2026-01-05 10:00:01",
        "2026-01-05 11:00",
        id="just-after-slot-next-slot",
    ),
    pytest.param(
        UTC_,
        None,
        None,
        3600,
        "2026-01-05 09:20",
        "2026-01-05 09:20",
        "2026-01-05 10:20",
        id="first-run-one-interval-after-anchor",
    ),
    pytest.param(
        UTC_,
        None,
        None,
        60,
        "2016-01-01 00:00:07",
        "2036-01-01 00:00:30",
        "2036-01-01 00:01:07",
        id="anchor-twenty-years-back",
    ),
    pytest.param(
        NY,
        9,
        17,
        3600,
        "2026-01-01 00:00",
        "2026-01-05 10:20",
        "2026-01-05 11:00",
        id="hourly-9-17-inside",
    ),
    pytest.param(
        NY,
        9,
        17,
        3600,
        "2026-01-01 00:00",
        "2026-01-05 06:10",
        "2026-01-05 09:00",
        id="hourly-9-17-before-open-first-slot",
    ),
    pytest.param(
        NY,
        9,
        17,
        3600,
        "2026-01-01 00:00",
        "2026-01-05 16:00",
        "2026-01-05 16:00",
        id="hourly-9-17-last-slot",
    ),
    pytest.param(
        NY,
        9,
        17,
        3600,
        "2026-01-01 00:00",
        "2026-01-05 16:30",
        "2026-01-06 09:00",
        id="hourly-9-17-no-slot-left-today-next-window",
    ),
    pytest.param(
        NY,
        9,
        17,
        3600,
        "2026-01-01 00:00",
        "2026-01-05 17:00",
        "2026-01-06 09:00",
        id="hourly-9-17-at-close",
    ),
    pytest.param(
        UTC_,
        9,
        17,
        7200,
        "2026-01-01 08:30",
        "2026-01-05 06:00",
        "2026-01-05 10:30",
        id="slot-outside-window-not-taken-first-slot-inside",
    ),
    pytest.param(
        UTC_,
        9,
        10,
        DAY,
        "2026-01-01 12:00",
        "2026-01-05 06:00",
        "2026-01-05 09:00",
        id="daily-noon-grid-window-9-10-runs-at-opening",
    ),
    pytest.param(
        UTC_,
        9,
        10,
        DAY,
        "2026-01-01 12:00",
        "2026-01-05 09:00",
        "2026-01-05 09:00",
        id="daily-window-opening-equal-to-not-before",
    ),
    pytest.param(
        UTC_,
        9,
        10,
        DAY,
        "2026-01-01 12:00",
        "2026-01-05 21:00",
        "2026-01-06 09:00",
        id="daily-after-spacing-floor-next-opening",
    ),
    pytest.param(
        UTC_,
        9,
        22,
        DAY,
        "2026-01-01 23:00",
        "2026-01-05 21:00",
        "2026-01-06 09:00",
        id="slotless-window-already-open-is-not-run-twice",
    ),
    pytest.param(
        UTC_,
        22,
        6,
        3600,
        "2026-01-01 00:00",
        "2026-01-05 21:10",
        "2026-01-05 22:00",
        id="overnight-opens-on-slot",
    ),
    pytest.param(
        UTC_,
        22,
        6,
        3600,
        "2026-01-01 00:00",
        "2026-01-05 23:59",
        "2026-01-06 00:00",
        id="overnight-across-midnight",
    ),
    pytest.param(
        UTC_,
        22,
        6,
        3600,
        "2026-01-01 00:00",
        "2026-01-06 05:30",
        "2026-01-06 22:00",
        id="overnight-last-slot-passed",
    ),
    # America/New_York
    pytest.param(
        NY,
        2,
        5,
        3600,
        "2026-01-01 00:30",
        "2026-03-08 00:00",
        "2026-03-08 03:30",
        id="ny-spring-window-opens-at-transition-first-slot",
    ),
    pytest.param(
        NY,
        2,
        5,
        DAY,
        "2026-01-01 12:00",
        "2026-03-08 00:00",
        "2026-03-08 03:00",
        id="ny-spring-slotless-runs-at-transition",
    ),
    pytest.param(
        NY,
        2,
        3,
        DAY,
        "2026-01-01 12:00",
        "2026-03-08 00:00",
        "2026-03-09 02:00",
        id="ny-spring-swallowed-window-next-day",
    ),
    pytest.param(
        NY,
        1,
        2,
        1800,
        "2026-01-01 00:00",
        "2026-11-01 00:10",
        "2026-11-01 01:00",
        id="ny-fall-start-first-occurrence",
    ),
    pytest.param(
        NY,
        0,
        1,
        DAY,
        "2026-01-01 05:30",
        "2026-10-30 23:00",
        "2026-10-31 00:00",
        id="ny-normal-day-slotless-runs-at-opening",
    ),
    pytest.param(
        NY,
        0,
        1,
        DAY,
        "2026-01-01 05:30",
        "2026-11-01 00:00",
        "2026-11-01 01:30",
        id="ny-fall-slot-in-first-pass-before-last-0100",
    ),
    pytest.param(
        NY,
        0,
        1,
        DAY,
        "2026-01-01 06:30",
        "2026-11-01 00:10",
        "2026-11-02 00:00",
        id="ny-fall-slot-in-second-pass-not-taken",
    ),
    # Europe/Berlin
    pytest.param(
        BERLIN,
        2,
        6,
        3600,
        "2026-01-01 00:15",
        "2026-03-29 00:00",
        "2026-03-29 03:15",
        id="berlin-spring-first-slot-after-transition",
    ),
    pytest.param(
        BERLIN,
        2,
        3,
        DAY,
        "2026-01-01 01:30",
        "2026-10-25 00:00",
        "2026-10-25 02:30 2nd",
        id="berlin-fall-slot-in-second-pass",
    ),
    pytest.param(
        BERLIN,
        2,
        3,
        DAY,
        "2026-01-01 01:30",
        "2026-10-24 00:00",
        "2026-10-24 02:00",
        id="berlin-normal-day-slotless-runs-at-opening",
    ),
    # Australia/Lord_Howe
    pytest.param(
        LORD_HOWE,
        2,
        4,
        DAY,
        "2026-01-01 15:40",
        "2026-10-04 00:00",
        "2026-10-04 02:40",
        id="lord-howe-forward-slot-after-0230-opening",
    ),
    pytest.param(
        LORD_HOWE,
        2,
        4,
        DAY,
        "2026-01-01 15:05",
        "2026-10-04 00:00",
        "2026-10-04 02:30",
        id="lord-howe-forward-slotless-runs-at-0230",
    ),
    pytest.param(
        LORD_HOWE,
        0,
        2,
        DAY,
        "2026-01-01 15:15",
        "2026-04-05 00:00",
        "2026-04-05 01:45 2nd",
        id="lord-howe-back-slot-in-repeated-half-hour",
    ),
    # midnight transitions
    pytest.param(
        HAVANA,
        0,
        6,
        DAY,
        "2026-01-01 04:30",
        "2026-03-07 12:00",
        "2026-03-08 01:00",
        id="havana-midnight-gap-slotless-runs-at-transition",
    ),
    pytest.param(
        SANTIAGO,
        0,
        6,
        1800,
        "2026-01-01 00:00",
        "2026-09-05 20:00",
        "2026-09-06 01:00",
        id="santiago-midnight-gap-first-slot",
    ),
]


@pytest.mark.parametrize(
    ("tz", "start", "end", "every", "anchor_utc", "not_before_local", "expected_local"),
    NEXT_RUN_CASES,
)
def test_next_run(
    tz: str,
    start: int | None,
    end: int | None,
    every: int,
    anchor_utc: str,
    not_before_local: str,
    expected_local: str,
) -> None:
    s = Schedule(every, start, end, tz)
    anchor = at(anchor_utc)
    not_before = at(not_before_local, tz)
    want = at(expected_local, tz)
    got = next_run(s, anchor, not_before)
    assert got == want, f"from {show(not_before, tz)}: {show(got, tz)} != {show(want, tz)}"
    assert next_run(s, anchor, got) == got  # stable: asking again at the answer gives it back


# --- spacing, catch-up, spreading ---------------------------------------------------------------

T = at("2026-01-05 12:00")


@pytest.mark.parametrize(
    ("last_run_at", "every", "now", "expected"),
    [
        pytest.param(None, 3600, T, T, id="never-ran"),
        pytest.param(T - 600, 3600, T, T + 1200, id="recent-run-pushes-to-half-interval"),
        pytest.param(T - 1800, 3600, T, T, id="exactly-half-interval-ago"),
        pytest.param(T - 7200, 3600, T, T, id="long-ago"),
        pytest.param(T, 86_400, T, T + 43_200, id="run-now-daily"),
    ],
)
def test_spacing_floor(last_run_at: float | None, every: int, now: float, expected: float) -> None:
    assert spacing_floor(last_run_at, every, now) == expected


def test_spacing_floor_with_next_run_skips_slot_after_run_now() -> None:
    s = Schedule(3600)
    anchor = at("2026-01-05 00:00")
    run_now = at("2026-01-05 09:50")  # manual run 10 minutes before the 10:00 slot
    floor = spacing_floor(run_now, s.every, run_now)
    assert next_run(s, anchor, floor) == at("2026-01-05 11:00")


CU_ANCHOR = at("2026-01-05 00:00")
TEN_YEARS = 3650 * DAY

CATCH_UP_CASES = [
    # schedule, stored_next, now, expected
    pytest.param(Schedule(600), CU_ANCHOR + 600, CU_ANCHOR + 599, None, id="not-due"),
    pytest.param(
        Schedule(600),
        CU_ANCHOR + 600,
        CU_ANCHOR + 600,
        CatchUp(CU_ANCHOR + 600, 1),
        id="due-exactly-now",
    ),
    pytest.param(
        Schedule(600),
        CU_ANCHOR + 600,
        CU_ANCHOR + 600 * 11,
        CatchUp(CU_ANCHOR + 600 * 11, 11),
        id="ten-slots-ago-now-on-slot",
    ),
    pytest.param(
        Schedule(600),
        CU_ANCHOR + 600,
        CU_ANCHOR + 600 * 11 + 599,
        CatchUp(CU_ANCHOR + 600 * 11 + 599, 11),
        id="ten-slots-ago-now-between-slots",
    ),
    pytest.param(
        Schedule(600),
        CU_ANCHOR + 650,
        CU_ANCHOR + 700,
        CatchUp(CU_ANCHOR + 700, 1),
        id="stored-opening-no-slot-since-still-one",
    ),
    pytest.param(
        Schedule(600),
        CU_ANCHOR + 600,
        CU_ANCHOR + 600 + TEN_YEARS,
        CatchUp(CU_ANCHOR + 600 + TEN_YEARS, TEN_YEARS // 600 + 1),
        id="clock-jump-ten-years",
    ),
    pytest.param(
        Schedule(3600, 9, 17, NY),
        at("2026-01-05 10:00", NY),
        at("2026-01-05 12:15", NY),
        CatchUp(at("2026-01-05 12:15", NY), 3),
        id="inside-hours-runs-now",
    ),
    pytest.param(
        Schedule(3600, 9, 17, NY),
        at("2026-01-05 16:00", NY),
        at("2026-01-05 20:00", NY),
        CatchUp(at("2026-01-06 09:00", NY), 5),
        id="outside-hours-runs-at-next-opening",
    ),
    pytest.param(
        Schedule(3600, 2, 5, NY),
        at("2026-03-07 04:00", NY),
        at("2026-03-08 01:30", NY),
        CatchUp(at("2026-03-08 03:00", NY), 22),
        id="outside-hours-next-opening-is-spring-transition",
    ),
]


@pytest.mark.parametrize(("s", "stored_next", "now", "expected"), CATCH_UP_CASES)
def test_catch_up(s: Schedule, stored_next: float, now: float, expected: CatchUp | None) -> None:
    assert catch_up(s, CU_ANCHOR, stored_next, now) == expected


def test_catch_up_after_a_decade_is_instant() -> None:
    s = Schedule(60, 9, 17, BERLIN)
    stored_next = CU_ANCHOR + 60
    started = time.perf_counter()
    for i in range(1000):
        result = catch_up(s, CU_ANCHOR, stored_next, stored_next + TEN_YEARS + i)
    elapsed = time.perf_counter() - started
    assert result is not None
    assert result.missed == (TEN_YEARS + 999) // 60 + 1
    assert elapsed < 1.0, f"1000 catch-ups across ten years took {elapsed:.3f}s"


def test_spread_offset_is_pinned_across_processes() -> None:
    # Pinned values: a salted hash() would change them in every process.
    assert spread_offset("default") == pytest.approx(59.671041301097894, abs=1e-9)
    assert spread_offset("thread-42", 10.0) == pytest.approx(5.368829859011367, abs=1e-9)


def test_spread_offset_range_and_spread() -> None:
    values = [spread_offset(f"thread-{i}") for i in range(10_000)]
    assert all(0.0 <= v < 60.0 for v in values)
    assert len({round(v, 3) for v in values}) > 9000  # not a herd
    buckets = [0] * 6
    for v in values:
        buckets[int(v // 10)] += 1
    assert min(buckets) > 1400  # roughly uniform over the minute
    assert spread_offset("x", 0.0) == 0.0
    assert all(0.0 <= spread_offset(f"k{i}", 1e-300) < 1e-300 for i in range(100))


# --- property check ---------------------------------------------------------------------------

PROPERTY_ZONES = [UTC_, NY, BERLIN, LORD_HOWE, HAVANA, SANTIAGO, CHATHAM, "Asia/Kolkata"]
PROPERTY_EVERY = [60, 300, 900, 1800, 3600, 5400, 7200, 10_800, 21_600, 43_200, 86_400]
PROPERTY_NEAR = [
    at(f"{day} 00:00") for _, day in ORACLE_TRANSITIONS
]  # days with transitions, where mistakes hide


def _windows_between(s: Schedule, lo: float, hi: float) -> list[tuple[float, float]]:
    """Every window overlapping [lo, hi], by chaining next_window_open."""
    out: list[tuple[float, float]] = []
    t = lo
    while t <= hi:
        w = next_window_open(s, t)
        if w is None or w[0] > hi:
            break
        out.append(w)
        t = w[1]
    return out


@pytest.mark.parametrize("seed", [7, 11])
def test_next_run_properties(seed: int) -> None:
    rng = random.Random(seed)
    for case in range(1500):
        tz = rng.choice(PROPERTY_ZONES)
        every = rng.choice(PROPERTY_EVERY) if rng.random() < 0.8 else rng.randint(60, 86_400)
        if rng.random() < 0.15:
            start = end = None
        else:
            start = rng.randint(0, 23)
            end = rng.choice([h for h in range(1, 25) if h != start])
        s = Schedule(every, start, end, tz)
        base = rng.choice(PROPERTY_NEAR) if rng.random() < 0.7 else rng.uniform(1.75e9, 1.8e9)
        not_before = base + rng.uniform(-2 * DAY, 2 * DAY)
        if rng.random() < 0.2:
            not_before = float(round(not_before / 900) * 900)  # land on boundaries too
        anchor = not_before - rng.uniform(-every, 400 * DAY)
        if rng.random() < 0.3:
            anchor = float(round(anchor / 60) * 60)
        label = f"case {case}: {s}, anchor={show(anchor)}, not_before={show(not_before, tz)}"

        got = next_run(s, anchor, not_before)
        assert got >= not_before, label
        window = window_containing(s, got)
        assert window is not None, f"{label}: {show(got, tz)} is outside active hours"
        on_grid = (got - anchor) / every
        is_slot = got > anchor and abs(on_grid - round(on_grid)) < 1e-6
        if not is_slot:
            assert got == window[0], f"{label}: {show(got, tz)} is neither a slot nor an opening"
            first_slot = grid_slot_at_or_after(anchor, every, window[0])
            assert first_slot >= window[1], f"{label}: window opening taken but window has slots"
        # Brute force: no grid slot in [not_before, got) lies in a window.
        windows = _windows_between(s, not_before, got)
        slot = grid_slot_at_or_after(anchor, every, not_before)
        while slot < got:
            assert not any(o <= slot < c for o, c in windows), (
                f"{label}: earlier slot {show(slot, tz)} inside a window, got {show(got, tz)}"
            )
            slot += every
        assert next_run(s, anchor, got) == got, label
