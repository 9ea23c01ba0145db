"""Times of day and days of the week as a rule names them (pure).

``read_time("Between 22:00 and 07:00 do nothing")`` gives the windows of the day and the weekdays
a rule's condition names, or None when it names no time at all; ``TimeCondition.holds`` checks a
local moment against them. Read: clock times ("18:30", "9:00 AM", "6pm", "6 p.m.", "9 o'clock",
"18h", "noon", "midnight"), a bare hour after "at" / "around" / "after" / "before" ("at 9"),
ranges ("between 9 and 17", "from 9am to 5pm", "9-11am"), open ranges ("after 22:00",
"before 9am", "until noon"), parts of the day ("morning", "mornings", "in the evening", "at
night", "lunchtime") and days ("Monday", "on Mondays", "weekdays", "weekends", "Monday to
Friday"). A time point ("at 9am") holds from that minute for an hour, "around" from half an hour
before: a beat every half hour meets it once or twice.
"""

from __future__ import annotations

import re
from typing import Final

import msgspec

from loops.wording import NUMBER_WORDS

__all__ = [
    "DAY_MINUTES",
    "TimeCondition",
    "Window",
    "older_than",
    "parse_clock",
    "read_time",
    "recency",
    "recent_limit",
]

DAY_MINUTES: Final = 24 * 60
POINT_MINUTES: Final = 60  # how long "at 9am" holds
AROUND_MINUTES: Final = 30  # how early "around 9am" starts to hold

WEEKDAYS: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_GROUPS: Final[dict[str, tuple[int, ...]]] = {
    "weekday": (0, 1, 2, 3, 4),
    "weekdays": (0, 1, 2, 3, 4),
    "workday": (0, 1, 2, 3, 4),
    "workdays": (0, 1, 2, 3, 4),
    "weekend": (5, 6),
    "weekends": (5, 6),
}
# parts of the day: (start, end) in minutes; an end before the start runs past midnight
DAYPARTS: Final[dict[str, tuple[int, int]]] = {
    "morning": (6 * 60, 12 * 60),
    "mornings": (6 * 60, 12 * 60),
    "lunchtime": (12 * 60, 14 * 60),
    "lunch": (12 * 60, 14 * 60),
    "afternoon": (12 * 60, 18 * 60),
    "afternoons": (12 * 60, 18 * 60),
    "evening": (18 * 60, 23 * 60),
    "evenings": (18 * 60, 23 * 60),
    "tonight": (18 * 60, DAY_MINUTES),
    "night": (21 * 60, 6 * 60),
    "nights": (21 * 60, 6 * 60),
    "nightly": (21 * 60, 6 * 60),
    "overnight": (21 * 60, 6 * 60),
}
_PM_PARTS: Final = frozenset(
    "afternoon afternoons evening evenings tonight night nights nightly".split()
)
_NAMED: Final[dict[str, int]] = {"noon": 12 * 60, "midday": 12 * 60, "midnight": 0}

_MERIDIEM: Final = r"(?:\s*(?P<{0}>a\.?m\.?|p\.?m\.?)(?![a-z]))"
_ONE_CLOCK: Final = (
    r"(?:(?P<{0}h>\d{{1,2}})(?!\d)(?:(?::|h)(?P<{0}m>\d{{2}})(?!\d))?(?:"
    + _MERIDIEM.format("{0}ap")
    + r"|"
    r"(?P<{0}oc>\s*o'?\s?clock|h\b))?|(?P<{0}named>noon|midday|midnight))"
)
_UNIT_AFTER: Final = re.compile(
    r"\s*(?:\+|%|or more|or fewer|x\b|times|minutes?|mins?|hours?|hrs?|days?|weeks?|months?|"
    r"years?|posts?|comments?|votes?|upvotes?|downvotes?|replies|people|users?|new|more)",
    re.I,
)
_CLOCK_RE: Final = re.compile(r"(?<![\d:.])" + _ONE_CLOCK.format("a"), re.I)
_LEADS: Final = r"(?:at|around|about|by|after|past|since|before|until|till|til|from|between)"


