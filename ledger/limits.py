"""Every limit a caller runs into, defined once. Pure data.

Validation reads these (``ledger.config``, ``loops.schedule``, ``loops.workspace`` and the HTTP
routes), the OpenAPI document (``GET /openapi.json``) is generated from them, and the dashboard
takes its hints and its inputs' bounds from that document.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, NamedTuple

__all__ = [
    "ACTIVE_HOURS_END",
    "ACTIVE_HOURS_START",
    "CONFIG_RANGES",
    "CONFIG_TEXT_MAX",
    "CONTENT_MAX",
    "EVERY_SECONDS",
    "INSTRUCTIONS_MAX_BYTES",
    "MAX_TOKENS",
    "MESSAGE_MAX",
    "PAGES",
    "POST_ID_MAX",
    "STATEMENT_MAX",
    "TEMPERATURE",
    "THREAD_ID_MAX",
    "TITLE_MAX",
    "Page",
    "Range",
]


class Range(NamedTuple):
    """The inclusive bounds ``lo..hi`` of a number."""

    lo: int
    hi: int


class Page(NamedTuple):
    """How many items a listing returns when not told (``default``) and at most (``maximum``)."""

    default: int
    maximum: int


# --- a thread's heartbeat config (ledger.config.HeartbeatConfig) ------------------------------
EVERY_SECONDS: Final = Range(60, 86_400)
MAX_TOKENS: Final = Range(10, 4000)
TEMPERATURE: Final = Range(0, 1)
ACTIVE_HOURS_START: Final = Range(0, 23)  # the first active hour
ACTIVE_HOURS_END: Final = Range(1, 24)  # the hour the window closes; 24 is midnight

CONFIG_RANGES: Final[Mapping[str, Range]] = {
    "every_seconds": EVERY_SECONDS,
    "max_tokens": MAX_TOKENS,
    "temperature": TEMPERATURE,
    "active_hours_start": ACTIVE_HOURS_START,
    "active_hours_end": ACTIVE_HOURS_END,
}
"""The config fields with a range, by name."""

CONFIG_TEXT_MAX: Final[Mapping[str, int]] = {"target": 200, "model": 200, "timezone": 64}
"""The config's text fields: at most this many characters as sent (before trimming)."""

# --- what a person writes through the API: characters as sent, before trimming ---------------
THREAD_ID_MAX: Final = 128
POST_ID_MAX: Final = 128
TITLE_MAX: Final = 200  # a thread's or a Ledger post's title
CONTENT_MAX: Final = 5000  # a Ledger post's or comment's content
MESSAGE_MAX: Final = 20_000  # a message of a thread
STATEMENT_MAX: Final = 2000  # each statement of a contradiction
INSTRUCTIONS_MAX_BYTES: Final = 64 * 1024  # HEARTBEAT.md, in bytes of UTF-8

# --- listings ----------------------------------------------------------------------------------
PAGES: Final[Mapping[str, Page]] = {
    "threads": Page(100, 1000),
    "messages": Page(50, 500),
    "history": Page(20, 200),
    "journal": Page(20, 200),  # reflections, personality versions, self-replies
    "posts": Page(20, 200),
}
