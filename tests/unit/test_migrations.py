"""A migration script split into statements: at each ``;`` outside a dollar-quoted body."""

from __future__ import annotations

import pytest

from ledger.storage.engine import split_statements
from ledger.storage.migrations import MIGRATIONS, POSTGRES_SCRIPTS

FUNCTION = "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN x; RETURN NULL; END $$"


@pytest.mark.parametrize(
    ("script", "statements"),
    [
        ("", []),
        ("  ;\n ; ", []),
        (
            "CREATE TABLE a (x TEXT); CREATE INDEX i ON a (x)",
            ["CREATE TABLE a (x TEXT)", " CREATE INDEX i ON a (x)"],
        ),
        (f"{FUNCTION}; SELECT 1;", [FUNCTION, " SELECT 1"]),
        (
            "DO $body$ BEGIN a; b; END $body$; SELECT 2",
            ["DO $body$ BEGIN a; b; END $body$", " SELECT 2"],
        ),
        ("SELECT '$'; SELECT 3", ["SELECT '$'", " SELECT 3"]),
    ],
)
def test_statements_split_outside_dollar_quotes(script: str, statements: list[str]) -> None:
    assert split_statements(script) == statements


def test_postgresql_notifications_are_one_function_per_statement() -> None:
    functions = [s for s in split_statements(POSTGRES_SCRIPTS[5]) if "CREATE FUNCTION" in s]
    assert len(functions) == 2
    assert all(f.rstrip().endswith("END $$") for f in functions)
    assert len(MIGRATIONS) >= 5  # the script tested is a migration's
