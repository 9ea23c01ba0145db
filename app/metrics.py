"""``GET /metrics``: the service in Prometheus' text format (``prometheus-client``).

Every finished run of every loop is counted as it finishes (``Lifecycle.observers``): runs by
loop, trigger, status and reason, skips by reason, the LLM's latency and the tokens it read and
wrote. The rows the scheduler records without a run are counted the same way as it writes them
(``HeartbeatScheduler.skip_observers``): a slot skipped as an ``overlap`` and the ``missed`` row
of a catch-up. Read when scraped: wakes by outcome, runs waiting for LLM capacity (the queue
depth), runs in flight, the grid slots coalesced into catch-ups, the slots another process
claimed first, and the beats owed after yielding to the user. Each service has its own
registry (tests open many services in one process). With an API token set, ``/metrics`` asks
for it as ``/api`` does (``app.security``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ledger.records import Loop, Run, RunOutcome, RunStatus, Trigger

__all__ = ["Metrics", "routes"]

# LLM calls take from tens of milliseconds (a small local model) to minutes (a big one on CPU)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class _Live(Collector):
    """What is read at scrape time from the running service."""

    def __init__(
        self,
        wakes: Callable[[], Mapping[str, int]],
        queue_depth: Callable[[], int],
        in_flight: Callable[[], int],
        scheduler: Callable[[], SchedulerCounts],
    ) -> None:
        self.wakes, self.queue_depth, self.in_flight = wakes, queue_depth, in_flight
        self.scheduler = scheduler

    def collect(self) -> Iterable[Metric]:
        wakes = CounterMetricFamily(
            "heartbeat_wakes", "Wakes by what became of them", labels=["outcome"]
        )
        for outcome, count in sorted(self.wakes().items()):
            wakes.add_metric([outcome], count)
        yield wakes
        yield GaugeMetricFamily(
            "heartbeat_llm_queue_depth",
            "Runs waiting for LLM capacity now",
            value=self.queue_depth(),
        )
        yield GaugeMetricFamily(
            "heartbeat_runs_in_flight", "Heartbeat runs in flight now", value=self.in_flight()
        )
        counts = self.scheduler()
        yield CounterMetricFamily(
            "heartbeat_missed_slots",
            "Grid slots that passed unrun, coalesced into catch-up runs",
            value=counts.missed_slots,
        )
        yield CounterMetricFamily(
            "heartbeat_lost_claims",
            "Slots another process claimed first",
            value=counts.lost_claims,
        )
        yield GaugeMetricFamily(
            "heartbeat_deferred_beats",
            "Threads owed a beat deferred for the user (user_active), now",
            value=counts.deferred_beats,
        )


class SchedulerCounts(Protocol):
    """What the scrape reads of the scheduler (``loops.scheduler.HeartbeatScheduler``)."""

    @property
    def missed_slots(self) -> int: ...

    @property
    def lost_claims(self) -> int: ...

    @property
    def deferred_beats(self) -> int: ...


class Metrics:
    """The service's registry; ``observe`` is handed every finished run."""

    def __init__(
        self,
        *,
        wakes: Callable[[], Mapping[str, int]],
        queue_depth: Callable[[], int],
        in_flight: Callable[[], int],
        scheduler: Callable[[], SchedulerCounts],
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.runs = Counter(
            "heartbeat_runs",
            "Finished runs by loop, trigger, status and reason",
            ["loop", "trigger", "status", "reason"],
            registry=self.registry,
        )
        self.skips = Counter(
            "heartbeat_skips",
            "Runs skipped without a decision, by loop and reason",
            ["loop", "reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "heartbeat_llm_latency_seconds",
            "Time a run spent in LLM calls",
            ["loop"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "heartbeat_llm_tokens",
            "Tokens the LLM read (prompt) and wrote (completion)",
            ["loop", "kind"],
            registry=self.registry,
        )
        self.registry.register(_Live(wakes, queue_depth, in_flight, scheduler))

    def observe(self, run: Run) -> None:
        self._count(run.loop, run.trigger, run.status, run.reason)
        if run.llm_ms is not None:
            self.latency.labels(run.loop).observe(run.llm_ms / 1000)
        if run.prompt_tokens:
            self.tokens.labels(run.loop, "prompt").inc(run.prompt_tokens)
        if run.completion_tokens:
            self.tokens.labels(run.loop, "completion").inc(run.completion_tokens)

    def recorded(self, trigger: Trigger, outcome: RunOutcome) -> None:
        """A heartbeat row recorded without a run: by the scheduler (an overlap, missed slots),
        or held wakes dropped when the thread was disabled."""
        self._count(Loop.HEARTBEAT, trigger, outcome.status, outcome.reason)

    def _count(self, loop: str, trigger: str, status: str, reason: str | None) -> None:
        self.runs.labels(loop, trigger, status, reason or "").inc()
        if status == RunStatus.SKIPPED:
            self.skips.labels(loop, reason or "").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.service.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)


routes = [Route("/metrics", metrics, methods=["GET"])]
