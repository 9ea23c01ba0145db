"""The fingerprint of a heartbeat's inputs: equal fingerprints mean the model would read the same.

Pure. Everything a decision depends on goes in, normalized so that what does not change the
meaning does not change the fingerprint: whitespace runs are one space, the Ledger feed and the
open contradictions are sets (their order is the store's, not the world's), a post's age is left
out (time passing alone changes nothing) but its score and comment count are in. The local time
is in only as far as the rules name it (``time_inputs``), read as the rule-by-rule procedure
reads times (``loops.timewords``): a rule "at 9am" makes whether 9:00 and 10:00 (its hour is
over) have passed today part of it, a rule "daily" the date; rules that name no time leave time
out.

``inputs`` also keeps the posts of others that count apart, one digest each, beside a digest of
the rest: when every rule holds of each post on its own, inputs that differ from the last
decided beat's only by such posts having left the feed are unchanged too, if that beat did
nothing (``unchanged``): what applied to none of the posts applies to none of fewer.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final, NamedTuple, cast

import msgspec

from heartbeat_md import parse
from ledger.records import BeatMemo, RunContext
from ledger.storage.interface import AGENT
from loops import reader, timewords
from loops.procedure import clock_facts
from loops.prompt import describe_actions
from loops.scope import FULL, Scope, in_scope

__all__ = ["Inputs", "inputs", "normalize", "time_inputs", "unchanged"]

_SPACE: Final = re.compile(r"\s+")
_POST_DIGEST: Final = 16  # hex digits kept of a post's digest (64 bits)
_HOURLY: Final = re.compile(r"\b(?:hourly|every hour|each hour|hours?)\b", re.IGNORECASE)
_DAILY: Final = re.compile(
    r"\b(?:daily|day|days|today|tomorrow|yesterday|week|weekly|weekend|weekday|month|monthly|"
    r"monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b",
    re.IGNORECASE,
)


def _texts(rules: str) -> list[str]:
    """Every line of the rules and every rule's condition, as the procedure reads them."""
    return [*rules.splitlines(), *(r.condition for r in reader.rules_of(parse(rules)))]


@functools.lru_cache(maxsize=64)
def _times_named(rules: str) -> tuple[tuple[int, ...], bool]:
    """The minutes of the day at which a time the rules name starts or stops holding, and
    whether they name days of the week: read as the rule-by-rule procedure reads them
    (``loops.timewords.read_time``)."""
    named = [c for text in _texts(rules) if (c := timewords.read_time(text)) is not None]
    marks = {m for c in named for w in c.windows for m in (w.start, w.end)}
    inside = tuple(sorted(m for m in marks if 0 < m < timewords.DAY_MINUTES))
    return inside, any(c.weekdays for c in named)


@functools.lru_cache(maxsize=64)
def _ages_named(rules: str) -> tuple[int, ...]:
    """The ages, in seconds, past which a post stops being as recent as a rule asks ("posted
    in the last hour": 3600), as the procedure reads them (``loops.timewords.recent_limit``)."""
    return tuple(sorted({a for t in _texts(rules) if (a := timewords.recent_limit(t))}))


def _young(rules: str, created_at: float, now: float) -> tuple[bool, ...]:
    """For each age a rule names, whether a post made at ``created_at`` is younger."""
    return tuple(now - created_at < age for age in _ages_named(rules))


def normalize(text: str) -> str:
    """``text`` with every run of whitespace one space, trimmed."""
    return _SPACE.sub(" ", text).strip()


def time_inputs(rules: str, local: datetime) -> str:
    """The part of the local time that the rules name, as coarse as they name it.

    "hourly" makes the date and hour an input. Otherwise each time of day a rule names, as the
    procedure reads it ("at 9am", "17:30", "at 9", "noon", "between 22:00 and 07:00", "every
    morning", "lunchtime"), makes the latest instant today at which one starts or stops holding
    an input (so "at 9am", which holds for an hour, changes it at 9:00, 10:00 and midnight), with
    the date; a day, week or month word, or a weekday, makes the date an input. Rules naming no
    time leave time out.
    """
    date = local.strftime("%Y-%m-%d")
    if _HOURLY.search(rules):
        return local.strftime("%Y-%m-%d %H")
    marks, days = _times_named(rules)
    pieces = []
    if marks:
        minute = local.hour * 60 + local.minute
        reached = [m for m in marks if m <= minute]
        pieces.append(f"{reached[-1] // 60:02d}:{reached[-1] % 60:02d}" if reached else "-")
    if pieces or days or _DAILY.search(rules):
        return " ".join([date, *pieces])
    return ""


class Inputs(NamedTuple):
    """A beat's inputs as the memo compares them (``inputs``)."""

    whole: str  # the fingerprint of everything
    rest: str  # of everything but the posts of others that count
    posts: tuple[str, ...]  # one short digest per such post, sorted
    per_post: bool  # the rules hold of each post on its own (``loops.scope.Scope.per_post``)


