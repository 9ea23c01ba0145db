"""What the program asks of storage: the ``Storage`` and the ``Tx`` its writes receive.

``loops/`` and ``app/`` are written against these Protocols; only the composition root names a
backend (today ``ledger.storage.sqlite.SqliteStore``). A backend implements them under this
contract:

- Writes are plain synchronous functions of a ``Tx``: ``await storage.write(fn)`` runs
  ``fn(tx)`` inside a transaction in the backend's own writer thread and returns its result.
  ``fn`` must not block on anything but the database nor touch the event loop (no awaiting, no
  publishing): whatever it must know is read before, or through ``tx`` inside the transaction.
  A backend on another database (e.g. PostgreSQL) does the same with a synchronous driver in
  its own writer thread.
- Writes that arrive while a transaction commits may share the next one (group commit). Each
  write is isolated: if ``fn`` raises, its own changes are rolled back, the exception is raised
  to its caller, and the other writes of the transaction still commit. Writes are made in the
  order they were given, except that ``first=True`` ones go ahead of those queued.
- ``tx.now`` is the transaction's time, read once from the clock the storage was opened with;
  every write of one transaction sees the same value.
- While another process holds the database locked the transaction is retried with backoff;
  past the last retry the write raises ``StorageBusy``. After ``close()`` (which first commits
  the queued writes) a write raises ``StoreClosed``. A missing thread, post or run raises
  ``NotFound`` (``ledger.errors``).
- Reads return the records of ``ledger.records``, each read from one committed snapshot;
  ``run_context`` reads all its parts from one snapshot.
- Run rows carry their process in ``owner``: ``close()`` marks this process's ``running`` runs
  ``interrupted`` (reason ``shutdown``) and ``mark_interrupted()``, at start-up, those of
  processes that are gone (reason ``process_died``).
- Replicas sharing a database (``shared``: PostgreSQL) each hold a lease keyed by ``owner``
  and renew it (``Tx.hold_lease``); ``mark_interrupted()`` also ends the leases that ran out
  (``ledger.storage.identity.lease_expired``), each exactly once, interrupting their runs.
  ``close()`` gives this process's lease up.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any, Final, Protocol, TypeVar

from ledger.errors import StorageFault
from ledger.records import (
    BeatDay,
    BeatMemo,
    ChangeBatch,
    Comment,
    Contradiction,
    Lease,
    Message,
    NewProfile,
    NewReflection,
    PlanFix,
    Post,
    Profile,
    Reflection,
    Run,
    RunContext,
    RunOutcome,
    RunStart,
    SelfReply,
    StoredInstructions,
    Thread,
    Vote,
)

__all__ = [
    "AGENT",
    "USER",
    "BeatReads",
    "BeatWrites",
    "ChangeFeed",
    "ForumReads",
    "ForumWrites",
    "InstructionsReads",
    "InstructionsWrites",
    "JournalReads",
    "JournalWrites",
    "MessageReads",
    "MessageWrites",
    "NewProfile",
    "NewReflection",
    "PlanFix",
    "ReplicaReads",
    "ReplicaWrites",
    "RunReads",
    "RunStart",
    "RunWrites",
    "Storage",
    "ThreadReads",
    "ThreadWrites",
    "Tx",
    "WakeReads",
    "WakeWrites",
]

# The records the writes take (``NewProfile``, ``NewReflection``, ``RunStart``) live in
# ``ledger.records`` (a stored reflection or profile extends what was written) and are
# exported here with the Protocols that take them.

# Authors and voters on the Ledger forum.
USER: Final = "user"
AGENT: Final = "agent"

T = TypeVar("T")


# -- writes, inside a transaction -----------------------------------------------------------------
class ThreadWrites(Protocol):
    def get_thread(self, thread_id: str) -> Thread:
        """The thread as this transaction sees it; ``NotFound`` if there is none."""
        ...

    def create_thread(self, thread_id: str, title: str, config_json: str | None) -> bool:
        """Insert the thread unless it exists; True if it was inserted."""
        ...

    def set_config(
        self, thread_id: str, config_json: str, anchor: float | None, next_run: float | None
    ) -> None:
        """Store a thread's encoded heartbeat config with its planned anchor and next run."""
        ...

    def set_next_run(
        self, thread_id: str, next_run: float | None, *, expect: float | None = None
    ) -> bool:
        """Move a thread's next run; with ``expect``, only if it still holds that value (CAS)."""
        ...

    def claim_slots(self, claims: Sequence[tuple[str, float, float]]) -> set[str]:
        """Compare-and-set many threads' next run at once: (thread, expected slot, new next).

        Returns the ids whose stored next run still held the expected slot (and now moved on).
        """
        ...

    def store_plans(self, fixes: Sequence[PlanFix]) -> set[str]:
        """Store many threads' planned anchor and next run at once, each only if the thread
        still holds the config its plan was made from (a config saved meanwhile wins).

        Returns the ids whose plan was stored."""
        ...

    def note_heartbeat(
        self, thread_id: str, summary: str | None, actions: list[dict[str, Any]]
    ) -> None:
        """Record on the thread its last heartbeat: now, its summary and what it did."""
        ...


