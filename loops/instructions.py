"""Where HEARTBEAT.md lives: the workspace file (one process, SQLite) or the database (replicas
on PostgreSQL), behind one interface with revisions.

- ``FileInstructions``: the file as before. Its revision is a hash of its content
  (``sha256:`` and 16 hex digits), so a save made on top of a revision that is no longer the
  file's (another tab saved meanwhile, an editor changed the file) is refused. The check and
  the write are made under one lock in this process; an editor writing the file between the two
  is not seen.
- ``StoredInstructions``: the database's revisions (``Storage.save_instructions``): the
  revision is the number of the save (1, 2, ...) and a save that lost a race with another
  replica's is refused by the database itself. The runs read it from a cache that a change
  notification (``loops.relay``) or ``STORED_CACHE_SECONDS`` expires.

Revisions are opaque strings to the API; ``NO_REVISION`` ("0") means nothing saved yet (no
file, no row). ``read`` is what a run reads: (text, modified time), None when nothing is
saved.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ledger.errors import RevisionConflict
from ledger.limits import INSTRUCTIONS_MAX_BYTES
from ledger.storage.interface import Storage
from loops.clock import Clock
from loops.workspace import (
    InstructionsFile,
    InstructionsTooLarge,
    read_instructions,
    write_instructions,
)

NO_REVISION = "0"
WHAT = "HEARTBEAT.md"
STORED_CACHE_SECONDS = 30.0  # the longest a run reads a cached revision without a notification


@dataclass(frozen=True, slots=True)
class Found:
    """The current instructions: text, modified time and revision (None, "0": none saved)."""

    content: str
    modified: float | None
    revision: str
    exists: bool


def check_size(content: str) -> None:
    size = len(content.encode("utf-8"))
    if size > INSTRUCTIONS_MAX_BYTES:
        raise InstructionsTooLarge(
            f"HEARTBEAT.md may hold at most {INSTRUCTIONS_MAX_BYTES} bytes, got {size}",
            field="content",
        )


def content_revision(content: str) -> str:
    """A file's revision: a hash of its text."""
    return "sha256:" + hashlib.sha256(content.encode("utf-8")).hexdigest()[:16]


class Instructions(Protocol):
    """HEARTBEAT.md wherever it lives."""

    @property
    def where(self) -> str:
        """``file`` or ``database``."""
        ...

    async def read(self) -> tuple[str, float] | None:
        """What a run reads: (text, modified time), None when nothing is saved."""
        ...

    async def current(self) -> Found:
        """The current text and revision, read afresh."""
        ...

    async def save(self, content: str, base: str | None = None) -> Found:
        """Replace the text; with ``base``, only while it is the current revision (else
        ``RevisionConflict``). Over the size limit: ``InstructionsTooLarge``."""
        ...


class FileInstructions:
    """The workspace's HEARTBEAT.md (see the module)."""

    where = "file"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = InstructionsFile(path)
        self._lock = asyncio.Lock()

    async def read(self) -> tuple[str, float] | None:
        return await self._file.read()

    async def current(self) -> Found:
        found = await read_instructions(self.path)
        if found is None:
            return Found("", None, NO_REVISION, exists=False)
        return Found(found[0], found[1], content_revision(found[0]), exists=True)

    async def save(self, content: str, base: str | None = None) -> Found:
        check_size(content)
        async with self._lock:
            if base is not None:
                now = await self.current()
                if base != now.revision:
                    raise RevisionConflict(WHAT, base, now.revision)
            modified = await write_instructions(self.path, content)
        return Found(content, modified, content_revision(content), exists=True)


class StoredInstructions:
    """HEARTBEAT.md in the database (see the module)."""

    where = "database"

    def __init__(self, store: Storage, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._cached: Found | None = None
        self._expires = 0.0

    def expire(self, revision: int | None = None) -> None:
        """Another revision was saved (``revision``; None: perhaps): read it afresh."""
        if self._cached is None or revision is None or str(revision) != self._cached.revision:
            self._expires = 0.0

    async def read(self) -> tuple[str, float] | None:
        now = self.clock.monotonic()
        if self._cached is None or now >= self._expires:
            self._cached = await self.current()
            self._expires = now + STORED_CACHE_SECONDS
        found = self._cached
        return (found.content, found.modified or 0.0) if found.exists else None

    async def current(self) -> Found:
        stored = await self.store.instructions()
        if stored is None:
            return Found("", None, NO_REVISION, exists=False)
        return Found(stored.content, stored.saved_at, str(stored.revision), exists=True)

    async def save(self, content: str, base: str | None = None) -> Found:
        check_size(content)
        number: int | None = None
        if base is not None:
            number = int(base) if base.isascii() and base.isdigit() and len(base) < 19 else -1
        try:
            stored = await self.store.write(lambda tx: tx.save_instructions(content, number))
        except RevisionConflict as exc:
            if number == -1:  # not a revision this database ever gave: name it as given
                raise RevisionConflict(WHAT, base or "", exc.current) from None
            raise
        self._cached = Found(content, stored.saved_at, str(stored.revision), exists=True)
        self._expires = self.clock.monotonic() + STORED_CACHE_SECONDS
        return self._cached

    async def import_file(self, path: Path) -> Found | None:
        """The file's text as the first revision, when none is saved yet (None otherwise, or
        when there is no file): what a first start on a new database does."""
        found = await read_instructions(path)
        if found is None:
            return None
        try:
            return await self.save(found[0], NO_REVISION)
        except RevisionConflict:  # saved already (by another replica starting too)
            return None
