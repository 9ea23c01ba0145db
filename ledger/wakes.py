"""What a wake carries: its text, checked, and the texts of coalesced wakes joined. Pure.

A wake's text is an event told to the model as data (never as instructions); several wakes that
arrive before their beat starts make one beat whose event text is theirs joined, oldest first.
"""

from __future__ import annotations

from enum import StrEnum

from ledger.errors import HeartbeatError
from ledger.limits import WAKE_TEXT_MAX

__all__ = ["EVENT_SEPARATOR", "WakeMode", "WakeTextError", "check_text", "join_events"]

EVENT_SEPARATOR = "\n"


class WakeMode(StrEnum):
    """When a wake's beat runs."""

    NOW = "now"  # at once (or right after the run in flight)
    NEXT_HEARTBEAT = "next-heartbeat"  # with the thread's next scheduled beat


class WakeTextError(HeartbeatError, code="invalid_value", http_status=422):
    """A wake's text is empty, too long or holds a NUL byte."""


def check_text(text: str) -> str:
    """The wake's text trimmed; ``WakeTextError`` if it is empty, too long or holds NUL."""
    trimmed = text.strip()
    if not trimmed:
        raise WakeTextError("text must not be empty")
    if len(trimmed) > WAKE_TEXT_MAX:
        raise WakeTextError(f"text must be at most {WAKE_TEXT_MAX} characters")
    if "\x00" in trimmed:
        raise WakeTextError("text must not contain NUL bytes")
    return trimmed


def join_events(held: str | None, text: str) -> str:
    """The event text of a beat after one more wake coalesced into it."""
    return text if not held else f"{held}{EVENT_SEPARATOR}{text}"