class MessageWrites(Protocol):
    def add_message(
        self, thread_id: str, role: str, content: str, run_id: int | None = None
    ) -> Message:
        """Append a message to the thread (which is then updated now)."""
        ...

    def add_contradiction(self, thread_id: str, a: str, b: str) -> Contradiction:
        """Record an ``open`` contradiction between two statements of the thread."""
        ...

    def set_contradiction_status(self, contradiction_id: int, status: str) -> bool:
        """Set a contradiction's status; False if there is no such contradiction."""
        ...


class ForumWrites(Protocol):
    def create_post(self, author: str, title: str, content: str, run_id: int | None = None) -> Post:
        """Publish a post on the Ledger."""
        ...

    def add_comment(
        self, post_id: str, author: str, content: str, run_id: int | None = None
    ) -> Comment:
        """Comment on a post; ``NotFound`` if there is no such post."""
        ...

    def vote(self, post_id: str, voter: str, direction: str, run_id: int | None = None) -> Vote:
        """One vote per voter per post: a new vote replaces the old one. ``NotFound`` likewise."""
        ...


class RunWrites(Protocol):
    def start_run(self, run: RunStart) -> int | None:
        """Insert a ``running`` row. Returns None when the (thread, loop, slot) is taken."""
        ...

    def record_run(self, run: RunStart, outcome: RunOutcome) -> int | None:
        """Insert an already finished row (e.g. a ``skipped`` slot); None if the slot is taken."""
        ...

    def running_heartbeat(self, thread_id: str) -> int | None:
        """The id of the thread's heartbeat run in flight on any replica, if one is; takes the
        thread's row lock, so two replicas' checks of one thread are made one after the other."""
        ...

    def running_heartbeat_threads(self) -> set[str]:
        """The threads whose heartbeat is in flight, on any replica."""
        ...

    def finish_run(self, run_id: int, outcome: RunOutcome) -> Run:
        """Record the outcome of a ``running`` run; returns the finished row. ``NotFound`` if
        there is none, ``RunEnded`` (nothing written) if it is no longer ``running``."""
        ...

    def end_unconfirmed_starts(self, run_ids: Sequence[int], owner: str) -> list[Run]:
        """Mark those of ``run_ids`` still ``running``, owned by ``owner`` and without a slot,
        ``interrupted`` with reason ``start_unconfirmed``: rows whose start was reported failed
        (its ``COMMIT`` cut) but committed. The rows as marked, by id."""
        ...


class ReplicaWrites(Protocol):
    def hold_lease(self, owner: str, expires_at: float) -> bool:
        """Renew ``owner``'s lease to ``expires_at``, or take one if it holds none (it never
        did, or its lease ran out and another replica ended it): True if it was renewed."""
        ...

    def release_lease(self, owner: str) -> None:
        """Give ``owner``'s lease up (it stops)."""
        ...

    def end_lease(self, lease: Lease) -> list[Run] | None:
        """End a gone replica's ``lease`` as read: delete it and mark its ``running`` runs
        ``interrupted`` (``process_died``); those rows as marked. None, and nothing written, if
        the lease is no longer the one read (another replica ended it, or it was renewed)."""
        ...

    def end_expired_leases(self) -> list[Run]:
        """End every lease that ran out by ``now`` (as ``end_lease``); the runs that
        interrupted, as marked (whoever ends them publishes their ``run_finished``: its own
        change feed does not tell it)."""
        ...


