"""The fingerprint of a heartbeat's inputs: equal fingerprints mean the model would read the same.

Pure. Everything a decision depends on goes in, normalized so that what does not change the
meaning does not change the fingerprint: whitespace runs are one space, the Ledger feed and the
open contradictions are sets (their order is the store's, not the world's), a post's age is left
out (time passing alone changes nothing) but its score and comment count are in. The local time
is in only as far as the rules name it (``time_inputs``): a rule "at 9am" makes the hour part of
it, a rule "daily" the date; rules that name no time leave time out.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Final

import msgspec

from ledger.records import RunContext
from loops.prompt import describe_actions

__all__ = ["fingerprint", "normalize", "time_inputs"]

_SPACE: Final = re.compile(r"\s+")
# Words that make the hour of the day an input: clock times and parts of the day.
_HOURLY: Final = re.compile(
    r"\b(?:\d{1,2}\s*(?:am|pm)|\d{1,2}:\d{2}|noon|midnight|hour|hourly|o'clock|morning|"
    r"afternoon|evening|night|tonight)\b",
    re.IGNORECASE,
)
# Words that make the date an input: days, weeks, months.
_DAILY: Final = re.compile(
    r"\b(?:daily|day|days|today|tomorrow|yesterday|week|weekly|weekend|weekday|month|monthly|"
    r"monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b",
    re.IGNORECASE,
)


def normalize(text: str) -> str:
    """``text`` with every run of whitespace one space, trimmed."""
    return _SPACE.sub(" ", text).strip()


def time_inputs(rules: str, local: datetime) -> str:
    """The part of the local time that the rules name: the date and hour, the date, or nothing."""
    if _HOURLY.search(rules):
        return local.strftime("%Y-%m-%d %H")
    if _DAILY.search(rules):
        return local.strftime("%Y-%m-%d")
    return ""


def fingerprint(
    rules: str,
    title: str,
    ctx: RunContext,
    local: datetime,
    events: Sequence[str] = (),
) -> str:
    """A hex digest of a beat's inputs: the HEARTBEAT.md text, the thread's title and messages,
    its personality, the Ledger feed, open contradictions, recent actions (as the prompt lists
    them), the local time the rules name and ``events`` (text a beat is woken with, if any)."""
    lines = [normalize(line) for line in rules.splitlines()]
    profile = ctx.profile
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
        "events": [normalize(e) for e in events],
    }
    return hashlib.sha256(msgspec.json.encode(data, order="sorted")).hexdigest()
