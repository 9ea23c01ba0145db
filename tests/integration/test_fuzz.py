"""The running service fuzzed from its own OpenAPI document (schemathesis).

A real ``heartbeat serve`` child process on a free loopback port, its LLM pointed at a port
nothing listens on, gets requests generated from ``GET /openapi.json``, valid ones and invalid
ones, a bounded number per operation. Each answer must be one the document describes: its
status, its content type, its body's shape and headers; never a 5xx but a documented 503. An
undocumented method must be answered 405 with an ``Allow`` that names the path's methods. An
event stream that opens is only checked for its status and content type: it never ends. The
requests are the same on every run (a fixed seed); ``FUZZ_SEED=<n>`` generates others and
``FUZZ_EXAMPLES=<n>`` more of them.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.errors
import pytest
import requests
import schemathesis
from schemathesis import Case
from schemathesis.config import SchemathesisConfig

from app.openapi import document
from tests.conftest import DEFAULT_MD, serve

pytestmark = pytest.mark.slow

# under a minute in all; FUZZ_EXAMPLES=<n> for a longer search
EXAMPLES_PER_OPERATION = STATEFUL_SCENARIOS = int(os.environ.get("FUZZ_EXAMPLES", "40"))
# the same requests on every run, so the suite stays repeatable; FUZZ_SEED=<n> explores others
SEED = int(os.environ.get("FUZZ_SEED", "20261203"))

# Refused invalid input: 413 too (HEARTBEAT.md over its byte limit), besides the default ones.
REFUSED = ["400", "401", "403", "404", "405", "409", "413", "415", "422"]
SETTINGS = {
    "seed": SEED,
    "generation": {"max-examples": EXAMPLES_PER_OPERATION, "database": "none"},
    "checks": {"enabled": True, "negative_data_rejection": {"expected-statuses": REFUSED}},
}
# a config that fits the schema may still break a rule across fields (the active hours go
# together), name a channel that is not configured, or a time zone that does not exist: those
# are 422s the schema cannot foresee
CONFIG_POST = {
    "include-path": "/api/threads/{thread_id}/heartbeat/config",
    "include-method": "POST",
    "checks": {"positive_data_acceptance": {"enabled": False}},
}
EVENTS = "/api/heartbeat/events"
schema = schemathesis.openapi.from_dict(
    document(), config=SchemathesisConfig.from_dict({**SETTINGS, "operations": [CONFIG_POST]})
).exclude(path=EVENTS)
# (its own config: with an "operations" entry, include() would keep every operation)
events = schemathesis.openapi.from_dict(
    document(), config=SchemathesisConfig.from_dict(SETTINGS)
).include(path=EVENTS)


@pytest.fixture(scope="module")
def service_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workspace: Path = tmp_path_factory.mktemp("fuzz")
    (workspace / "HEARTBEAT.md").write_text(DEFAULT_MD, encoding="utf-8")
    # Ollama only: "auto" would pick the embedded model where it is installed, and a run-now
    # would then take seconds of generation instead of failing at once
    with serve(workspace, HEARTBEAT_LLM_PROVIDER="ollama") as url:
        yield url


@schema.parametrize()
def test_every_answer_is_documented(case: Case, service_url: str) -> None:
    case.call_and_validate(base_url=service_url)


@events.parametrize()
def test_the_event_stream_answers_as_documented(case: Case, service_url: str) -> None:
    """A stream that opens is only looked at (it never ends); any other answer is checked."""
    with requests.request(**case.as_transport_kwargs(base_url=service_url), stream=True) as r:
        if r.status_code == 200 and case.method == "GET":
            assert r.headers["content-type"].startswith("text/event-stream"), r.headers
            return
        r.content  # noqa: B018 - read the whole (finite) answer before it is checked
    case.validate_response(r)


def test_linked_calls_answer_as_documented(service_url: str) -> None:
    """Sequences that follow the document's links: a created thread or post, then the
    operations on it (the calls above mostly meet ids that do not exist)."""

    succeeded: Counter[str] = Counter()
    failures: list[str] = []

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            return {"base_url": service_url}

        def after_call(self, response: Any, case: Case) -> None:
            if response.status_code < 300:
                succeeded[case.operation.label] += 1

        def validate_response(self, response: Any, case: Case, *args: Any, **kwargs: Any) -> None:
            # kept, not raised: Hypothesis would replay the scenario against a server whose
            # state has moved on, and report that instead of the failure
            try:
                super().validate_response(response, case, *args, **kwargs)
            except (AssertionError, BaseExceptionGroup) as exc:  # failed checks, one or grouped
                failures.append(str(exc))

    # Which rules a step may take depends on what the server answered before; when a later
    # scenario starts like an earlier one but the server's state has moved on, Hypothesis calls
    # its strategy flaky and stops exploring. The scenarios run until then were checked all the
    # same (failures are kept above, never raised).
    with contextlib.suppress(hypothesis.errors.FlakyStrategyDefinition):
        Workflow.run(
            settings=hypothesis.settings(
                max_examples=STATEFUL_SCENARIOS,
                stateful_step_count=6,
                deadline=None,
                database=None,
                # the server's state moves on: a replay would not meet the same one
                phases=[hypothesis.Phase.generate],
                suppress_health_check=list(hypothesis.HealthCheck),
            )
        )
    assert not failures, "\n\n".join(failures[:5])
    # the links were followed: operations on records that exist answered 2xx
    assert [label for label in succeeded if "{" in label], succeeded
