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
    "BACKOFF_SECONDS",
    "CONFIG_RANGES",
    "CONFIG_TEXT_MAX",
    "CONTENT_MAX",
    "DAILY_TOKEN_BUDGET",
    "EVERY_SECONDS",
    "INSTRUCTIONS_MAX_BYTES",
    "INSTRUCTIONS_REVISIONS_KEPT",
    "LEASE_RENEW_SECONDS",
    "LEASE_SECONDS",
    "MAX_TOKENS",
    "MESSAGE_MAX",
    "PAGES",
    "PAUSE_AFTER_FAILURES",
    "POST_ID_MAX",
    "QUIET_AFTER_USER_SECONDS",
    "REPEAT_LIMIT",
    "REVISION_MAX",
    "STATEMENT_MAX",
    "TEMPERATURE",
    "THREAD_ID_MAX",
    "TITLE_MAX",
    "WAKE_EVENTS_MAX",
    "WAKE_MIN_SPACING",
    "WAKE_MIN_SPACING_DEFAULT",
    "WAKE_PER_MINUTE",
    "WAKE_PER_MINUTE_DEFAULT",
    "WAKE_TEXT_MAX",
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
DAILY_TOKEN_BUDGET: Final = Range(100, 100_000_000)  # tokens a thread may spend a local day
QUIET_AFTER_USER_SECONDS: Final = Range(10, 86_400)  # how long a beat yields after the user wrote

CONFIG_RANGES: Final[Mapping[str, Range]] = {
    "every_seconds": EVERY_SECONDS,
    "max_tokens": MAX_TOKENS,
    "temperature": TEMPERATURE,
    "active_hours_start": ACTIVE_HOURS_START,
    "active_hours_end": ACTIVE_HOURS_END,
    "daily_token_budget": DAILY_TOKEN_BUDGET,
    "quiet_after_user_seconds": QUIET_AFTER_USER_SECONDS,
}
"""The config fields with a range, by name."""

CONFIG_TEXT_MAX: Final[Mapping[str, int]] = {"target": 200, "model": 200, "timezone": 64}
"""The config's text fields: at most this many characters as sent (before trimming)."""

# --- what a heartbeat spends (loops.spend) ------------------------------------------------------
PAUSE_AFTER_FAILURES: Final = 3  # failures of one kind in a row (unreachable, model, auth)
BACKOFF_SECONDS: Final = Range(60, 6 * 3600)  # a paused thread's wait before it probes again
REPEAT_LIMIT: Final = 3  # the same decision this many times on unchanged inputs is stopped

# --- replicas on one database (loops.replicas) -------------------------------------------------
# A replica's lease lasts this long past its last renewal; renewed this often. Past its lease a
# replica counts as gone: its running runs are marked interrupted and its threads move to the
# others. Lease plus one renewal, plus a catch-up's spread (half an interval at most), stays
# under the shortest interval, so a moved thread's beat is never a whole interval late.
LEASE_SECONDS: Final = 15.0
LEASE_RENEW_SECONDS: Final = 5.0

# --- what a person writes through the API: characters as sent, before trimming ---------------
THREAD_ID_MAX: Final = 128
POST_ID_MAX: Final = 128
TITLE_MAX: Final = 200  # a thread's or a Ledger post's title
CONTENT_MAX: Final = 5000  # a Ledger post's or comment's content
MESSAGE_MAX: Final = 20_000  # a message of a thread
STATEMENT_MAX: Final = 2000  # each statement of a contradiction
INSTRUCTIONS_MAX_BYTES: Final = 64 * 1024  # HEARTBEAT.md, in bytes of UTF-8
INSTRUCTIONS_REVISIONS_KEPT: Final = 50  # HEARTBEAT.md's revisions the database keeps
REVISION_MAX: Final = 64  # characters of the revision a save names as its base

# --- listings ----------------------------------------------------------------------------------
PAGES: Final[Mapping[str, Page]] = {
    "threads": Page(100, 1000),
    "messages": Page(50, 500),
    "history": Page(20, 200),
    "journal": Page(20, 200),  # reflections, personality versions, self-replies
    "posts": Page(20, 200),
}

# --- wakes (POST /api/threads/{id}/heartbeat/wake) --------------------------------------------
WAKE_TEXT_MAX: Final = 2000  # one wake's text, characters after trimming
WAKE_EVENTS_MAX: Final = 20  # wakes coalesced into one beat (or held for the next) at most
# The flood guard, per thread: seconds between two beats that wakes start (a wake's beat waits
# for it), and wakes accepted in a minute (started, coalesced or held; the excess is refused).
# Settings, bounded by these ranges.
WAKE_MIN_SPACING: Final = Range(0, 3600)
WAKE_PER_MINUTE: Final = Range(1, 600)
WAKE_MIN_SPACING_DEFAULT: Final = 10
WAKE_PER_MINUTE_DEFAULT: Final = 30