class Window(msgspec.Struct, frozen=True):
    """Minutes of the day from ``start`` (inclusive) to ``end`` (exclusive); ``end`` below
    ``start`` runs past midnight."""

    start: int
    end: int

    def holds(self, minute_of_day: int) -> bool:
        if self.start <= self.end:
            return self.start <= minute_of_day < self.end
        return minute_of_day >= self.start or minute_of_day < self.end


class TimeCondition(msgspec.Struct, frozen=True):
    """The windows of the day (none: any time) and the weekdays (none: any day, Monday 0)."""

    windows: tuple[Window, ...] = ()
    weekdays: frozenset[int] = frozenset()
    text: str = ""  # the words it was read from

    def holds(self, hour: int, minute: int, weekday: int) -> bool:
        if self.weekdays and weekday not in self.weekdays:
            return False
        now = hour * 60 + minute
        return not self.windows or any(w.holds(now) for w in self.windows)


def _minutes(hour: int, minute: int, meridiem: str | None) -> int | None:
    if minute > 59:
        return None
    if meridiem:
        if not 1 <= hour <= 12:
            return None
        hour %= 12
        if meridiem.startswith("p"):
            hour += 12
    elif hour > 24:
        return None
    return (hour % 24) * 60 + minute


def parse_clock(text: str) -> int | None:
    """A clock time alone ("18:30", "6pm", "9 a.m.", "noon", "9 o'clock") in minutes of the day;
    None when the text is not one."""
    m = re.fullmatch(_ONE_CLOCK.format("a"), text.strip(), re.I)
    if m is None:
        return None
    return _clock_of(m, "a", explicit_only=False)


def _clock_of(m: re.Match[str], g: str, *, explicit_only: bool) -> int | None:
    """Minutes of the day of a match of ``_ONE_CLOCK``; with ``explicit_only`` a bare number
    ("9") is not a time."""
    if m.group(f"{g}named"):
        return _NAMED[m.group(f"{g}named").lower()]
    meridiem = (m.group(f"{g}ap") or "").lower().replace(".", "") or None
    explicit = bool(meridiem or m.group(f"{g}m") or m.group(f"{g}oc"))
    if explicit_only and not explicit:
        return None
    return _minutes(int(m.group(f"{g}h")), int(m.group(f"{g}m") or 0), meridiem)


class _Clock(msgspec.Struct, frozen=True):
    start: int  # position in the text
    end: int
    minutes: int
    explicit: bool  # written as a time ("9:00", "9am", "noon"), not a bare number after "at"
    meridiem: bool


def _clocks(low: str) -> list[_Clock]:
    out: list[_Clock] = []
    for m in _CLOCK_RE.finditer(low):
        minutes = _clock_of(m, "a", explicit_only=True)
        explicit = minutes is not None
        if not explicit and _UNIT_AFTER.match(low, m.end()):
            continue  # "3+ posts", "24 hours", "5 comments": counts ("8am posts": a time)
        if minutes is None:  # a bare number: a time only after a word that leads to one,
            before = low[: m.start()].rstrip()  # or as one end of a range of times
            led = re.search(rf"\b{_LEADS}$", before) is not None
            ends_range = bool(out) and re.fullmatch(
                r"\s*(?:and|to|until|till|through|-|\u2013)\s*", low[out[-1].end : m.start()]
            )
            starts_range = re.match(r"\s*(?:-|\u2013|to)\s*\d", low[m.end() :]) is not None
            if not (led or ends_range or starts_range):
                continue
            minutes = _minutes(int(m.group("ah")), 0, None)
            if minutes is None:
                continue
        out.append(
            _Clock(
                start=m.start(),
                end=m.end(),
                minutes=minutes,
                explicit=explicit,
                meridiem=bool(m.group("aap")),
            )
        )
    return out


