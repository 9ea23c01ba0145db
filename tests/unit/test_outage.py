"""An outage's back-off, and its one line as it starts and one as it ends."""

from __future__ import annotations

import logging

import pytest

from ledger.errors import StorageBusy, StorageFull, StorageUnavailable
from loops.clock import FakeClock
from loops.outage import Outage

LOG = logging.getLogger("heartbeat.tests.outage")
DOWN = "down: %(kind)s, %(first).0f s to %(most).0f s (%(exc)s)"
BACK = "back after %(seconds).0f s"
GONE = StorageUnavailable("gone")
LOCKED = StorageBusy("locked")
FULL = StorageFull("full")

# A step is a failed try (the exception; the clock then moves on by the wait returned) or a try
# that went through (None, after ``pause`` seconds of the clock).
PAUSE = 7.0


@pytest.mark.parametrize(
    ("first", "most", "steps", "waits", "lines"),
    [
        pytest.param(
            1.0,
            10.0,
            [GONE, GONE, GONE, GONE, GONE, None],
            [1.0, 2.0, 4.0, 8.0, 10.0],
            [("WARNING", "down: connection, 1 s to 10 s (gone)"), ("INFO", "back after 32 s")],
            id="doubling-to-its-cap",
        ),
        pytest.param(
            15.0,
            15.0,
            [GONE, LOCKED, GONE, None],
            [15.0, 15.0, 15.0],
            [("WARNING", "down: connection, 15 s to 15 s (gone)"), ("INFO", "back after 52 s")],
            id="a-fixed-interval",
        ),
        pytest.param(
            1.0,
            30.0,
            [LOCKED, GONE, None],
            [1.0, 2.0],
            [("WARNING", "down: lock, 1 s to 30 s (locked)"), ("INFO", "back after 10 s")],
            id="named-by-its-first-failure",
        ),
        pytest.param(
            1.0,
            10.0,
            [FULL, FULL, None],
            [1.0, 2.0],
            [
                ("WARNING", "down: disk to have space again (storage_full), 1 s to 10 s (full)"),
                ("INFO", "back after 10 s"),
            ],
            id="a-file-fault",
        ),
        pytest.param(1.0, 10.0, [None, None], [], [], id="no-outage-no-line"),
        pytest.param(
            1.0,
            10.0,
            [GONE, GONE, None, None, LOCKED, None],
            [1.0, 2.0, 1.0],
            [
                ("WARNING", "down: connection, 1 s to 10 s (gone)"),
                ("INFO", "back after 10 s"),
                ("WARNING", "down: lock, 1 s to 10 s (locked)"),
                ("INFO", "back after 8 s"),
            ],
            id="each-outage-its-own-lines-and-back-off",
        ),
    ],
)
def test_an_outage_waits_with_its_back_off_and_logs_one_line_each_way(
    caplog: pytest.LogCaptureFixture,
    first: float,
    most: float,
    steps: list[Exception | None],
    waits: list[float],
    lines: list[tuple[str, str]],
) -> None:
    clock = FakeClock()
    outage = Outage(clock, LOG, first=first, most=most, down=DOWN, back=BACK)
    got: list[float] = []
    with caplog.at_level(logging.INFO, logger=LOG.name):
        for exc in steps:
            if exc is None:
                clock.jump(PAUSE)
                outage.succeeded()
                assert outage.since is None
            else:
                got.append(outage.failed(exc))
                assert outage.since is not None
                clock.jump(got[-1])
    assert got == waits
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == lines
    assert all(r.name == LOG.name for r in caplog.records)  # the caller's logger


def test_the_callers_own_fields_fill_its_lines(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    outage = Outage(
        clock,
        LOG,
        first=1.0,
        most=4.0,
        down="%(what)s waits for the database %(kind)s: %(kept)d kept",
        back="%(what)s went through after %(seconds).0f s",
    )
    with caplog.at_level(logging.INFO, logger=LOG.name):
        outage.failed(GONE, what="arming", kept=3)
        outage.failed(GONE, what="arming", kept=4)  # no second warning
        clock.jump(2.5)
        outage.succeeded(what="arming")
    assert caplog.messages == [
        "arming waits for the database connection: 3 kept",
        "arming went through after 2 s",
    ]
