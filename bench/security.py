"""The security middleware's cost per request, against the bare app, side by side in one process.

    python bench/security.py [--requests 20000] [--rounds 6]

A trivial ASGI app answers JSON; it is called directly (no server, no socket) either bare or
behind ``SecurityMiddleware``, in alternating rounds (order reversed every other round). Cases:
a GET without a body, a same-origin POST whose body the app reads (the read runs under the body
deadline), and a POST from a configured extra origin (parsed, then found in the cache). Prints
the median microseconds per request and the middleware's extra cost; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.http import JSON
from app.security import SecurityMiddleware, parse_origin

HOST = b"127.0.0.1:8000"
CASES: dict[str, dict[str, Any]] = {
    "GET, no body": {"method": "GET", "headers": []},
    "POST same origin, body read": {
        "method": "POST",
        "headers": [(b"origin", b"http://" + HOST), (b"content-length", b"7")],
    },
    "POST extra origin, body read": {
        "method": "POST",
        "headers": [(b"origin", b"http://localhost:3000"), (b"content-length", b"7")],
    },
}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["method"] == "POST":
        await receive()
    await JSON({"ok": True})(scope, receive, send)


async def receive() -> Message:
    return {"type": "http.request", "body": b'{"a":1}', "more_body": False}


async def send(message: Message) -> None:
    return None


async def timed(target: ASGIApp, case: dict[str, Any], n: int) -> float:
    base = {"type": "http", "path": "/api/x", "scheme": "http", "server": ("127.0.0.1", 8000)}
    headers = [(b"host", HOST), *case["headers"]]
    started = time.perf_counter()
    for i in range(n):
        await target({**base, "method": case["method"], "headers": headers}, receive, send)
        if i % 16 == 0:
            await asyncio.sleep(0)  # let the loop run, as a server's does: it drops stale timers
    return (time.perf_counter() - started) / n * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    guarded = SecurityMiddleware(
        app,
        token=None,
        hosts=frozenset({"127.0.0.1"}),
        max_body=1024,
        body_timeout=15,
        origins=frozenset(filter(None, [parse_origin("http://localhost:3000")])),
    )
    print("| case | bare µs/request | guarded µs/request | extra µs |")
    print("|---|---|---|---|")
    for name, case in CASES.items():
        runs: dict[str, list[float]] = {"bare": [], "guarded": []}
        for r in range(args.rounds):
            order = [("bare", app), ("guarded", guarded)]
            for label, target in order if r % 2 == 0 else order[::-1]:
                runs[label].append(await timed(target, case, args.requests))
        bare, guard = statistics.median(runs["bare"]), statistics.median(runs["guarded"])
        print(f"| {name} | {bare:.1f} | {guard:.1f} | {guard - bare:.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
