"""What a wake carries to its beat. Pure.

A wake's text is an event told to the model as data (never as instructions); several wakes that
arrive before their beat starts make one beat whose event text is theirs joined, oldest first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum

__all__ = [
    "EVENT_SEPARATOR",
    "LEDGER_EVENTS",
    "WakeMode",
    "join_all",
    "join_events",
    "ledger_event_text",
    "wakes_on",
]

EVENT_SEPARATOR = "\n"
LEDGER_EVENTS = ("post", "comment", "mention")
"""What a thread's config may wake on (``wake_on``): a new Ledger post, a new comment, or a
post or comment that mentions the agent (``@agent``)."""
EVENT_EXCERPT = 300  # characters of the post or comment told in the event

_MENTION = re.compile(r"(?<![\w@])@agent\b", re.IGNORECASE)


class WakeMode(StrEnum):
    """When a wake's beat runs."""

    NOW = "now"  # at once (or right after the run in flight)
    NEXT_HEARTBEAT = "next-heartbeat"  # with the thread's next scheduled beat


def wakes_on(kind: str, author: str, text: str, wake_on: Iterable[str], agent: str) -> bool:
    """Whether a new Ledger ``kind`` ("post" or "comment") by ``author`` wakes a thread whose
    config wakes on ``wake_on``. The agent's own writing never does (it would wake itself)."""
    if author == agent:
        return False
    wanted = set(wake_on)
    return kind in wanted or ("mention" in wanted and _MENTION.search(text) is not None)


def ledger_event_text(kind: str, author: str, post_id: str, title: str, content: str) -> str:
    """The event a Ledger post or comment is told as."""
    excerpt = content if len(content) <= EVENT_EXCERPT else content[: EVENT_EXCERPT - 1] + "…"
    if kind == "post":
        return f"new Ledger post {post_id} by {author}: {title!r}: {excerpt}"
    return f"new comment by {author} on Ledger post {post_id}: {excerpt}"


def join_events(held: str | None, text: str) -> str:
    """The event text of a beat after one more wake coalesced into it."""
    return text if not held else f"{held}{EVENT_SEPARATOR}{text}"


def join_all(texts: Iterable[str]) -> str:
    """The event text of a beat that coalesced ``texts``, oldest first."""
    joined: str | None = None
    for text in texts:
        joined = join_events(joined, text)
    return joined or ""
