"""Per-thread HeartbeatConfig: the Struct, merging a JSON patch, stored form.

Pure apart from ``zoneinfo`` lookups. Every refusal is a ``ConfigError`` naming the field. The
ranges and lengths checked are ``ledger.limits``'.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from ledger.errors import HeartbeatError
from ledger.limits import CONFIG_RANGES, CONFIG_TEXT_MAX, EVERY_SECONDS, TEMPERATURE
from ledger.wakes import LEDGER_EVENTS

__all__ = [
    "STRATEGIES",
    "ConfigError",
    "HeartbeatConfig",
    "decode_stored",
    "encode",
    "merge_config",
    "parse_duration",
    "portable_zone_name",
    "to_dict",
    "validate_config",
]

_DURATION: Final = re.compile(
    r"(?:(?P<d>\d+)\s*d)?\s*(?:(?P<h>\d+)\s*h)?\s*(?:(?P<m>\d+)\s*m)?\s*(?:(?P<s>\d+)\s*s)?",
    re.IGNORECASE | re.ASCII,
)
_UNIT_SECONDS: Final = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_ZONE_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9_+\-]+)*")
_HOST_ZONES: Final = frozenset({"localtime", "posixrules", "factory"})
_HOST_ZONE_FOLDERS: Final = frozenset({"posix", "right"})
_DURATION_HINT: Final = 'a number of seconds or a duration like "90s", "30m", "1h", "2h30m", "1d"'


class ConfigError(HeartbeatError, code="invalid_config", http_status=422):
    """The heartbeat config is invalid."""

    field: str

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field=field)


class HeartbeatConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One thread's heartbeat settings."""

    enabled: bool = True
    every_seconds: int = 1800
    target: str = "none"
    model: str | None = None
    max_tokens: int = 500
    temperature: float = 0.7
    dry_run: bool = False
    active_hours_start: int | None = None
    active_hours_end: int | None = None
    timezone: str = "UTC"
    # Ledger events that wake the thread (``ledger.wakes.LEDGER_EVENTS``)
    wake_on: list[str] = msgspec.field(default_factory=list)
    skip_unchanged: bool = True  # skip the model when nothing the decision reads changed
    daily_token_budget: int | None = None  # tokens per local day; None: no budget
    quiet_after_user_seconds: int | None = None  # yield this long after the user wrote
    # how a decision is reached: "auto" picks by provider, "prompt" asks the model for the
    # whole decision, "procedure" goes through the rules one at a time (for small models)
    strategy: str = "auto"


STRATEGIES: Final = ("auto", "prompt", "procedure")


def _show(value: object) -> str:
    """Render a value as the caller sent it (JSON-like), shortened."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    try:
        text = msgspec.json.encode(value).decode()
    except (TypeError, ValueError, OverflowError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- field checkers: return the normalized value or raise ConfigError -------------------------


def _bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(name, f"{name} must be a boolean, got {_show(value)}")
    return value


def _int(name: str, value: object) -> int:
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        return value
    elif isinstance(value, float) and value.is_integer():
        return int(value)
    raise ConfigError(name, f"{name} must be an integer, got {_show(value)}")


def _int_in(name: str, value: object) -> int:
    number = _int(name, value)
    lo, hi = CONFIG_RANGES[name]
    if not lo <= number <= hi:
        raise ConfigError(name, f"{name} must be {lo}..{hi}, got {number}")
    return number


def _optional_int_in(name: str, value: object) -> int | None:
    return None if value is None else _int_in(name, value)


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(name, f"{name} must be a string, got {_show(value)}")
    limit = CONFIG_TEXT_MAX[name]
    if len(value) > limit:  # as sent, before trimming, as the OpenAPI document's maxLength
        raise ConfigError(name, f"{name} must be at most {limit} characters, got {len(value)}")
    text = value.strip()
    if not text:
        raise ConfigError(name, f"{name} must not be empty")
    return text


def _every_seconds(value: object) -> int:
    return _int_in("every_seconds", value)


def _model(value: object) -> str | None:
    return None if value is None else _text("model", value)


def _temperature(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError("temperature", f"temperature must be a number, got {_show(value)}")
    number = float(value)
    lo, hi = TEMPERATURE
    if not (math.isfinite(number) and lo <= number <= hi):
        raise ConfigError("temperature", f"temperature must be {lo}..{hi}, got {_show(value)}")
    return number


def portable_zone_name(name: str) -> bool:
    """Whether ``name`` is an IANA zone that means the same on every host: zoneinfo resolves it,
    and it is not a host's alias ("localtime", "posixrules"), the placeholder "Factory", a
    "posix/" or "right/" variant found only in some hosts' zone folders, or a path."""
    if _ZONE_NAME.fullmatch(name) is None:
        return False
    if name.lower() in _HOST_ZONES or name.split("/", 1)[0].lower() in _HOST_ZONE_FOLDERS:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def _timezone(value: object) -> str:
    name = _text("timezone", value)
    if portable_zone_name(name):
        return name
    raise ConfigError(
        "timezone",
        f'timezone must be an IANA time zone name like "Europe/Paris", got {_show(value)}',
    )


