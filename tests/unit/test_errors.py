"""The error tree: one root, codes and statuses named on the classes, messages, copies."""

from __future__ import annotations

import copy
import importlib
import inspect
import pickle
import pkgutil

import pytest

from ledger.errors import (
    Conflict,
    HeartbeatError,
    LedgerError,
    NotFound,
    StorageBusy,
    StorageCorrupt,
    StorageFault,
    StorageFull,
    StorageIOError,
    StorageReadOnly,
    StoreClosed,
)
from loops.executor import RunInFlight
from loops.llm import LLMError

PACKAGES = ("app", "loops", "ledger", "heartbeat_md")
OUTSIDE: set[str] = set()  # every exception class of the project is under the root


def project_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            if info.name.endswith("__main__"):
                continue
            module = importlib.import_module(info.name)
            for attr, value in vars(module).items():
                if (
                    inspect.isclass(value)
                    and issubclass(value, BaseException)
                    and value.__module__ == module.__name__
                ):
                    found[f"{module.__name__}.{attr}"] = value
    return found


def test_every_exception_of_the_project_derives_from_the_root() -> None:
    classes = project_exceptions()
    assert len(classes) >= 15
    outside = {name for name, cls in classes.items() if not issubclass(cls, HeartbeatError)}
    assert outside == OUTSIDE


def test_every_code_is_one_word_of_snake_case_and_every_status_an_http_one() -> None:
    for name, cls in project_exceptions().items():
        if issubclass(cls, HeartbeatError):
            assert cls.code.replace("_", "").isalpha() and cls.code.islower(), name
            assert 400 <= cls.http_status <= 599, name


def test_codes_statuses_and_headers_are_named_on_the_class() -> None:
    assert (HeartbeatError.code, HeartbeatError.http_status) == ("internal_error", 500)
    assert (NotFound.code, NotFound.http_status) == ("not_found", 404)
    assert (RunInFlight.code, RunInFlight.http_status) == ("run_in_flight", 409)
    assert issubclass(RunInFlight, Conflict)
    assert StorageBusy.headers == {"Retry-After": "1"}
    assert StoreClosed.headers == {"Retry-After": "5"}
    assert HeartbeatError.headers is None


def test_the_docstring_is_the_default_message() -> None:
    assert StorageBusy().message == StorageBusy.__doc__
    assert str(StoreClosed()) == "The database is closed: the service is shutting down."

    class Quiet(Conflict):
        pass

    class Long(HeartbeatError, code="long"):
        """First line,
        continued.

        Not part of the message.
        """

    assert Quiet().message == "The write conflicts with the current state."
    assert Long().message == "First line, continued."
    assert Long("given").message == "given" and str(Long("given")) == "given"


def test_an_instance_carries_field_headers_and_extra() -> None:
    err = RunInFlight("default", 7)
    assert err.field == "thread_id" and dict(err.extra) == {"run_id": 7}
    assert err.message == "a heartbeat for thread 'default' is already running (run 7)"
    assert NotFound("post", "p1").field == "post_id"
    custom = HeartbeatError("x", headers={"X-A": "1"})
    assert custom.headers == {"X-A": "1"} and HeartbeatError.headers is None


@pytest.mark.parametrize(
    "err",
    [
        NotFound("thread", "t"),
        RunInFlight("t", 3),
        StorageBusy(),
        StorageCorrupt(path="/data/heartbeat.db", cause="file is not a database"),
        LLMError("busy", "the server is busy", retryable=True, status=503, attempts=2),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_survive_copy_and_pickle(err: HeartbeatError) -> None:
    for clone in (copy.copy(err), pickle.loads(pickle.dumps(err))):
        assert type(clone) is type(err)
        assert clone.__dict__ == err.__dict__ and str(clone) == str(err)


def test_the_llm_error_keeps_the_llm_servers_status_apart_from_its_own() -> None:
    err = LLMError("busy", "busy", status=503)
    assert err.status == 503 and err.http_status == 500 and err.code == "llm_error"


@pytest.mark.parametrize(
    ("cls", "code", "lasting"),
    [
        (StorageFull, "storage_full", False),
        (StorageReadOnly, "storage_read_only", False),
        (StorageCorrupt, "storage_corrupt", True),
        (StorageIOError, "storage_io_error", True),
    ],
)
def test_storage_faults_are_503s_under_one_class(
    cls: type[StorageFault], code: str, lasting: bool
) -> None:
    assert issubclass(cls, StorageFault) and issubclass(cls, LedgerError)
    assert (cls.code, cls.http_status, cls.lasting, cls.headers) == (code, 503, lasting, None)
    err = cls(path="/data/heartbeat.db", cause="SQLite's words")
    assert (err.path, err.cause) == ("/data/heartbeat.db", "SQLite's words")
    # the message names the file and SQLite's words; a given one wins
    assert "the database file /data/heartbeat.db " in err.message
    assert "(SQLite: SQLite's words)" in err.message
    assert cls().message.startswith(("the database file ", "reading or writing the database file "))
    assert "file the database" not in cls().message
    assert cls("given").message == "given"
