"""Settings read once from the environment. A bad value stops start-up with one clear line."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

from app.security import parse_origin
from ledger.errors import HeartbeatError
from ledger.limits import (
    WAKE_MIN_SPACING,
    WAKE_MIN_SPACING_DEFAULT,
    WAKE_PER_MINUTE,
    WAKE_PER_MINUTE_DEFAULT,
)
from loops.llm import SchemaForm, parse_ollama_host, parse_schema_form

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
PROVIDERS = ("auto", "ollama", "openai", "embedded")


class SettingsError(HeartbeatError, code="invalid_settings"):
    """A setting in the environment has a value the service cannot use."""


class LoopSettings(msgspec.Struct, frozen=True, kw_only=True):
    enabled: bool
    seconds: int


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    workspace: Path
    db_path: Path
    database_url: str | None = None  # postgresql://...: PostgreSQL instead of the db_path file
    ollama_host: str = "http://127.0.0.1:11434"
    model: str = "llama3.2:latest"
    api_token: str | None = None
    max_concurrency: int = 2
    heartbeat: LoopSettings = LoopSettings(enabled=True, seconds=1800)
    reflection: LoopSettings = LoopSettings(enabled=False, seconds=900)
    personality: LoopSettings = LoopSettings(enabled=False, seconds=1200)
    self_reply: LoopSettings = LoopSettings(enabled=False, seconds=1800)
    loop_window: int = 20
    log_level: str = "INFO"
    channels: dict[str, str] = msgspec.field(default_factory=dict)
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()  # besides the service's own; scheme://host[:port]
    llm_provider: str = "auto"
    llm_base_url: str | None = None
    llm_api_key: str | None = None
    llm_schema_form: SchemaForm = "auto"
    llm_idle_timeout: float = 120.0
    run_deadline: float = 300.0
    # Scheduled runs due within this many seconds of each other share one wake-up and one
    # claim transaction; a run starts at most this late. Not an environment setting.
    timer_slack: float = 0.1
    max_body_bytes: int = 256 * 1024
    body_timeout: float = 15.0  # seconds for a request's body to arrive in full
    # the wakes' flood guard, per thread (see loops.wakes)
    wake_min_spacing: float = float(WAKE_MIN_SPACING_DEFAULT)
    wake_per_minute: int = WAKE_PER_MINUTE_DEFAULT

    @property
    def heartbeat_md(self) -> Path:
        return self.workspace / "HEARTBEAT.md"

    @classmethod
    def for_workspace(cls, workspace: Path, **overrides: object) -> Settings:
        """Defaults around a workspace folder (used by tests and tools)."""
        base = cls(workspace=workspace, db_path=workspace / ".heartbeat" / "heartbeat.db")
        return msgspec.structs.replace(base, **overrides)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        workspace = Path(env.get("HEARTBEAT_WORKSPACE") or os.getcwd()).expanduser()
        db = env.get("HEARTBEAT_DB")
        db_path = Path(db).expanduser() if db else workspace / ".heartbeat" / "heartbeat.db"
        try:
            ollama_host = parse_ollama_host(env.get("OLLAMA_HOST"))
        except ValueError as exc:
            raise SettingsError(f"OLLAMA_HOST: {exc}") from None
        token = env.get("HEARTBEAT_API_TOKEN") or None
        if token is not None and len(token) < 8:
            raise SettingsError("HEARTBEAT_API_TOKEN must be at least 8 characters long")
        level = env.get("LOG_LEVEL", "INFO").strip().upper()
        if level not in LOG_LEVELS:
            raise SettingsError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
        provider = env.get("HEARTBEAT_LLM_PROVIDER", "auto").strip().lower()
        if provider not in PROVIDERS:
            raise SettingsError(
                f"HEARTBEAT_LLM_PROVIDER must be one of {', '.join(PROVIDERS)}, got {provider!r}"
            )
        try:
            schema_form = parse_schema_form(env.get("HEARTBEAT_LLM_SCHEMA_FORM", ""))
        except ValueError as exc:
            raise SettingsError(f"HEARTBEAT_LLM_SCHEMA_FORM {exc}") from None
        model = env.get("HEARTBEAT_MODEL", "llama3.2:latest").strip()
        if not model:
            raise SettingsError("HEARTBEAT_MODEL must not be empty")
        hosts = tuple(
            h.strip().lower()
            for h in env.get("HEARTBEAT_ALLOWED_HOSTS", "").split(",")
            if h.strip()
        )
        origins = tuple(
            o.strip() for o in env.get("HEARTBEAT_ALLOWED_ORIGINS", "").split(",") if o.strip()
        )
        for origin in origins:
            if parse_origin(origin) is None:
                raise SettingsError(
                    "HEARTBEAT_ALLOWED_ORIGINS must be comma-separated origins like"
                    f" http://127.0.0.1:3000 (scheme, host, optional port; no path), got {origin!r}"
                )
        return cls(
            workspace=workspace,
            db_path=db_path,
            database_url=_database_url(env.get("HEARTBEAT_DATABASE_URL", "").strip()),
            ollama_host=ollama_host,
            model=model,
            api_token=token,
            max_concurrency=_int(env, "HEARTBEAT_MAX_CONCURRENCY", 2, 1, 64),
            heartbeat=_loop(env, "CRT_HEARTBEAT_LOOP", True, 1800),
            reflection=_loop(env, "CRT_REFLECTION_LOOP", False, 900),
            personality=_loop(env, "CRT_PERSONALITY_LOOP", False, 1200),
            self_reply=_loop(env, "CRT_JOURNAL_SELF_REPLY_LOOP", False, 1800),
            loop_window=_int(env, "CRT_LOOP_WINDOW", 20, 1, 500),
            log_level=level,
            channels=_channels(env.get("HEARTBEAT_CHANNELS")),
            allowed_hosts=hosts,
            allowed_origins=origins,
            llm_provider=provider,
            llm_base_url=env.get("HEARTBEAT_LLM_BASE_URL") or None,
            llm_api_key=env.get("HEARTBEAT_LLM_API_KEY") or None,
            llm_schema_form=schema_form,
            llm_idle_timeout=float(_int(env, "HEARTBEAT_LLM_IDLE_SECONDS", 120, 1, 3600)),
            run_deadline=float(_int(env, "HEARTBEAT_RUN_DEADLINE_SECONDS", 300, 5, 86400)),
            body_timeout=float(_int(env, "HEARTBEAT_BODY_TIMEOUT_SECONDS", 15, 1, 300)),
            wake_min_spacing=float(
                _int(
                    env,
                    "HEARTBEAT_WAKE_MIN_SPACING_SECONDS",
                    WAKE_MIN_SPACING_DEFAULT,
                    *WAKE_MIN_SPACING,
                )
            ),
            wake_per_minute=_int(
                env, "HEARTBEAT_WAKE_PER_MINUTE", WAKE_PER_MINUTE_DEFAULT, *WAKE_PER_MINUTE
            ),
        )


def _database_url(raw: str) -> str | None:
    """A PostgreSQL URL, checked by the driver; empty means the SQLite file."""
    if not raw:
        return None
    scheme = urlsplit(raw).scheme
    if scheme not in ("postgresql", "postgres"):
        raise SettingsError(
            "HEARTBEAT_DATABASE_URL must be a postgresql://user@host:port/database URL"
            f" (unset for the SQLite file), not a {scheme or 'schemeless'} one"
        )
    try:
        from ledger.storage.postgres import check_url
    except ImportError:
        raise SettingsError(
            "HEARTBEAT_DATABASE_URL needs the PostgreSQL driver: pip install 'heartbeat[postgres]'"
        ) from None
    try:
        check_url(raw)
    except ValueError as exc:
        raise SettingsError(f"HEARTBEAT_DATABASE_URL: {exc}") from None
    return raw


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be a whole number {lo}..{hi}, got {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name} must be {lo}..{hi}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be one of true, false, 1, 0, yes, no, on, off; got {raw!r}")


def _loop(env: Mapping[str, str], prefix: str, enabled: bool, seconds: int) -> LoopSettings:
    return LoopSettings(
        enabled=_bool(env, f"{prefix}_ENABLED", enabled),
        seconds=_int(env, f"{prefix}_SECONDS", seconds, 10, 86400),
    )


def _channels(raw: str | None) -> dict[str, str]:
    if not raw or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError(
            f"HEARTBEAT_CHANNELS must be a JSON object, not valid JSON: {exc}"
        ) from None
    if not isinstance(value, dict):
        raise SettingsError("HEARTBEAT_CHANNELS must be a JSON object of name → webhook URL")
    out: dict[str, str] = {}
    for name, url in value.items():
        if name in ("none", "last") or not name.strip():
            raise SettingsError(f"HEARTBEAT_CHANNELS: {name!r} is reserved or empty")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise SettingsError(f"HEARTBEAT_CHANNELS: channel {name!r} needs an http(s) URL")
        out[name] = url
    return out
