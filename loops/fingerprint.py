"""The fingerprint of a heartbeat's inputs: equal fingerprints mean the model would read the same.

Pure. Everything a decision depends on goes in, normalized so that what does not change the
meaning does not change the fingerprint: whitespace runs are one space, the Ledger feed and the
open contradictions are sets (their order is the store's, not the world's), a post's age is left
out (time passing alone changes nothing) but its score and comment count are in. The local time
is in only as far as the rules name it (``time_inputs``): a rule "at 9am" makes whether 9:00 has
passed today part of it, a rule "daily" the date; rules that name no time leave time out.

``inputs`` also keeps the posts of others that count apart, one digest each, beside a digest of
the rest: when every rule holds of each post on its own, inputs that differ from the last
decided beat's only by such posts having left the feed are unchanged too, if that beat did
nothing (``unchanged``): what applied to none of the posts applies to none of fewer.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final, NamedTuple, cast

import msgspec

from ledger.records import BeatMemo, RunContext
from ledger.storage.interface import AGENT
from loops.procedure import clock_facts
from loops.prompt import describe_actions
from loops.scope import FULL, Scope, in_scope

__all__ = ["Inputs", "inputs", "normalize", "time_inputs", "unchanged"]

_SPACE: Final = re.compile(r"\s+")
_POST_DIGEST: Final = 16  # hex digits kept of a post's digest (64 bits)
_HOURLY: Final = re.compile(r"\b(?:hourly|every hour|each hour|hours?)\b", re.IGNORECASE)
_CLOCK: Final = re.compile(
    r"\b(?:(?P<h12>\d{1,2})(?::(?P<m12>\d{2}))?\s*(?P<ap>am|pm)|(?P<h>\d{1,2}):(?P<m>\d{2})|"
    r"(?P<word>noon|midnight))\b",
    re.IGNORECASE,
)
_PARTS: Final = re.compile(r"\b(?:morning|afternoon|evening|night|tonight)\b", re.IGNORECASE)
_DAILY: Final = re.compile(
    r"\b(?:daily|day|days|today|tomorrow|yesterday|week|weekly|weekend|weekday|month|monthly|"
    r"monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b",
    re.IGNORECASE,
)


def _clock_marks(rules: str) -> list[int]:
    """The times of day the rules name, in minutes after midnight."""
    marks = set()
    for m in _CLOCK.finditer(rules):
        if m["word"]:
            marks.add(720 if m["word"].lower() == "noon" else 0)
        elif m["ap"]:
            hour = int(m["h12"]) % 12 + (12 if m["ap"].lower() == "pm" else 0)
            marks.add(hour * 60 + int(m["m12"] or 0))
        elif int(m["h"]) < 24 and int(m["m"]) < 60:
            marks.add(int(m["h"]) * 60 + int(m["m"]))
    return sorted(marks)


def _part_of_day(hour: int) -> str:
    if 5 <= hour < 12:
        return "morning"
    if 12 <= hour < 17:
        return "afternoon"
    if 17 <= hour < 22:
        return "evening"
    return "night"


def normalize(text: str) -> str:
    """``text`` with every run of whitespace one space, trimmed."""
    return _SPACE.sub(" ", text).strip()


def time_inputs(rules: str, local: datetime) -> str:
    """The part of the local time that the rules name, as coarse as they name it.

    "hourly" makes the date and hour an input; each clock time named ("at 9am", "17:30", "noon")
    the latest one reached today (so "at 9am" changes the input at 9:00 and at midnight only); a
    part of the day ("every morning") which part it is; a day, week or month word the date.
    Rules naming no time leave time out.
    """
    date = local.strftime("%Y-%m-%d")
    if _HOURLY.search(rules):
        return local.strftime("%Y-%m-%d %H")
    pieces = []
    marks = _clock_marks(rules)
    if marks:
        minute = local.hour * 60 + local.minute
        reached = [m for m in marks if m <= minute]
        pieces.append(f"{reached[-1] // 60:02d}:{reached[-1] % 60:02d}" if reached else "-")
    if _PARTS.search(rules):
        pieces.append(_part_of_day(local.hour))
    if pieces or _DAILY.search(rules):
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
    alone changes (``loops.procedure.clock_facts``) and ``events``, text a beat is woken with);
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
        and memo.fingerprint is not None
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
