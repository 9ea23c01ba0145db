"""Outcomes the database could not take, and recording them at the next start.

A run's finishing transaction waits while another process holds the database locked (see
``loops.lifecycle``). When the service stops during that wait, or a storage fault (a full disk,
a read-only or damaged file: ``ledger.errors.StorageFault``) refuses the write, nothing can be
written to the database, so the outcome is kept in a file of its own in the spool directory
(one JSON file per run, written atomically). The next start records each kept outcome before it
marks dead runs ``interrupted``: the run becomes ``failed`` with reason ``unrecorded``, its
decision kept in its row, its effect (a post, a vote) not carried out, since the world may have
moved on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from functools import partial
from pathlib import Path

import msgspec

from ledger.errors import HeartbeatError, NotFound
from ledger.records import Reason, Run, RunOutcome, RunStatus
from ledger.storage.interface import Storage, Tx

__all__ = ["UNRECORDED_ERROR", "keep", "record_kept"]

log = logging.getLogger(f"heartbeat.{__name__}")

UNRECORDED_ERROR = (
    "the database could not record this outcome when the run ended (the service stopped while"
    " another process held it locked, or a storage fault refused the write); the decision is"
    " kept here but was not carried out"
)


class _Kept(msgspec.Struct, frozen=True):
    run_id: int
    outcome: RunOutcome


def keep(spool: Path, run_id: int, outcome: RunOutcome) -> Path:
    """Write ``outcome`` of run ``run_id`` to ``spool`` (atomically); returns the file."""
    spool.mkdir(parents=True, exist_ok=True)
    target = spool / f"run-{run_id}.json"
    fd, tmp = tempfile.mkstemp(prefix=".run-", suffix=".tmp", dir=spool)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(msgspec.json.encode(_Kept(run_id, outcome)))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _as_recorded(outcome: RunOutcome) -> RunOutcome:
    return msgspec.structs.replace(
        outcome,
        status=RunStatus.FAILED,
        reason=Reason.UNRECORDED,
        executed=None,
        error=UNRECORDED_ERROR if outcome.error is None else f"{UNRECORDED_ERROR}; {outcome.error}",
    )


def _kept_files(spool: Path) -> list[tuple[Path, _Kept]]:
    if not spool.is_dir():
        return []
    found = []
    for path in sorted(spool.glob("run-*.json")):
        try:
            found.append((path, msgspec.json.decode(path.read_bytes(), type=_Kept)))
        except (OSError, msgspec.DecodeError) as exc:
            log.warning("kept run outcome %s unreadable, left in place: %s", path.name, exc)
    return found


def _finish(run_id: int, outcome: RunOutcome, tx: Tx) -> Run:
    return tx.finish_run(run_id, outcome)


async def record_kept(store: Storage, spool: Path) -> int:
    """Record every outcome kept in ``spool`` on its run, if that run is still ``running``;
    each file is removed once recorded (kept if the database refuses the write). Returns the
    number recorded."""
    recorded = 0
    for path, kept in await asyncio.to_thread(_kept_files, spool):
        try:
            run = await store.get_run(kept.run_id)
            if run.status == RunStatus.RUNNING:
                outcome = _as_recorded(kept.outcome)
                await store.write(partial(_finish, kept.run_id, outcome))
                recorded += 1
                log.warning("run %d recorded failed (unrecorded) with its decision", kept.run_id)
        except NotFound:
            pass  # the run is gone (its thread deleted): nothing to record it on
        except HeartbeatError as exc:
            log.warning("kept outcome of run %d not recorded yet: %s", kept.run_id, exc)
            continue
        await asyncio.to_thread(path.unlink, missing_ok=True)
    return recorded
