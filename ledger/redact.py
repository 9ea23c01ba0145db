"""Secrets kept out of what the service shows and logs: one pure function, ``redact``.

What it hides, wherever it appears in a text: the credentials of a URL (``scheme://user:pw@``),
the value of a secret-looking query parameter (``?token=…``, ``api_key``, ``password``…), a
bearer token, and every secret it is given by name (the API token, a webhook's URL), in plain
and in URL-encoded form. Everything else is left exactly as it was. ``RedactSecrets`` applies
it to log records.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import quote

__all__ = ["HIDDEN", "RedactSecrets", "redact"]

HIDDEN = "***"
MIN_SECRET = 4  # a given secret shorter than this is not hunted for (it would hide common text)

_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@?#\"'<>]+@")
_QUERY = re.compile(
    r"(?i)(?P<name>[?&;](?:token|access_token|api_key|apikey|key|secret|password|passwd|pwd"
    r"|auth|sig|signature)=)[^&#\s\"'<>]*"
)
_BEARER = re.compile(r"(?i)(?P<name>\bbearer\s+)[A-Za-z0-9._~+/=-]+")


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every secret in it replaced by ``***`` (see the module doc)."""
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET}, key=len, reverse=True):
        for form in {secret, quote(secret, safe="")}:
            text = text.replace(form, HIDDEN)
    text = _USERINFO.sub(rf"\g<scheme>{HIDDEN}@", text)
    text = _QUERY.sub(rf"\g<name>{HIDDEN}", text)
    return _BEARER.sub(rf"\g<name>{HIDDEN}", text)


class RedactSecrets(logging.Filter):
    """A logging filter that passes every record with its message redacted (``redact``, with
    the ``secrets`` it was given): put on a handler it covers every record that handler writes,
    on a logger (``uvicorn.access``) every record logged there."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        shown = redact(message, self.secrets)
        if shown != message:
            record.msg, record.args = shown, None
        return True