class JournalWrites(Protocol):
    def add_reflection(self, new: NewReflection) -> int:
        """Store a reflection covering the thread up to ``last_message_id``; returns its id."""
        ...

    def add_profile(self, new: NewProfile) -> int:
        """Store the thread's next personality profile; returns its version (1, 2, ...)."""
        ...

    def add_self_reply(
        self, reflection_id: int, thread_id: str, content: str, run_id: int | None
    ) -> bool:
        """Answer a reflection; False if it was already answered (nothing is written)."""
        ...

    def reflected_up_to(self, thread_id: str) -> int:
        """The newest message id already covered by the thread's reflections (0 if none)."""
        ...

    def profiled_up_to(self, thread_id: str) -> int:
        """The newest message id already covered by the thread's profiles (0 if none)."""
        ...


class WakeWrites(Protocol):
    def hold_wake(self, thread_id: str, text: str, *, max_events: int) -> int | None:
        """Hold a wake's text for the thread's next scheduled beat, joined to those held.
        Returns how many wakes are held now, None (nothing written) when ``max_events`` are
        already held; ``NotFound`` if there is no such thread."""
        ...

    def take_held_wake(self, thread_id: str) -> str | None:
        """Remove the thread's held wakes; their joined text, None if none were held."""
        ...


class BeatWrites(Protocol):
    def beat_memo(self, thread_id: str) -> BeatMemo:
        """The thread's heartbeat memo (a fresh one when it has none)."""
        ...

    def set_beat_memo(self, memo: BeatMemo) -> None:
        """Store the thread's heartbeat memo, replacing the one before."""
        ...


class InstructionsWrites(Protocol):
    def save_instructions(self, content: str, base: int | None = None) -> StoredInstructions:
        """Store the next revision of HEARTBEAT.md; with ``base``, only while ``base`` is the
        current revision (0: none saved yet), else ``RevisionConflict`` naming the current
        one. A save that another process's save of the same revision beat is refused alike."""
        ...


class Tx(
    ThreadWrites,
    MessageWrites,
    ForumWrites,
    RunWrites,
    ReplicaWrites,
    JournalWrites,
    WakeWrites,
    BeatWrites,
    InstructionsWrites,
    Protocol,
):
    """The writes available inside one transaction, in the backend's writer thread."""

    @property
    def now(self) -> float:
        """The transaction's time (POSIX seconds), the same for each of its writes."""
        ...


# -- reads ----------------------------------------------------------------------------------------
class ThreadReads(Protocol):
    async def get_thread(self, thread_id: str) -> Thread:
        """The thread; ``NotFound`` if there is none."""
        ...

    async def threads_by_ids(self, ids: Sequence[str]) -> list[Thread]:
        """The threads of ``ids`` that exist, in no particular order."""
        ...

    async def thread_exists(self, thread_id: str) -> bool: ...

    async def threads_changed_since(self, since: float) -> list[Thread]:
        """The threads created, configured or written to at ``since`` or later, oldest change
        first."""
        ...

    async def list_threads(self, *, limit: int = 100, after: str | None = None) -> list[Thread]:
        """At most ``limit`` threads whose id sorts after ``after``, by id."""
        ...

    def iter_threads(self, *, batch: int = 1000) -> AsyncIterator[list[Thread]]:
        """Every thread, by id, ``batch`` at a time."""
        ...

    async def thread_ids(self) -> list[str]:
        """Every thread's id, sorted."""
        ...


