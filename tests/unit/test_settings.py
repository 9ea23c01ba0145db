"""Settings from the environment: defaults, parsing, and one clear line for each bad value."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import uvicorn

from app.cli import main
from app.settings import Settings, SettingsError


def test_defaults(tmp_path: Path) -> None:
    s = Settings.from_env({"HEARTBEAT_WORKSPACE": str(tmp_path)})
    assert s.db_path == tmp_path / ".heartbeat" / "heartbeat.db"
    assert s.heartbeat_md == tmp_path / "HEARTBEAT.md"
    assert (s.ollama_host, s.model, s.max_concurrency) == (
        "http://127.0.0.1:11434",
        "llama3.2:latest",
        2,
    )
    assert (s.heartbeat.enabled, s.heartbeat.seconds) == (True, 1800)
    assert (s.reflection.enabled, s.reflection.seconds) == (False, 900)
    assert (s.personality.enabled, s.personality.seconds) == (False, 1200)
    assert (s.self_reply.enabled, s.self_reply.seconds) == (False, 1800)
    assert s.loop_window == 20 and s.log_level == "INFO" and s.api_token is None


@pytest.mark.parametrize(
    ("env", "attr", "expected"),
    [
        ({"OLLAMA_HOST": ":5000"}, "ollama_host", "http://127.0.0.1:5000"),
        ({"OLLAMA_HOST": "https://gpu.lan"}, "ollama_host", "https://gpu.lan:443"),
        ({"HEARTBEAT_DB": "/x/y.db"}, "db_path", Path("/x/y.db")),
        ({"HEARTBEAT_MAX_CONCURRENCY": "4"}, "max_concurrency", 4),
        ({"CRT_LOOP_WINDOW": " 50 "}, "loop_window", 50),
        ({"LOG_LEVEL": "debug"}, "log_level", "DEBUG"),
        ({"HEARTBEAT_CHANNELS": '{"ops": "http://hook"}'}, "channels", {"ops": "http://hook"}),
        ({"HEARTBEAT_ALLOWED_HOSTS": "Box.lan, x"}, "allowed_hosts", ("box.lan", "x")),
        ({"HEARTBEAT_LLM_PROVIDER": "OpenAI"}, "llm_provider", "openai"),
        ({}, "llm_schema_form", "auto"),
        ({"HEARTBEAT_LLM_SCHEMA_FORM": ""}, "llm_schema_form", "auto"),
        ({"HEARTBEAT_LLM_SCHEMA_FORM": " JSON_Object "}, "llm_schema_form", "json_object"),
        ({"HEARTBEAT_LLM_SCHEMA_FORM": "none"}, "llm_schema_form", "none"),
        (
            {"HEARTBEAT_ALLOWED_ORIGINS": "http://127.0.0.1:3000, https://Box.lan"},
            "allowed_origins",
            ("http://127.0.0.1:3000", "https://Box.lan"),
        ),
        ({}, "body_timeout", 15.0),
        ({"HEARTBEAT_BODY_TIMEOUT_SECONDS": "60"}, "body_timeout", 60.0),
        ({}, "wake_min_spacing", 10.0),
        ({"HEARTBEAT_WAKE_MIN_SPACING_SECONDS": "0"}, "wake_min_spacing", 0.0),
        ({}, "wake_per_minute", 30),
        ({"HEARTBEAT_WAKE_PER_MINUTE": "5"}, "wake_per_minute", 5),
        ({}, "database_url", None),
        ({"HEARTBEAT_DATABASE_URL": " "}, "database_url", None),
        (
            {"HEARTBEAT_DATABASE_URL": "postgresql://hb@db.lan:5432/heartbeat"},
            "database_url",
            "postgresql://hb@db.lan:5432/heartbeat",
        ),
    ],
)
def test_values(env: dict[str, str], attr: str, expected: object) -> None:
    assert getattr(Settings.from_env(env), attr) == expected


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"OLLAMA_HOST": "::1"}, "OLLAMA_HOST"),
        ({"HEARTBEAT_MAX_CONCURRENCY": "0"}, "HEARTBEAT_MAX_CONCURRENCY"),
        ({"HEARTBEAT_MAX_CONCURRENCY": "two"}, "HEARTBEAT_MAX_CONCURRENCY"),
        ({"CRT_HEARTBEAT_LOOP_ENABLED": "maybe"}, "CRT_HEARTBEAT_LOOP_ENABLED"),
        ({"CRT_REFLECTION_LOOP_SECONDS": "-5"}, "CRT_REFLECTION_LOOP_SECONDS"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"HEARTBEAT_API_TOKEN": "short"}, "HEARTBEAT_API_TOKEN"),
        ({"HEARTBEAT_CHANNELS": "{nope"}, "HEARTBEAT_CHANNELS"),
        ({"HEARTBEAT_CHANNELS": '{"last": "http://x"}'}, "HEARTBEAT_CHANNELS"),
        ({"HEARTBEAT_CHANNELS": '{"ops": "ftp://x"}'}, "HEARTBEAT_CHANNELS"),
        ({"HEARTBEAT_LLM_PROVIDER": "gpt"}, "HEARTBEAT_LLM_PROVIDER"),
        ({"HEARTBEAT_MODEL": "  "}, "HEARTBEAT_MODEL"),
        ({"HEARTBEAT_LLM_SCHEMA_FORM": "grammar"}, "HEARTBEAT_LLM_SCHEMA_FORM"),
        ({"HEARTBEAT_ALLOWED_ORIGINS": "127.0.0.1:3000"}, "HEARTBEAT_ALLOWED_ORIGINS"),
        ({"HEARTBEAT_ALLOWED_ORIGINS": "http://box.lan/app"}, "HEARTBEAT_ALLOWED_ORIGINS"),
        ({"HEARTBEAT_ALLOWED_ORIGINS": "null"}, "HEARTBEAT_ALLOWED_ORIGINS"),
        ({"HEARTBEAT_BODY_TIMEOUT_SECONDS": "0"}, "HEARTBEAT_BODY_TIMEOUT_SECONDS"),
        ({"HEARTBEAT_BODY_TIMEOUT_SECONDS": "1.5"}, "HEARTBEAT_BODY_TIMEOUT_SECONDS"),
        ({"HEARTBEAT_WAKE_MIN_SPACING_SECONDS": "3601"}, "HEARTBEAT_WAKE_MIN_SPACING_SECONDS"),
        ({"HEARTBEAT_WAKE_PER_MINUTE": "0"}, "HEARTBEAT_WAKE_PER_MINUTE"),
        ({"HEARTBEAT_DATABASE_URL": "mysql://db/x"}, "HEARTBEAT_DATABASE_URL"),
        ({"HEARTBEAT_DATABASE_URL": "/var/db.sqlite"}, "HEARTBEAT_DATABASE_URL"),
        ({"HEARTBEAT_DATABASE_URL": "postgresql://u:pw@db:port/x"}, "HEARTBEAT_DATABASE_URL"),
        ({"HEARTBEAT_DATABASE_URL": "postgresql://db/x?nonsense=1"}, "HEARTBEAT_DATABASE_URL"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], field: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    message = str(info.value)
    assert message.startswith(field) and "\n" not in message


def test_a_bad_database_url_is_refused_without_echoing_its_password() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"HEARTBEAT_DATABASE_URL": "postgresql://hb:s3cret@db:port/x"})
    assert "s3cret" not in str(info.value)


def test_a_bad_schema_form_says_what_is_accepted() -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"HEARTBEAT_LLM_SCHEMA_FORM": "json"})
    assert str(info.value) == (
        "HEARTBEAT_LLM_SCHEMA_FORM must be one of auto, json_schema, json_object, none, got 'json'"
    )


def test_cli_refuses_bad_settings_and_public_bind(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HEARTBEAT_MAX_CONCURRENCY", "zero")
    assert main(["serve"]) == 2
    assert "HEARTBEAT_MAX_CONCURRENCY" in capsys.readouterr().err
    monkeypatch.delenv("HEARTBEAT_MAX_CONCURRENCY")
    monkeypatch.delenv("HEARTBEAT_API_TOKEN", raising=False)
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "HEARTBEAT_API_TOKEN" in capsys.readouterr().err
    assert main(["serve", "--port", "70000"]) == 2


def test_cli_bounds_slow_and_idle_clients(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import app.sse
    import loops.supervisor

    configs: list[uvicorn.Config] = []

    class NoServer:
        started = True

        def __init__(self, config: uvicorn.Config) -> None:
            configs.append(config)

    async def serve(server: NoServer) -> None:
        return None

    monkeypatch.setattr(uvicorn, "Server", NoServer)
    monkeypatch.setattr(app.sse, "serve", serve)
    monkeypatch.setattr(loops.supervisor, "freeze_startup_heap", lambda: None)
    monkeypatch.setenv("HEARTBEAT_WORKSPACE", str(tmp_path))
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    httpx_log = logging.getLogger("httpx")
    level = httpx_log.level
    try:
        assert main(["serve", "--port", "8123"]) == 0
    finally:
        httpx_log.setLevel(level)  # serve quietens httpx for the process
    (config,) = configs
    assert config.timeout_keep_alive == 75  # longer than clients' pools keep idle connections
    assert config.limit_concurrency == 1000
    assert config.h11_max_incomplete_event_size == 16 * 1024
    assert config.timeout_graceful_shutdown == 15
    assert "8123" in capsys.readouterr().out
