"""Slow clients against the real ``heartbeat serve``: half a body, and an idle keep-alive."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from tests.integration.test_process import Service, fake_ollama

pytestmark = pytest.mark.slow

BODY_TIMEOUT = 2  # HEARTBEAT_BODY_TIMEOUT_SECONDS for these tests


def read_until_closed(sock: socket.socket, limit: float) -> bytes:
    sock.settimeout(limit)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def read_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length body, read off a connection that stays open."""
    sock.settimeout(10)
    data = b""

    def more() -> bytes:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection after {data!r}"
        return chunk

    while b"\r\n\r\n" not in data:
        data += more()
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += more()
    return head + b"\r\n\r\n" + body


def get(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        return read_response(sock)


@pytest.mark.timeout(120)
def test_half_a_body_is_answered_408_and_closed_within_the_deadline(workspace: Path) -> None:
    with fake_ollama() as url:
        svc = Service(workspace, url, HEARTBEAT_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT))
        try:
            with socket.create_connection(("127.0.0.1", svc.port)) as sock:
                body = json.dumps({"title": "never", "content": "finished"}).encode()
                sock.sendall(
                    b"POST /api/ledger/posts HTTP/1.1\r\n"
                    + f"Host: 127.0.0.1:{svc.port}\r\n".encode()
                    + b"Content-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body[: len(body) // 2]
                )
                started = time.monotonic()
                answer = read_until_closed(sock, limit=BODY_TIMEOUT + 10)
                elapsed = time.monotonic() - started
            assert answer.startswith(b"HTTP/1.1 408"), answer
            assert BODY_TIMEOUT - 0.5 <= elapsed < BODY_TIMEOUT + 3, elapsed
            error = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
            assert error["code"] == "body_timeout" and error["field"] == "body"
            posts = json.loads(get(svc.port, "/api/ledger/posts").partition(b"\r\n\r\n")[2])
            assert posts["items"] == []
        finally:
            svc.stop()


@pytest.mark.timeout(120)
def test_an_idle_keep_alive_connection_outlives_five_seconds(workspace: Path) -> None:
    with fake_ollama() as url:
        svc = Service(workspace, url)
        try:
            request = f"GET /api/heartbeat/status HTTP/1.1\r\nHost: 127.0.0.1:{svc.port}\r\n\r\n"
            with socket.create_connection(("127.0.0.1", svc.port)) as sock:
                sock.sendall(request.encode())
                assert read_response(sock).startswith(b"HTTP/1.1 200")
                time.sleep(7)  # uvicorn's default closed idle connections after 5 s
                sock.sendall(request.encode())
                assert read_response(sock).startswith(b"HTTP/1.1 200")
        finally:
            svc.stop()
