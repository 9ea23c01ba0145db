"""Small helpers shared by the route modules: JSON in and out, parameters, the error body.

Every error answers ``{"error": {"code", "message", "field"}}``, built from the error itself
(see ``ledger.errors``); a caller's mistake is a 4xx.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ledger.errors import HeartbeatError, NotFound
from ledger.limits import POST_ID_MAX, THREAD_ID_MAX, Page

log = logging.getLogger(f"heartbeat.{__name__}")

THREAD_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.:-]{{0,{THREAD_ID_MAX - 1}}}")  # fullmatch
POST_ID = re.compile(rf"[A-Za-z0-9_.:-]{{1,{POST_ID_MAX}}}")  # fullmatch
JSON_DEPTH_MAX = 64  # arrays and objects nested in a request body
ID_DIGITS_MAX = 18  # a cursor or an event id: at most this many ASCII digits
CONTROL_CHARACTERS = r"\x00-\x08\x0b\x0c\x0e-\x1f"  # C0 controls but tab, LF, CR (a class's inside)
_CONTROL = re.compile(f"[{CONTROL_CHARACTERS}]")
_JSON_NESTING = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)  # strings skipped whole
_encoder = msgspec.json.Encoder()


class ApiError(HeartbeatError):
    """A request the edge refuses, with the status and code it answers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, field=field, headers=headers, extra=extra)
        self.http_status = status
        self.code = code


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


def error_response(err: HeartbeatError) -> JSON:
    """``{"error": {"code", "message", "field", **extra}}`` with the error's status and headers."""
    body = {"code": err.code, "message": err.message, "field": err.field, **err.extra}
    return JSON(
        {"error": body},
        status_code=err.http_status,
        headers=dict(err.headers) if err.headers else None,
    )


async def read_json(request: Request) -> Any:
    """The request body decoded as JSON; 400/415 with a clear message otherwise."""
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if ctype not in ("application/json", "text/plain", "") and not ctype.endswith("+json"):
        raise ApiError(415, "unsupported_media_type", f"send JSON, not {ctype}", field="body")
    body = await request.body()
    if not body.strip():
        raise ApiError(
            400, "invalid_json", "the request body is empty; send a JSON object", field="body"
        )
    if json_too_deep(body, JSON_DEPTH_MAX):
        raise ApiError(
            400,
            "invalid_json",
            f"the body nests arrays and objects more than {JSON_DEPTH_MAX} levels deep",
            field="body",
        )
    try:
        return msgspec.json.decode(body)
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_json", "the body is not UTF-8", field="body") from None
    except msgspec.DecodeError as exc:
        raise ApiError(
            400, "invalid_json", f"the body is not valid JSON: {exc}", field="body"
        ) from None


def json_too_deep(text: bytes, limit: int) -> bool:
    """Whether the JSON ``text`` nests arrays and objects more than ``limit`` levels deep
    (brackets inside strings do not count)."""
    if text.count(b"[") + text.count(b"{") <= limit:
        return False
    depth = 0
    for m in _JSON_NESTING.finditer(text):
        token = m.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif token in (b"]", b"}"):
            depth -= 1
    return False


def whole_number(raw: str, max_digits: int = ID_DIGITS_MAX) -> int | None:
    """``raw`` as an int if it is 1 to ``max_digits`` ASCII digits, else None ("²" is a digit
    to ``str.isdigit`` but not to ``int``)."""
    if 0 < len(raw) <= max_digits and raw.isascii() and raw.isdigit():
        return int(raw)
    return None


async def read_object(request: Request) -> dict[str, Any]:
    data = await read_json(request)
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_body", "the body must be a JSON object", field="body")
    return data


def thread_id(request: Request) -> str:
    value = str(request.path_params["thread_id"])
    check_thread_id(value)
    return value


def check_thread_id(value: object, field: str = "thread_id") -> str:
    if not isinstance(value, str) or not THREAD_ID.fullmatch(value):
        raise ApiError(
            422,
            "invalid_thread_id",
            f"thread ids are 1-{THREAD_ID_MAX} characters of letters, digits and _ . : -,"
            f" starting with a letter or digit; got {value!r}"[:300],
            field=field,
        )
    return value


def post_id(request: Request) -> str:
    value = str(request.path_params["post_id"])
    if not POST_ID.fullmatch(value):
        raise NotFound("post", value[:140])
    return value


def limit_param(request: Request, page: Page) -> int:
    raw = request.query_params.get("limit")
    default, maximum = page
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(
            422, "invalid_parameter", f"limit must be a whole number, got {raw!r}", field="limit"
        ) from None
    if not 1 <= value <= maximum:
        raise ApiError(
            422, "invalid_parameter", f"limit must be 1..{maximum}, got {value}", field="limit"
        )
    return value


def cursor_param(request: Request) -> int | None:
    raw = request.query_params.get("cursor")
    if raw is None or raw == "":
        return None
    cursor = whole_number(raw)
    if cursor is None:
        raise ApiError(
            422,
            "invalid_parameter",
            f"cursor {raw[:40]!r} is not a cursor from this API; pass back next_cursor unchanged",
            field="cursor",
        )
    return cursor


def control_character(text: str) -> str | None:
    """The first C0 control character in ``text`` other than tab, newline and carriage return."""
    m = _CONTROL.search(text)
    return None if m is None else m.group()


def text_field(
    data: dict[str, Any], name: str, *, max_len: int, required: bool = True, default: str = ""
) -> str:
    value = data.get(name)
    if value is None:
        if required:
            raise ApiError(422, "missing_field", f"{name} is required", field=name)
        return default
    if not isinstance(value, str):
        raise ApiError(422, "invalid_type", f"{name} must be a string", field=name)
    # checked as sent, before trimming: what the OpenAPI document's maxLength and pattern say
    bad = control_character(value)
    if bad is not None:
        raise ApiError(
            422,
            "invalid_value",
            f"{name} must not contain control characters, found U+{ord(bad):04X}",
            field=name,
        )
    if len(value) > max_len:
        raise ApiError(
            422,
            "too_long",
            f"{name} must be at most {max_len} characters, got {len(value)}",
            field=name,
        )
    value = value.strip()
    if required and not value:
        raise ApiError(422, "invalid_value", f"{name} must not be empty", field=name)
    return value


def only_fields(data: dict[str, Any], allowed: set[str]) -> None:
    for key in data:
        if key not in allowed:
            raise ApiError(
                422,
                "unknown_field",
                f"unknown field {key!r}; allowed: {', '.join(sorted(allowed))}",
                field=key,
            )


async def handle_error(request: Request, exc: Exception) -> Response:
    """The one handler for every exception that reaches the edge: the error answers itself.

    Starlette's own 404 and 405 get their JSON body here; an error of status 500, or one that is
    not the service's, is logged and answered ``internal_error``.
    """
    if isinstance(exc, HTTPException):
        exc = _routing_error(request, exc)
    if isinstance(exc, HeartbeatError) and exc.http_status != 500:
        return error_response(exc)
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(HeartbeatError("internal error; see the service log"))


def _routing_error(request: Request, exc: HTTPException) -> ApiError:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = {
        404: f"no such path: {request.url.path[:200]}",
        405: f"{request.method} is not allowed on {request.url.path[:200]}",
    }.get(exc.status_code, str(exc.detail))
    headers = dict(exc.headers) if exc.headers else None
    if headers and "Allow" in headers:  # Starlette joins a set: the same order every time
        headers["Allow"] = ", ".join(sorted(m.strip() for m in headers["Allow"].split(",")))
    return ApiError(exc.status_code, code, message, headers=headers)
