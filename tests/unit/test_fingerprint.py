"""The fingerprint of a beat's inputs: what changes it, and what must not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from heartbeat_md import parse
from ledger.records import Contradiction, Message, Post, Profile, Run, RunContext
from loops.fingerprint import inputs, time_inputs
from loops.reader import rules_of
from loops.scope import FULL, scope_of
from loops.timewords import read_time

RULES = "## Rules\n- If a post asks a question, comment on it.\n"
NOON = datetime(2026, 3, 2, 12, 5, tzinfo=UTC)


def _post(pid: str, *, created: float = 1.0, score: int = 0, comments: int = 0) -> Post:
    return Post(
        id=pid,
        author="user",
        title=f"Title {pid}",
        content=f"Body of {pid}",
        created_at=created,
        score=score,
        comment_count=comments,
    )


def _run(decision: dict[str, str]) -> Run:
    return Run(
        id=1, thread_id="t", loop="heartbeat", trigger="schedule", slot=None, status="ok",
        reason=None, model="m", action=decision["action"], decision=decision, executed=[],
        summary=None, dry_run=False, error=None, prompt_tokens=1, completion_tokens=1,
        llm_ms=1.0, started_at=1.0, finished_at=2.0,
    )  # fmt: skip


BASE = RunContext(
    messages=[Message(id=1, thread_id="t", role="user", content="hello there", created_at=5.0)],
    contradictions=[
        Contradiction(
            id=1, thread_id="t", statement_a="a", statement_b="b", status="open", created_at=1.0
        ),
        Contradiction(
            id=2, thread_id="t", statement_a="c", statement_b="d", status="open", created_at=1.0
        ),
    ],
    profile=None,
    posts=[_post("p2"), _post("p1")],
    recent=[],
)


def fp(ctx: RunContext = BASE, rules: str = RULES, when: datetime = NOON, **kw: object) -> str:
    return inputs(rules, str(kw.get("title", "Default")), ctx, when).whole


def with_(**changes: object) -> RunContext:
    return msgspec.structs.replace(BASE, **changes)


SAME = [
    pytest.param(with_(posts=[_post("p1"), _post("p2")]), RULES, NOON, id="feed-reordered"),
    pytest.param(
        with_(contradictions=list(reversed(BASE.contradictions))),
        RULES,
        NOON,
        id="contradictions-reordered",
    ),
    pytest.param(
        with_(posts=[_post("p2", created=99.0), _post("p1", created=50.0)]),
        RULES,
        NOON,
        id="post-timestamps",
    ),
    pytest.param(
        with_(messages=[msgspec.structs.replace(BASE.messages[0], content="  hello\n there ")]),
        RULES,
        NOON,
        id="message-whitespace",
    ),
    pytest.param(
        with_(messages=[msgspec.structs.replace(BASE.messages[0], created_at=77.0)]),
        RULES,
        NOON,
        id="message-timestamp",
    ),
    pytest.param(BASE, RULES.replace("- If", "-   If") + "\n\n", NOON, id="rules-whitespace"),
    pytest.param(BASE, RULES, datetime(2026, 7, 9, 3, 0, tzinfo=UTC), id="time-unnamed"),
]


@pytest.mark.parametrize(("ctx", "rules", "when"), SAME)
def test_what_does_not_change_it(ctx: RunContext, rules: str, when: datetime) -> None:
    assert fp(ctx, rules, when) == fp()


CHANGED = [
    pytest.param(with_(posts=[*BASE.posts, _post("p3")]), RULES, NOON, id="new-post"),
    pytest.param(with_(posts=[_post("p2", score=1), _post("p1")]), RULES, NOON, id="vote"),
    pytest.param(with_(posts=[_post("p2", comments=1), _post("p1")]), RULES, NOON, id="comment"),
    pytest.param(
        with_(
            messages=[
                *BASE.messages,
                Message(id=2, thread_id="t", role="user", content="more", created_at=6.0),
            ]
        ),
        RULES,
        NOON,
        id="new-message",
    ),
    pytest.param(with_(contradictions=BASE.contradictions[:1]), RULES, NOON, id="resolved"),
    pytest.param(
        with_(recent=[_run({"action": "vote", "post_id": "p1", "vote_direction": "up"})]),
        RULES,
        NOON,
        id="recent-action",
    ),
    pytest.param(
        with_(
            profile=Profile(
                id=1,
                thread_id="t",
                version=1,
                traits=["curious"],
                tone="warm",
                interests=[],
                last_message_id=1,
                run_id=None,
                created_at=1.0,
            )
        ),
        RULES,
        NOON,
        id="profile",
    ),
    pytest.param(BASE, RULES + "- Vote up good posts.\n", NOON, id="new-rule"),
    pytest.param(BASE, RULES.replace("comment", "vote"), NOON, id="rule-edited"),
]


@pytest.mark.parametrize(("ctx", "rules", "when"), CHANGED)
def test_what_changes_it(ctx: RunContext, rules: str, when: datetime) -> None:
    assert fp(ctx, rules, when) != fp()


def test_the_title_and_wake_events_are_inputs() -> None:
    assert fp(title="Other") != fp()
    woken = inputs(RULES, "Default", BASE, NOON, ("the build broke",)).whole
    assert woken != fp()


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        # at 12:05: the latest instant today at which a named time starts or stops holding
        ("Post a greeting at 9am.", "2026-03-02 10:00"),  # holds 9:00-10:00
        ("At 09:30 check the feed.", "2026-03-02 10:30"),
        ("At 9am and at 5pm sum up.", "2026-03-02 10:00"),
        ("At 1:15pm post a note.", "2026-03-02 -"),
        ("At noon post lunch.", "2026-03-02 12:00"),
        ("Every morning say hi.", "2026-03-02 12:00"),  # morning: 6:00-12:00
        ("Every evening post a digest.", "2026-03-02 -"),  # evening: from 18:00
        # as the procedure reads them: bare hours, plurals, ranges, other parts of the day
        ("Post a digest at 9.", "2026-03-02 10:00"),
        ("Mornings: say hi.", "2026-03-02 12:00"),
        ("Nothing between midnight and 7.", "2026-03-02 07:00"),
        ("At lunchtime post the menu.", "2026-03-02 12:00"),
        ("Overnight, stay quiet.", "2026-03-02 06:00"),
        ("On weekdays sum up the news.", "2026-03-02"),
        ("Fridays: sum up the week.", "2026-03-02"),
        ("Post an hourly digest.", "2026-03-02 12"),
        ("Post a daily digest.", "2026-03-02"),
        ("On Friday, sum up the week.", "2026-03-02"),
        ("Comment on questions.", ""),
        ("Vote on posts with 3+ comments.", ""),
    ],
)
def test_time_inputs_are_what_the_rules_name(rules: str, expected: str) -> None:
    assert time_inputs(rules, NOON) == expected


def test_a_clock_rule_changes_it_when_the_time_is_reached_and_a_daily_rule_each_day() -> None:
    at9, daily = "Post at 9am.", "Post a daily digest."
    early, nine = datetime(2026, 3, 2, 8, 59, tzinfo=UTC), datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    half, ten = datetime(2026, 3, 2, 9, 35, tzinfo=UTC), datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    later = datetime(2026, 3, 2, 13, 5, tzinfo=UTC)
    tomorrow = datetime(2026, 3, 3, 12, 5, tzinfo=UTC)
    assert fp(rules=at9, when=nine) != fp(rules=at9, when=early)
    assert fp(rules=at9, when=half) == fp(rules=at9, when=nine)  # "at 9am" holds for an hour
    assert fp(rules=at9, when=ten) != fp(rules=at9, when=half)  # and stops holding once
    assert fp(rules=at9, when=later) == fp(rules=at9, when=ten)
    assert fp(rules=daily, when=later) == fp(rules=daily)
    assert fp(rules=daily, when=tomorrow) != fp(rules=daily)


T = NOON.timestamp()
DAY, HOUR = 86_400.0, 3_600.0


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _posted_at(started: float) -> Run:
    return msgspec.structs.replace(
        _run({"action": "post", "title": "Summary", "content": "x"}), started_at=started
    )


def _asks(created: float) -> Message:
    return Message(
        id=2, thread_id="t", role="user", content="remind me to call Ana", created_at=created
    )


@pytest.mark.parametrize(
    ("ctx", "before", "after", "changed"),
    [
        pytest.param(with_(posts=[_post("p1", created=T)]), T + HOUR, T + 2 * HOUR, False,
                     id="a-new-post-an-hour-older"),
        pytest.param(with_(posts=[_post("p1", created=T)]), T + DAY - 1, T + DAY + 1, True,
                     id="a-post-stops-being-new"),
        pytest.param(with_(recent=[_posted_at(T)]), T + HOUR, T + 11 * HOUR, False,
                     id="own-post-still-recent"),
        pytest.param(with_(recent=[_posted_at(T)]), T + 11 * HOUR, T + 13 * HOUR, True,
                     id="own-post-no-longer-recent"),
        pytest.param(with_(messages=[_asks(T)]), T + HOUR, T + 20 * HOUR, False,
                     id="a-reminder-request-still-open"),
        pytest.param(with_(messages=[_asks(T)]), T + 20 * HOUR, T + DAY + 1, True,
                     id="a-reminder-request-lapses"),
    ],
)  # fmt: skip
def test_time_alone_changes_it_when_a_fact_flips(
    ctx: RunContext, before: float, after: float, changed: bool
) -> None:
    # A beat that read the same rows may still decide otherwise once a post is no longer
    # new, or the agent's last post is no longer recent: each such flip is an input, once.
    assert (fp(ctx, when=_at(after)) != fp(ctx, when=_at(before))) is changed


@pytest.mark.parametrize(
    "rule",
    [
        "At 8am post a digest.",
        "Post a digest at 9.",
        "Around 18:30, sum up the day.",
        "Every evening post a digest.",
        "Mornings: say hi.",
        "At lunchtime post the menu.",
        "Between 22:00 and 07:00 do nothing.",
        "From 9 to 5 answer questions.",
        "After 22:00 stay quiet.",
        "Monday to Friday at 8, post the agenda.",
        "Overnight, stay quiet.",
    ],
)
def test_the_time_input_changes_whenever_a_rules_time_starts_or_stops_holding(rule: str) -> None:
    """The fingerprint must never hide a moment at which the procedure's reading of a rule's
    time flips (a beat skipped then would miss the rule)."""
    rules = f"## Rules\n- {rule}\n"
    (read,) = rules_of(parse(rules))
    when = read_time(read.condition)
    assert when is not None
    day = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
    before = None
    for minute in range(0, 24 * 60, 5):
        local = day + timedelta(minutes=minute)
        state = (when.holds(local.hour, local.minute, local.weekday()), time_inputs(rules, local))
        if before is not None and state[0] != before[0]:
            assert state[1] != before[1], f"{rule!r} flips at {local:%H:%M} unseen"
        before = state


@pytest.mark.parametrize("scoped", [False, True])
@pytest.mark.parametrize(
    "rule",
    [
        "Comment on questions posted in the last 30 minutes.",
        "Don't reply to posts from the past 45 minutes.",
    ],
)
def test_a_post_ageing_past_an_age_a_rule_names_changes_it_once(rule: str, scoped: bool) -> None:
    rules = f"## Rules\n- {rule}\n- Comment on questions.\n"
    born = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    limit = 30 if "30" in rule else 45
    ctx = with_(posts=[_post("p1", created=born.timestamp())])

    def at(minutes: float) -> str:
        when = born + timedelta(minutes=minutes)
        scope = scope_of(rules, ctx, "prompt", "t") if scoped else FULL
        return inputs(rules, "Default", ctx, when, (), scope).whole

    assert at(1) == at(limit - 1)  # as recent as the rule asks all along
    assert at(limit + 1) != at(limit - 1)  # and then no longer: the beat decides
    assert at(limit + 1) == at(limit + 20)
