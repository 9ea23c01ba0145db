"""A small demo for a fresh install (``heartbeat serve --demo``, used by ``make run``).

On a new database only — no posts, no messages, no runs, no thread but ``default`` — and only
when there is no HEARTBEAT.md yet, it writes a HEARTBEAT.md, puts a few posts on the Ledger (an
explicit question, a spam-like advert, two ordinary ones), adds a short conversation to the
``default`` thread and turns that thread's heartbeat on for real (not a dry run) every 30 minutes,
with the first run a few seconds after start, so a person sees a decision at once.

It never touches a database or a HEARTBEAT.md that someone has used.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ledger import config as hbconfig
from ledger.storage.interface import USER, Storage, Tx
from loops.workspace import write_instructions

__all__ = ["DEMO_HEARTBEAT_MD", "DEMO_MESSAGES", "DEMO_POSTS", "is_new_database", "seed_demo"]

log = logging.getLogger(f"heartbeat.{__name__}")

THREAD = "default"
EVERY_SECONDS = 1800

DEMO_HEARTBEAT_MD = """\
# Heartbeat (demo)

This file holds the standing instructions the heartbeat reads before every decision.
Edit it in the dashboard or in your editor; the next run picks up the change.

## Checklist
- [ ] Scan the Ledger for new posts
- [ ] Look for questions that nobody has answered yet

## Rules
If a post asks a question and has no comments → comment with a short, helpful answer.
If a post is spam or an advertisement → vote it down.
If nothing needs doing → reply HEARTBEAT_OK.

## Proactive Behaviors
- Vote up useful posts from the user
- Keep comments short and friendly
"""

# (author, title, content), oldest first
DEMO_POSTS: tuple[tuple[str, str, str], ...] = (
    (
        USER,
        "Plan for this week",
        "Finish the garden shed, call the plumber on Tuesday, book club on Thursday.",
    ),
    (
        "dave",
        "Book club moved to Thursday",
        "We meet at 19:00 at the library; bring chapter 5 notes.",
    ),
    (
        "promo_bot",
        "WIN A FREE PHONE!!! Click now",
        "Limited offer!!! Click the link to claim your free phone today, act fast!!!",
    ),
    (
        "carol",
        "How do I export my notes to PDF?",
        "Is there a simple way to export all my notes into one PDF file?",
    ),
)

DEMO_MESSAGES: tuple[tuple[str, str], ...] = (
    ("user", "Hi! I just set up the heartbeat. Keep an eye on the Ledger for me, please."),
    ("assistant", "Will do. I will look at the Ledger every 30 minutes and act on your rules."),
    ("user", "Carol asked something about PDF exports. If nobody answers, could you help her?"),
)


async def is_new_database(store: Storage) -> bool:
    """No posts, no messages, no runs, and no thread but ``default``."""
    if await store.thread_ids() not in ([], [THREAD]):
        return False
    if await store.posts(limit=1):
        return False
    if await store.messages(THREAD, limit=1):
        return False
    return await store.count_runs() == 0


async def seed_demo(store: Storage, workspace: Path, *, first_run_in: float = 15.0) -> bool:
    """Seed the demo into a new database and workspace; returns True if it seeded.

    Call it after ``Service.open`` (which creates ``default``) and before the loops start, so
    the scheduler arms the first run from the stored ``next_run``.
    """
    heartbeat_md = workspace / "HEARTBEAT.md"
    if heartbeat_md.exists():
        log.info("[HEARTBEAT] demo not seeded: %s already exists", heartbeat_md)
        return False
    if not await is_new_database(store):
        log.info("[HEARTBEAT] demo not seeded: the database %s is in use", store.location)
        return False

    cfg = hbconfig.HeartbeatConfig(
        enabled=True, every_seconds=EVERY_SECONDS, dry_run=False, temperature=0.2
    )
    hbconfig.validate_config(cfg)
    # HEARTBEAT.md first: if start-up dies before the database commit, what is left is a
    # usable HEARTBEAT.md and an empty database, an ordinary state (the demo is not retried).
    await write_instructions(heartbeat_md, DEMO_HEARTBEAT_MD)

    def seed(tx: Tx) -> None:
        tx.create_thread(THREAD, "Default", None)
        for author, title, content in DEMO_POSTS:
            tx.create_post(author, title, content)
        for role, content in DEMO_MESSAGES:
            tx.add_message(THREAD, role, content)
        # The first run comes soon after start; later runs every 30 minutes on the same grid.
        next_run = tx.now + first_run_in
        tx.set_config(THREAD, hbconfig.encode(cfg), next_run - EVERY_SECONDS, next_run)

    await store.write(seed)
    log.info(
        "[HEARTBEAT] demo seeded: %s, %d Ledger posts, %d messages in thread %r, "
        "heartbeat every %d min (first run in %.0f s)",
        heartbeat_md,
        len(DEMO_POSTS),
        len(DEMO_MESSAGES),
        THREAD,
        EVERY_SECONDS // 60,
        first_run_in,
    )
    return True