def _has_word(low: str, word: str) -> bool:
    return re.search(rf"(?<![a-z]){re.escape(word)}(?![a-z])", low) is not None


def _weekdays(low: str) -> frozenset[int]:
    days: set[int] = set()
    names = "|".join(WEEKDAYS)
    for m in re.finditer(
        rf"\b({names})s?\s*(?:to|through|thru|until|till|-|\u2013)\s*({names})s?\b", low
    ):
        a, b = WEEKDAYS.index(m.group(1)), WEEKDAYS.index(m.group(2))
        days |= {(a + i) % 7 for i in range((b - a) % 7 + 1)}
    for i, day in enumerate(WEEKDAYS):
        if _has_word(low, day) or _has_word(low, day + "s"):
            days.add(i)
    for word, group in _DAY_GROUPS.items():
        if _has_word(low, word):
            days |= set(group)
    return frozenset(days)


def _windows(low: str) -> list[Window]:
    clocks = _clocks(low)
    pm_context = any(_has_word(low, p) for p in _PM_PARTS)

    def afternoon(c: _Clock) -> int:
        """A bare "at 6" in an evening rule is 18:00."""
        if pm_context and not c.meridiem and c.minutes < 12 * 60 and c.minutes >= 60:
            return c.minutes + 12 * 60
        return c.minutes

    windows: list[Window] = []
    used: set[int] = set()
    for i in range(len(clocks) - 1):  # ranges first: "between 9 and 17", "from 9am to 5pm", "9-11"
        a, b = clocks[i], clocks[i + 1]
        between = low[a.end : b.start].strip()
        if between not in ("and", "to", "until", "till", "-", "\u2013", "through"):
            continue
        if between == "and" and not re.search(r"\bbetween\s*$", low[: a.start]):
            continue
        start, end = afternoon(a), afternoon(b)
        if end <= start and not b.meridiem and end < 12 * 60 and end + 12 * 60 > start:
            end += 12 * 60  # "from 9 to 5" is 9:00 to 17:00
        windows.append(Window(start, end % DAY_MINUTES if end != DAY_MINUTES else DAY_MINUTES))
        used |= {i, i + 1}
    for i, c in enumerate(clocks):
        if i in used:
            continue
        before = low[: c.start].rstrip()
        minutes = afternoon(c)
        if re.search(r"\b(?:after|past|since|from|later than)$", before) or re.match(
            r"\s*(?:or later|and later|onwards?|"
            r"on(?!\s+(?:the\b|every\b|[a-z]+days?\b|weekends?\b)))\b",
            low[c.end :],
        ):
            windows.append(Window(minutes, DAY_MINUTES))
        elif re.search(r"\b(?:before|until|till|til|by|earlier than)$", before):
            windows.append(Window(0, minutes))
        elif re.search(r"\b(?:around|about|approximately|roughly)$", before):
            windows.append(Window(max(0, minutes - AROUND_MINUTES), minutes + POINT_MINUTES))
        else:
            end = minutes + POINT_MINUTES
            windows.append(Window(minutes, end if end <= DAY_MINUTES else end - DAY_MINUTES))
    if windows:
        return windows
    for part, (start, end) in DAYPARTS.items():
        if _has_word(low, part):
            windows.append(Window(start, end))
    return windows


def read_time(text: str) -> TimeCondition | None:
    """The time of day and days a condition names; None when it names neither."""
    low = text.lower()
    days = _weekdays(low)
    windows = _windows(low)
    if not days and not windows:
        return None
    return TimeCondition(windows=tuple(windows), weekdays=days, text=text)


