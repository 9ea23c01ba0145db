"""When a replica's lease counts as ended, and which replica's timers hold a thread."""

from __future__ import annotations

from collections import Counter

import pytest

from ledger.records import Lease
from ledger.storage.identity import lease_expired
from loops.replicas import owner_of

LEASE = Lease(owner="h:1:1", started_at=0.0, renewed_at=100.0, expires_at=115.0)


@pytest.mark.parametrize(
    ("now", "process", "expired"),
    [
        (110.0, None, False),  # another host's replica, inside its lease
        (114.999, None, False),
        (115.0, None, True),  # the lease ran out
        (500.0, None, True),
        (110.0, True, False),  # a live process on this host, inside its lease
        (116.0, True, True),  # alive but it could not renew: gone all the same
        (110.0, False, True),  # its process is seen gone: no need to wait for the lease
        (90.0, False, True),
    ],
)
def test_a_lease_ends_when_it_runs_out_or_its_process_is_seen_gone(
    now: float, process: bool | None, expired: bool
) -> None:
    assert lease_expired(LEASE, now, process) is expired


def test_each_thread_has_one_owner_whatever_order_the_replicas_are_seen_in() -> None:
    replicas = ["a:1:1", "b:2:2", "c:3:3"]
    for thread in ("t1", "t2", "default"):
        assert owner_of(thread, replicas) == owner_of(thread, list(reversed(replicas)))
    assert owner_of("t1", ["only"]) == "only"


def test_threads_spread_over_replicas_and_a_gone_one_moves_only_its_share() -> None:
    threads = [f"t{i:04d}" for i in range(3000)]
    three = {t: owner_of(t, ["a", "b", "c"]) for t in threads}
    counts = Counter(three.values())
    assert set(counts) == {"a", "b", "c"}
    assert min(counts.values()) > 800  # an even share is 1000
    two = {t: owner_of(t, ["a", "c"]) for t in threads}
    moved = [t for t in threads if two[t] != three[t]]
    assert moved and all(three[t] == "b" for t in moved)
    assert len(moved) == counts["b"]
