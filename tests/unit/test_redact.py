"""The one redaction rule, as a table."""

from __future__ import annotations

import pytest

from ledger.redact import redact

HOOK = "https://hooks.example.com/services/T0/B0/s3cr3tXYZ"


@pytest.mark.parametrize(
    ("text", "secrets", "shown"),
    [
        ("plain text", (), "plain text"),
        ("http://user:password@host/v1", (), "http://***@host/v1"),
        (
            "LLM unreachable at http://u:p@10.0.0.1:8080/v1 (refused)",
            (),
            "LLM unreachable at http://***@10.0.0.1:8080/v1 (refused)",
        ),
        ("https://token@host/x", (), "https://***@host/x"),
        ("a@b.c and http://host/a@b", (), "a@b.c and http://host/a@b"),
        (
            "GET /api/heartbeat/events?token=abc123&tokens=1 HTTP/1.1",
            (),
            "GET /api/heartbeat/events?token=***&tokens=1 HTTP/1.1",
        ),
        ("/x?a=1&api_key=K&password=P#f", (), "/x?a=1&api_key=***&password=***#f"),
        ("/x?tokens=0&monkey=1", (), "/x?tokens=0&monkey=1"),
        ("Authorization: Bearer sk-abc.def", (), "Authorization: Bearer ***"),
        (f"Client error '404' for url '{HOOK}'", (HOOK,), "Client error '404' for url '***'"),
        ("the token is hunter2-token", ("hunter2-token",), "the token is ***"),
        ("encoded: a%2Fb%3Dc", ("a/b=c",), "encoded: ***"),
        ("short secrets are ignored: ab", ("ab", None, ""), "short secrets are ignored: ab"),
    ],
)
def test_redact(text: str, secrets: tuple[str | None, ...], shown: str) -> None:
    assert redact(text, secrets) == shown
    assert redact(shown, secrets) == shown  # idempotent


def test_the_log_filter_redacts_the_formatted_message() -> None:
    import logging

    from ledger.redact import RedactSecrets

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s"',
        ("c", "GET", "/e?token=t0k3n"),
        None,
    )
    assert RedactSecrets(["hunter2-token"]).filter(record)
    assert record.getMessage() == 'c - "GET /e?token=***"'
