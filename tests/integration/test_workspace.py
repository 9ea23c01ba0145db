"""HEARTBEAT.md on a real file system: the runs' cached reader sees every change."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ledger.limits import INSTRUCTIONS_MAX_BYTES as MAX_BYTES
from loops.workspace import InstructionsFile, InstructionsTooLarge, write_instructions


async def test_the_cached_reader_sees_every_change(tmp_path: Path) -> None:
    path = tmp_path / "HEARTBEAT.md"
    cached = InstructionsFile(path)
    assert await cached.read() is None  # no file yet
    await write_instructions(path, "- check the Ledger\n")
    first = await cached.read()
    assert first is not None and first[0] == "- check the Ledger\n"
    assert await cached.read() == first  # unchanged: the same answer
    await write_instructions(path, "- vote on good posts\n")  # replaced (a new inode)
    found = await cached.read()
    assert found is not None and found[0] == "- vote on good posts\n"
    with path.open("w", encoding="utf-8") as fh:  # edited in place, as some editors do
        fh.write("- post a daily summary, please\n")
    found = await cached.read()
    assert found is not None and found[0] == "- post a daily summary, please\n"
    st = path.stat()
    path.write_text("- post a weekly summary, please\n", encoding="utf-8")  # same size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    found = await cached.read()
    assert found is not None and found[0] == "- post a weekly summary, please\n"
    path.unlink()
    assert await cached.read() is None


async def test_oversized_instructions_are_refused_with_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "HEARTBEAT.md"
    with pytest.raises(InstructionsTooLarge, match=str(MAX_BYTES)):
        await write_instructions(path, "x" * (MAX_BYTES + 1))
    assert not path.exists()