def _wake_on(value: object) -> list[str]:
    allowed = ", ".join(LEDGER_EVENTS)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError("wake_on", f"wake_on must be a list of {allowed}; got {_show(value)}")
    unknown = [v for v in value if v not in LEDGER_EVENTS]
    if unknown:
        raise ConfigError("wake_on", f"wake_on may hold only {allowed}; got {_show(unknown[0])}")
    return [e for e in LEDGER_EVENTS if e in value]  # each once, in one order


def _strategy(value: object) -> str:
    if value not in STRATEGIES:
        allowed = ", ".join(_show(s) for s in STRATEGIES)
        raise ConfigError("strategy", f"strategy must be one of {allowed}, got {_show(value)}")
    return str(value)


_CHECKERS: Final[Mapping[str, Callable[[object], object]]] = {
    "enabled": lambda v: _bool("enabled", v),
    "every_seconds": _every_seconds,
    "target": lambda v: _text("target", v),
    "model": _model,
    "max_tokens": lambda v: _int_in("max_tokens", v),
    "temperature": _temperature,
    "dry_run": lambda v: _bool("dry_run", v),
    "active_hours_start": lambda v: _optional_int_in("active_hours_start", v),
    "active_hours_end": lambda v: _optional_int_in("active_hours_end", v),
    "timezone": _timezone,
    "wake_on": _wake_on,
    "skip_unchanged": lambda v: _bool("skip_unchanged", v),
    "daily_token_budget": lambda v: _optional_int_in("daily_token_budget", v),
    "quiet_after_user_seconds": lambda v: _optional_int_in("quiet_after_user_seconds", v),
    "strategy": _strategy,
}


def parse_duration(value: object) -> int:
    """Seconds from an int or a string like ``"90s"``, ``"30m"``, ``"2h30m"``, ``"1d"``, ``"1800"``.

    Range is not checked here. Raises ``ConfigError(field="every")``.
    """
    seconds: int | None = None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        seconds = value
    elif isinstance(value, float) and value.is_integer():
        seconds = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.isdecimal() and text.isascii() and len(text) <= 12:
            seconds = int(text)
        elif 0 < len(text) <= 40:
            m = _DURATION.fullmatch(text)
            if m is not None and any(m.groupdict().values()):
                seconds = sum(
                    int(amount) * _UNIT_SECONDS[unit]
                    for unit, amount in m.groupdict().items()
                    if amount is not None
                )
    if seconds is None:
        raise ConfigError("every", f"every must be {_DURATION_HINT}, got {_show(value)}")
    if seconds < 0:
        raise ConfigError("every", f"every must not be negative, got {_show(value)}")
    return seconds


def _check_every(value: object) -> int:
    seconds = parse_duration(value)
    lo, hi = EVERY_SECONDS
    if not lo <= seconds <= hi:
        raise ConfigError("every", f"every must be {lo}..{hi} seconds, got {_show(value)}")
    return seconds