_UNIT_SECONDS: Final = {
    "min": 60,
    "minute": 60,
    "hr": 3600,
    "hour": 3600,
    "day": 86400,
    "week": 604800,
}
_NUMBER_OF: Final = r"\d+|an?|" + "|".join(sorted(NUMBER_WORDS, key=len, reverse=True))
_RECENT: Final = re.compile(
    rf"\b(?:in|within|during|over|from)\s+the\s+(?:last|past)\s+(?:(?P<n>{_NUMBER_OF})\s+)?"
    r"(?P<unit>min|minute|hr|hour|day|week)s?\b"
)
_TODAY: Final = re.compile(
    r"\b(?:posted|written|shared|sent|made|created|added|published|asked|raised|from)\s+today\b"
    r"|\btoday's\b"
)


_OLDER: Final = re.compile(
    rf"\b(?:older\s+than|more\s+than|over|at\s+least)\s+(?:(?P<n>{_NUMBER_OF})\s+)?"
    r"(?P<unit>min|minute|hr|hour|day|week)s?(?:\s+old)?\b"
)


_WAITED: Final = re.compile(  # "no replies after 2 hours", "waiting for more than an hour"
    rf"\b(?:after|for(?:\s+(?:more\s+than|over|at\s+least))?)\s+(?P<n>{_NUMBER_OF})\s+"
    r"(?P<unit>min|minute|hr|hour|day|week)s?\b"
)


_UNANSWERED_WITHIN: Final = re.compile(  # "nobody answered within an hour"
    r"\b(?:(?:nobody|no\s+one|noone)\s+(?:has\s+|have\s+|had\s+)?(?:answer|repl|respon|comment)\w*"
    r"|(?:no|without\s+(?:an?\s+)?)\s*(?:answers?|repl(?:y|ies)|responses?|comments?)"
    r"|unanswered|not\s+(?:been\s+|yet\s+)?answered)\b[^.;,]*?\bwithin\s+"
    rf"(?P<n>{_NUMBER_OF})\s+(?P<unit>min|minute|hr|hour|day|week)s?\b"
)


def older_than(text: str) -> int | None:
    """How old, in seconds, a post must be for the condition to hold ("older than two days":
    172800, "more than a week old", "over 3 hours old", "no replies after 2 hours", "waiting
    for more than an hour", "nobody answered within an hour": a wait for an answer that did not
    come); None when it names no such age. "More than …" and "over …" count
    only with "old" after the unit ("more than two days" alone names no age)."""
    low = text.lower()
    waits = (*_OLDER.finditer(low), *_WAITED.finditer(low), *_UNANSWERED_WITHIN.finditer(low))
    for m in waits:
        said = m.group(0)
        if said.startswith(("more", "over", "at")) and not said.endswith(" old"):
            continue
        n = m.group("n") or "1"
        count = int(n) if n.isdigit() else NUMBER_WORDS.get(n, 1)
        return count * _UNIT_SECONDS[m.group("unit")]
    return None


def recency(text: str, hour: int, minute: int) -> int | None:
    """How old, in seconds, a post may be for the condition to hold ("posted in the last hour":
    3600; "in the past 2 days"; "posted today": since local midnight, given the local time);
    None when the condition names no such limit."""
    within = _within(text)
    if within is not None:
        return within
    if _TODAY.search(text.lower()) is not None:
        return (hour * 60 + minute) * 60
    return None


def recent_limit(text: str) -> int | None:
    """The age, in seconds, at which a post's standing under the condition flips and that does
    not move with the clock: ``recency``'s ("in the last hour": 3600, "in the past 2 days") or
    ``older_than``'s ("older than two days"); None for none ("posted today" ends at midnight
    instead)."""
    within = _within(text)
    return within if within is not None else older_than(text)


def _within(text: str) -> int | None:
    m = _RECENT.search(text.lower())
    if m is None:
        return None
    n = m.group("n") or "1"
    count = int(n) if n.isdigit() else NUMBER_WORDS.get(n, 1)
    return count * _UNIT_SECONDS[m.group("unit")]
