"""Reading and replacing HEARTBEAT.md on disk (the only file I/O of the instructions)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from ledger.errors import HeartbeatError
from ledger.limits import INSTRUCTIONS_MAX_BYTES


class InstructionsTooLarge(HeartbeatError, code="too_large", http_status=413):
    """HEARTBEAT.md is over its size limit."""


class InstructionsUnusable(HeartbeatError, code="instructions_unusable", http_status=409):
    """HEARTBEAT.md on disk cannot be used (a directory, over its size limit, unreadable)."""


def _read(path: Path) -> tuple[str, float] | None:
    """The file's text and mtime; None when it does not exist. Never more than the limit:
    a larger file (written by hand) is refused, not sent to the model whole."""
    try:
        with path.open("rb") as fh:
            st = os.fstat(fh.fileno())
            data = fh.read(INSTRUCTIONS_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise InstructionsUnusable("HEARTBEAT.md is a directory, not a file") from None
    except OSError as exc:
        raise InstructionsUnusable(f"HEARTBEAT.md cannot be read: {exc.strerror}") from None
    if len(data) > INSTRUCTIONS_MAX_BYTES:
        raise InstructionsUnusable(
            f"HEARTBEAT.md is {max(st.st_size, len(data))} bytes on disk, over its limit of"
            f" {INSTRUCTIONS_MAX_BYTES} bytes: shorten it"
        )
    return data.decode("utf-8", errors="replace"), st.st_mtime


async def read_instructions(path: Path) -> tuple[str, float] | None:
    """(text, modified time) of HEARTBEAT.md, or None when the file does not exist; raises
    ``InstructionsUnusable`` for a directory, an unreadable file or one over the size limit."""
    return await asyncio.to_thread(_read, path)


class InstructionsFile:
    """HEARTBEAT.md for the runs: a ``stat`` per run, a read only when the file changed.

    Replacing the file (as ``write_instructions`` and most editors do) gives it a new inode,
    and any edit changes its modification time or size, so every change is seen.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: tuple[int, int, int] | None = None
        self._found: tuple[str, float] | None = None

    async def read(self) -> tuple[str, float] | None:
        """As ``read_instructions`` (``InstructionsUnusable`` for a file that cannot be used)."""
        try:
            st = os.stat(self.path)  # local metadata: microseconds, fine on the event loop
        except FileNotFoundError:
            self._key = self._found = None
            return None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key != self._key:
            self._found = await read_instructions(self.path)
            self._key = key
        return self._found


def _write(path: Path, content: str) -> float:
    data = content.encode("utf-8")
    if len(data) > INSTRUCTIONS_MAX_BYTES:
        raise InstructionsTooLarge(
            f"HEARTBEAT.md may hold at most {INSTRUCTIONS_MAX_BYTES} bytes, got {len(data)}",
            field="content",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".HEARTBEAT.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except IsADirectoryError:
        Path(tmp).unlink(missing_ok=True)
        raise InstructionsUnusable("HEARTBEAT.md is a directory, not a file") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path.stat().st_mtime


async def write_instructions(path: Path, content: str) -> float:
    """Replace HEARTBEAT.md atomically (temp file, fsync, rename). Returns the new mtime."""
    return await asyncio.to_thread(_write, path, content)
