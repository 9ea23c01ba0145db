"""What a wake carries to its beat. Pure.

A wake's text is an event told to the model as data (never as instructions); several wakes that
arrive before their beat starts make one beat whose event text is theirs joined, oldest first.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

__all__ = ["EVENT_SEPARATOR", "WakeMode", "join_all", "join_events"]

EVENT_SEPARATOR = "\n"


class WakeMode(StrEnum):
    """When a wake's beat runs."""

    NOW = "now"  # at once (or right after the run in flight)
    NEXT_HEARTBEAT = "next-heartbeat"  # with the thread's next scheduled beat


def join_events(held: str | None, text: str) -> str:
    """The event text of a beat after one more wake coalesced into it."""
    return text if not held else f"{held}{EVENT_SEPARATOR}{text}"


def join_all(texts: Iterable[str]) -> str:
    """The event text of a beat that coalesced ``texts``, oldest first."""
    joined: str | None = None
    for text in texts:
        joined = join_events(joined, text)
    return joined or ""
