"""Times of day and days as rules name them (pure)."""

from __future__ import annotations

import pytest

from loops.timewords import TimeCondition, Window, parse_clock, read_time


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("18:30", 18 * 60 + 30),
        ("6pm", 18 * 60),
        ("6 p.m.", 18 * 60),
        ("9:00 AM", 9 * 60),
        ("12am", 0),
        ("12pm", 12 * 60),
        ("noon", 12 * 60),
        ("midnight", 0),
        ("9 o'clock", 9 * 60),
        ("18h30", 18 * 60 + 30),
        ("9", 9 * 60),
        ("25:00", None),
        ("13pm", None),
        ("hello", None),
    ],
)
def test_parse_clock(text: str, minutes: int | None) -> None:
    assert parse_clock(text) == minutes


H = 60


@pytest.mark.parametrize(
    ("text", "windows", "days"),
    [
        ("At 18:00", [(18 * H, 19 * H)], set()),
        ("Publish an evening wrap-up at 6pm", [(18 * H, 19 * H)], set()),
        ("at 6 in the evening", [(18 * H, 19 * H)], set()),
        ("Around 18:30", [(18 * H, 19 * H + 30)], set()),
        ("Between 22:00 and 07:00 do nothing", [(22 * H, 7 * H)], set()),
        ("from 9 to 5", [(9 * H, 17 * H)], set()),
        ("9-11am", [(9 * H, 11 * H)], set()),
        ("after 22:00", [(22 * H, 24 * H)], set()),
        ("before 9am", [(0, 9 * H)], set()),
        ("Mornings", [(6 * H, 12 * H)], set()),
        ("Every Monday morning", [(6 * H, 12 * H)], {0}),
        ("Monday to Friday at 8", [(8 * H, 9 * H)], {0, 1, 2, 3, 4}),
        ("on weekends", [], {5, 6}),
        # a time written as one, then a word that can also count: still the time
        ("At 8am post a digest", [(8 * H, 9 * H)], set()),
        ("at 18:30 post a summary", [(18 * H + 30, 19 * H + 30)], set()),
        ("At 6pm comment on new posts", [(18 * H, 19 * H)], set()),
    ],
)
def test_read_time(text: str, windows: list[tuple[int, int]], days: set[int]) -> None:
    found = read_time(text)
    assert found is not None
    assert [(w.start, w.end) for w in found.windows] == windows
    assert found.weekdays == days


@pytest.mark.parametrize(
    "text",
    [
        "If 3+ new posts",
        "reply to 3 questions",
        "more than four new posts",
        "10k followers",
        "within 24 hours",
        "If post has 0 votes but 5+ views",
        "at least 5 comments",
        "at 9 posts arrive",  # a bare number before a thing counted counts it
    ],
)
def test_counts_are_not_times(text: str) -> None:
    assert read_time(text) is None


@pytest.mark.parametrize(
    ("hour", "minute", "weekday", "holds"),
    [(23, 30, 1, True), (6, 59, 1, True), (7, 0, 1, False), (12, 0, 1, False)],
)
def test_a_window_past_midnight(hour: int, minute: int, weekday: int, holds: bool) -> None:
    night = TimeCondition(windows=(Window(22 * 60, 7 * 60),))
    assert night.holds(hour, minute, weekday) is holds


def test_days_and_hours_both_hold() -> None:
    monday_morning = read_time("every Monday morning")
    assert monday_morning is not None
    assert monday_morning.holds(8, 30, 0)
    assert not monday_morning.holds(8, 30, 2)
    assert not monday_morning.holds(15, 0, 0)


@pytest.mark.parametrize(
    ("text", "windows", "days"),
    [
        # "on" before a day or "the" names when, not "from then on"
        ("at 9am on Mondays", [(9 * H, 10 * H)], {0}),
        ("At 7:30 on weekdays", [(7 * H + 30, 8 * H + 30)], {0, 1, 2, 3, 4}),
        ("at 8 on the dot", [(8 * H, 9 * H)], set()),
        ("from 9 on", [(9 * H, 24 * H)], set()),
        ("6pm on, nothing", [(18 * H, 24 * H)], set()),
    ],
)
def test_on_after_a_time(text: str, windows: list[tuple[int, int]], days: set[int]) -> None:
    when = read_time(text)
    assert when is not None
    assert [(w.start, w.end) for w in when.windows] == windows
    assert when.weekdays == frozenset(days)


from loops.timewords import older_than, recency, recent_limit  # noqa: E402


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("anything older than two days", 2 * 86400),
        ("posts older than a week", 604800),
        ("questions more than a day old", 86400),
        ("over 3 hours old", 3 * 3600),
        ("at least 2 weeks old", 2 * 604800),
        ("no replies after 2 hours", 7200),
        ("waiting for more than an hour", 3600),
        ("unanswered for a day", 86400),
        # a wait for an answer that did not come: the post must be past it
        ("if nobody answered within an hour", 3600),
        ("a question with no reply within 2 hours", 7200),
        ("questions nobody has responded to within 30 minutes", 1800),
        ("unanswered within a day", 86400),
        ("without a reply within three days", 3 * 86400),
        ("reply within an hour", None),  # how fast to answer, not an age
        ("answer questions within a day", None),
        ("comment within 2 hours of a post", None),
        ("after 9pm", None),  # a time of day, not an age
        ("after 10 posts", None),
        ("more than two days", None),  # no "old": not an age
        ("more than 3 replies", None),
        ("posted in the last hour", None),
        ("an old post", None),
    ],
)
def test_older_than(text: str, seconds: int | None) -> None:
    assert older_than(text) == seconds


def test_an_age_past_which_a_rule_applies_is_a_limit_but_not_a_recency() -> None:
    assert recent_limit("anything older than two days") == 2 * 86400
    assert recency("anything older than two days", 15, 0) is None
    assert recent_limit("posted in the last hour") == 3600