class MessageReads(Protocol):
    async def messages(
        self, thread_id: str, *, limit: int = 50, before: int | None = None
    ) -> list[Message]:
        """The newest ``limit`` messages (older than ``before``), returned oldest first."""
        ...

    async def last_message_id(self, thread_id: str) -> int:
        """The id of the thread's newest message (0 if none)."""
        ...

    async def contradictions(
        self, thread_id: str, *, status: str | None = "open", limit: int = 100
    ) -> list[Contradiction]:
        """The newest ``limit`` contradictions with ``status`` (None: any), newest first."""
        ...


class ForumReads(Protocol):
    async def posts(self, *, limit: int = 20, before: int | None = None) -> list[Post]:
        """The Ledger feed, newest first: ``limit`` posts whose cursor is below ``before``."""
        ...

    async def get_post(self, post_id: str) -> Post:
        """The post with its score and comment count; ``NotFound`` if there is none."""
        ...

    async def post_exists(self, post_id: str) -> bool: ...

    async def comments(self, post_id: str) -> list[Comment]:
        """A post's comments, oldest first."""
        ...

    async def votes(self, post_id: str) -> list[Vote]:
        """A post's votes, oldest first."""
        ...


class RunReads(Protocol):
    async def get_run(self, run_id: int) -> Run:
        """The run; ``NotFound`` if there is none."""
        ...

    async def history(
        self, thread_id: str, *, limit: int = 20, before: int | None = None, loop: str | None = None
    ) -> list[Run]:
        """A thread's runs (of ``loop``, or all), newest first, with an id below ``before``."""
        ...

    async def runs_finished_after(
        self, last_id: int, *, thread_id: str | None = None, limit: int = 500
    ) -> list[Run]:
        """Finished runs a reconnecting event client missed, oldest first.

        A run that started before ``last_id`` but finished after it counts as missed too.
        """
        ...

    async def running_runs(self, *, owner: str | None = None) -> list[Run]:
        """The ``running`` rows (of the process ``owner``, if given)."""
        ...

    async def runs_by_ids(self, ids: Sequence[int]) -> list[Run]:
        """The runs of ``ids`` that exist, by id."""
        ...

    async def last_finished_run(self) -> int | None:
        """The id of the run that finished last (by its finish time), None if none did."""
        ...

    async def recent_actions(self, thread_id: str, *, limit: int = 5) -> list[Run]:
        """A thread's newest heartbeat runs that acted (``ok`` or ``dry_run``), newest first."""
        ...

    async def count_runs(self, *, status: str | None = None) -> int: ...

    async def interrupt_run(self, run_id: int, model: str | None) -> None:
        """Record a run cancelled by shutdown. Never raises: if the storage is closing,
        ``close`` (or the next start) marks the run interrupted instead."""
        ...

    async def mark_interrupted(self) -> list[Run]:
        """Mark ``running`` rows whose process is gone as ``interrupted``, and end the leases
        that ran out (interrupting their runs); returns those runs as marked."""
        ...


class ReplicaReads(Protocol):
    async def leases(self) -> list[Lease]:
        """The leases held on the database, by owner."""
        ...


class JournalReads(Protocol):
    async def reflections(self, thread_id: str, *, limit: int = 20) -> list[Reflection]:
        """A thread's newest reflections, newest first."""
        ...

    async def last_reflected_message(self, thread_id: str) -> int:
        """The newest message id covered by the thread's reflections (0 if none)."""
        ...

    async def threads_needing_reflection(self, *, limit: int = 100) -> list[str]:
        """Threads with a message newer than their reflections cover, by id."""
        ...

    async def profile(self, thread_id: str) -> Profile | None:
        """The thread's newest personality profile, if any."""
        ...

    async def profiles(self, thread_id: str, *, limit: int = 20) -> list[Profile]:
        """The thread's newest profiles, newest version first."""
        ...

    async def threads_needing_profile(self, *, limit: int = 100) -> list[str]:
        """Threads with a message newer than their profiles cover, by id."""
        ...

    async def unanswered_reflections(self, *, limit: int = 100) -> list[Reflection]:
        """Reflections without a self-reply, oldest first."""
        ...

    async def self_replies(self, thread_id: str, *, limit: int = 20) -> list[SelfReply]:
        """A thread's newest self-replies, newest first."""
        ...