def inputs(
    rules: str,
    title: str,
    ctx: RunContext,
    local: datetime,
    events: Sequence[str] = (),
    scope: Scope = FULL,
) -> Inputs:
    """A beat's inputs digested: ``whole``, the fingerprint of them all (the HEARTBEAT.md text,
    the thread's title and messages, its personality, the Ledger feed, open contradictions,
    recent actions as the prompt lists them, the local time the rules name, the facts that time
    alone changes (``loops.procedure.clock_facts``, and whether each post is as young as an age
    a rule names) and ``events``, text a beat is woken with);
    and the same split for ``unchanged``: ``rest``, all but the counted posts of others, and
    ``posts``, one digest of each of those (with whether it is new).

    ``scope`` (``loops.scope.scope_of``) narrows them to what the rules can act on; the
    default, ``FULL``, covers everything."""
    lines = [normalize(line) for line in rules.splitlines()]
    profile = ctx.profile
    if not scope.full:
        data, theirs = _scoped(lines, title, ctx, local, events, scope, rules)
        whole = _digest({**data, "ledger": sorted([*data["ledger"], *theirs])})
        posts = tuple(sorted(_digest({"post": p})[:_POST_DIGEST] for p in theirs))
        return Inputs(whole, _digest(data), posts, scope.per_post)
    data = {
        "rules": [line for line in lines if line],
        "title": normalize(title),
        "messages": [(m.role, normalize(m.content)) for m in ctx.messages],
        "profile": None
        if profile is None
        else (sorted(profile.traits), normalize(profile.tone), sorted(profile.interests)),
        "ledger": sorted(
            (p.id, p.author, normalize(p.title), normalize(p.content), p.score, p.comment_count)
            for p in ctx.posts
        ),
        "contradictions": sorted(
            (normalize(c.statement_a), normalize(c.statement_b)) for c in ctx.contradictions
        ),
        "recent": describe_actions([r.decision for r in ctx.recent if r.decision]),
        "time": time_inputs(rules, local),
        "clock": clock_facts(ctx, ctx.posts, local.timestamp()),
        "young": sorted((p.id, _young(rules, p.created_at, local.timestamp())) for p in ctx.posts),
        "events": [normalize(e) for e in events],
    }
    whole = _digest(data)
    return Inputs(whole, whole, (), False)


def unchanged(memo: BeatMemo, now: Inputs) -> bool:
    """Whether a beat with inputs ``now`` would decide what the last decided beat (``memo``)
    did: the same inputs; or, when the rules hold of each post on its own and that beat did
    nothing, the same inputs but for posts of others that have left the feed since."""
    if now.whole == memo.fingerprint:
        return True
    return (
        now.per_post
        and memo.decision_key is None
        and now.rest == memo.rest_fingerprint
        and memo.seen_posts is not None
        and set(now.posts) <= set(memo.seen_posts)
    )


def _digest(data: Mapping[str, object]) -> str:
    return hashlib.sha256(msgspec.json.encode(data, order="sorted")).hexdigest()


def _scoped(
    lines: list[str],
    title: str,
    ctx: RunContext,
    local: datetime,
    events: Sequence[str],
    scope: Scope,
    rules: str,
) -> tuple[dict[str, Any], list[tuple[object, ...]]]:
    """The inputs ``scope`` keeps, each normalized as in the full fingerprint: all but the
    counted posts of others (the agent's own are in), and those posts, each with whether it
    is new."""
    profile = ctx.profile
    counted = in_scope(scope, rules, ctx.posts)
    clock = clock_facts(ctx, [c.post for c in counted], local.timestamp())
    if not scope.messages:
        clock["reminder"] = None
    new = set(cast("list[str]", clock.pop("new")))
    ours: list[tuple[object, ...]] = []
    theirs: list[tuple[object, ...]] = []
    for p, score, comments in counted:
        row = (
            p.id,
            p.author,
            normalize(p.title),
            normalize(p.content),
            p.score if score else None,
            p.comment_count if comments else None,
            p.id in new,
            _young(rules, p.created_at, local.timestamp()),
        )
        (ours if p.author == AGENT else theirs).append(row)
    data = {
        "scope": scope.decider,
        "rules": [line for line in lines if line],
        "title": normalize(title),
        "messages": [(m.role, normalize(m.content)) for m in ctx.messages]
        if scope.messages
        else None,
        "profile": None
        if profile is None or not scope.profile
        else (sorted(profile.traits), normalize(profile.tone), sorted(profile.interests)),
        "ledger": sorted(ours),
        "contradictions": sorted(
            (normalize(c.statement_a), normalize(c.statement_b)) for c in ctx.contradictions
        )
        if scope.contradictions
        else None,
        "recent": describe_actions([r.decision for r in ctx.recent if r.decision]),
        "time": time_inputs(rules, local),
        "clock": clock,
        "events": [normalize(e) for e in events],
    }
    return data, sorted(theirs)