def _check_cross_fields(cfg: HeartbeatConfig, channels: Collection[str] | None) -> None:
    start, end = cfg.active_hours_start, cfg.active_hours_end
    if start is not None and end is None:
        raise ConfigError(
            "active_hours_end",
            "active_hours_end is required when active_hours_start is set (give both or neither)",
        )
    if start is None and end is not None:
        raise ConfigError(
            "active_hours_start",
            "active_hours_start is required when active_hours_end is set (give both or neither)",
        )
    if start is not None and start == end:
        raise ConfigError(
            "active_hours_end",
            f"active_hours_end must differ from active_hours_start, both are {start}",
        )
    if channels is not None and cfg.target not in ("none", "last") and cfg.target not in channels:
        allowed = ", ".join(_show(name) for name in ["none", "last", *sorted(channels)])
        raise ConfigError("target", f"target must be one of {allowed}, got {_show(cfg.target)}")


def _merge(
    current: HeartbeatConfig, patch: object, channels: Collection[str] | None
) -> HeartbeatConfig:
    if not isinstance(patch, dict):
        raise ConfigError("body", f"config must be a JSON object, got {_show(patch)}")
    changes: dict[str, Any] = {}
    for key, value in patch.items():
        if key == "every":
            changes["every_seconds"] = _check_every(value)
        elif isinstance(key, str) and key in _CHECKERS:
            if key == "every_seconds" and "every" in patch:
                continue  # compared below, after "every" is parsed
            changes[key] = _CHECKERS[key](value)
        else:
            allowed = ", ".join(["every", *sorted(_CHECKERS)])
            raise ConfigError(str(key), f"unknown field {_show(key)}; allowed: {allowed}")
    if "every" in patch and "every_seconds" in patch:
        explicit = _every_seconds(patch["every_seconds"])
        if explicit != changes["every_seconds"]:
            raise ConfigError(
                "every",
                f"every ({_show(patch['every'])}) and every_seconds ({explicit}) disagree;"
                " give one of them",
            )
    merged = msgspec.structs.replace(current, **changes)
    _validate(merged, channels)
    return merged


def _validate(cfg: HeartbeatConfig, channels: Collection[str] | None) -> None:
    for name, check in _CHECKERS.items():
        check(getattr(cfg, name))
    _check_cross_fields(cfg, channels)


def merge_config(
    current: HeartbeatConfig, patch: object, *, channels: Collection[str] = ()
) -> HeartbeatConfig:
    """Return ``current`` with the fields of the JSON object ``patch`` applied, fully validated.

    Accepts the alias ``every`` (seconds or a duration string). ``null`` resets ``model``, the
    active hours, the budget and the quiet time. Nothing is applied unless everything is valid.
    """
    return _merge(current, patch, channels)


def validate_config(cfg: HeartbeatConfig, *, channels: Collection[str] = ()) -> None:
    """Check every field's type and range and the cross-field rules; raise ConfigError."""
    _validate(cfg, channels)


def decode_stored(raw: str | bytes | None) -> tuple[HeartbeatConfig, str | None]:
    """Decode a stored config; on failure return the defaults and the reason.

    The target is not checked against the channels here: a channel removed since the config was
    stored is the executor's concern, not a reason to discard the whole config.
    """
    if raw is None or not raw.strip():
        return HeartbeatConfig(), None
    try:
        data = msgspec.json.decode(raw)
        return _merge(HeartbeatConfig(), data, None), None
    except msgspec.DecodeError as exc:
        return HeartbeatConfig(), f"stored config is not valid JSON: {exc}"
    except ConfigError as exc:
        return HeartbeatConfig(), f"stored config is invalid: {exc.message}"


def encode(cfg: HeartbeatConfig) -> str:
    """The config as a JSON string, every field present."""
    return msgspec.json.encode(cfg).decode()


def to_dict(cfg: HeartbeatConfig) -> dict[str, Any]:
    """The config as a plain dict, every field present."""
    return msgspec.structs.asdict(cfg)