class WakeReads(Protocol):
    async def held_wake(self, thread_id: str) -> tuple[str, int] | None:
        """The joined text of the wakes held for the thread's next beat and how many."""
        ...


class BeatReads(Protocol):
    async def beat_memo(self, thread_id: str) -> BeatMemo:
        """The thread's heartbeat memo (a fresh one when it has none)."""
        ...

    async def beat_day(self, thread_id: str, since: float) -> BeatDay:
        """The thread's finished heartbeat runs started at or after ``since``: their tokens and
        their count by status and reason."""
        ...


class InstructionsReads(Protocol):
    async def instructions(self) -> StoredInstructions | None:
        """HEARTBEAT.md's current revision in the database, None when none was saved."""
        ...

    async def instruction_revisions(self, *, limit: int = 20) -> list[StoredInstructions]:
        """Its newest revisions kept, newest first."""
        ...


class ChangeFeed(Protocol):
    """What the processes sharing one database change, told as each change commits.

    ``batches`` yields, oldest first, the changes of every writer (this store's too: each names
    its ``writer``); it reconnects by itself when its connection is lost, and the first batch
    after each (re)connection has ``resumed`` set: changes made before it may have been missed,
    and whoever follows the feed reads them back from the database. The feed holds a
    connection while it is followed: whoever stops following it closes it (``aclose``)."""

    @property
    def writer(self) -> str:
        """This store's writer, as the changes it makes name it."""
        ...

    def batches(self) -> AsyncGenerator[ChangeBatch, None]: ...


class Storage(
    ThreadReads,
    MessageReads,
    ForumReads,
    RunReads,
    ReplicaReads,
    JournalReads,
    WakeReads,
    BeatReads,
    InstructionsReads,
    Protocol,
):
    """The program's storage: reads, writes as functions of a ``Tx``, shutdown. See above."""

    owner: str
    """This process in ``runs.owner`` (give it to ``Tx.start_run``)."""

    @property
    def location(self) -> str:
        """Where the data lives, for log lines (a file's path, a server's address)."""
        ...

    @property
    def shared(self) -> bool:
        """Whether replicas on other hosts may share the database (they then hold leases)."""
        ...

    @property
    def transactions(self) -> int:
        """Write transactions committed so far (each may hold several writes)."""
        ...

    @property
    def busy_retries(self) -> int:
        """Transactions retried so far because another process held the database."""
        ...

    @property
    def closed(self) -> bool: ...

    @property
    def fault(self) -> StorageFault | None:
        """The storage fault the database last answered (a full disk, a read-only, damaged or
        unreadable file: ``ledger.errors.StorageFault``), or None while it works."""
        ...

    def now(self) -> float:
        """The clock the storage was opened with (and the one ``Tx.now`` is read from)."""
        ...

    async def write(self, fn: Callable[[Tx], T], *, first: bool = False) -> T:
        """Run ``fn(tx)`` in a transaction in the writer thread; its result, or its exception.

        A write with ``first`` goes ahead of the queued ones (the scheduler's claims do, so a
        herd's runs finishing do not delay the claims of the runs still waiting to start).
        """
        ...

    async def close(self) -> None:
        """Finish queued writes, mark this process's unfinished runs interrupted, then close."""
        ...

    def change_feed(self) -> ChangeFeed | None:
        """A feed of the changes of every process sharing the database (PostgreSQL's), None
        where one process has the data to itself (SQLite). Each call makes a feed of its own."""
        ...

    async def run_context(
        self, thread_id: str, *, messages: int, posts: int, recent: int = 5
    ) -> RunContext:
        """What a heartbeat run reads, from one snapshot: the thread's last ``messages``
        messages, open contradictions, profile, the newest ``posts`` Ledger posts and its
        ``recent`` recent actions."""
        ...

    async def beat_inputs(
        self, thread_id: str, *, messages: int, posts: int, recent: int = 5
    ) -> tuple[BeatMemo, RunContext]:
        """A heartbeat beat's first read, from one snapshot: the thread's memo (a fresh one when
        it has none) and ``run_context``'s."""
        ...
