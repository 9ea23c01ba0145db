"""``heartbeat serve``: start the service (also ``python -m app``).

``heartbeat instructions export [FILE]`` writes the current HEARTBEAT.md (to stdout without
FILE) and ``heartbeat instructions import FILE`` saves FILE as the next revision, wherever the
instructions live: the database with ``HEARTBEAT_DATABASE_URL`` (PostgreSQL), else the
workspace's file. ``--base-revision`` refuses an import once another save came after that
revision."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import sys
from pathlib import Path

from app.settings import Settings, SettingsError
from ledger.redact import RedactSecrets, redact
from ledger.storage.faults import unusable

KEEP_ALIVE_SECONDS = 75
MAX_CONNECTIONS = 1000
MAX_HEAD_BYTES = 16 * 1024


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="heartbeat", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the service")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--demo",
        action="store_true",
        help="on a new database, seed a demo HEARTBEAT.md, Ledger posts and messages",
    )
    instructions = sub.add_parser(
        "instructions", help="import or export HEARTBEAT.md (the database's, with PostgreSQL)"
    )
    what = instructions.add_subparsers(dest="action", required=True)
    imports = what.add_parser("import", help="save FILE as the next revision of HEARTBEAT.md")
    imports.add_argument("file", help="the file to import")
    imports.add_argument(
        "--base-revision", help="refuse the import if another save came after this revision"
    )
    exports = what.add_parser("export", help="write the current HEARTBEAT.md")
    exports.add_argument("file", nargs="?", help="where to write it (default: stdout)")
    args = parser.parse_args(argv)

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"heartbeat: {redact(str(exc))}", file=sys.stderr)
        return 2
    if args.command == "instructions":
        return asyncio.run(instructions_command(settings, args))
    if not 0 < args.port < 65536:
        print(f"heartbeat: --port must be 1..65535, got {args.port}", file=sys.stderr)
        return 2
    if not _is_loopback(args.host) and not settings.api_token:
        print(
            f"heartbeat: refusing to bind {args.host}: a non-loopback address needs"
            " HEARTBEAT_API_TOKEN set",
            file=sys.stderr,
        )
        return 2
    problem = unusable(settings.db_path)
    if problem is not None:
        print(f"heartbeat: {problem}", file=sys.stderr)
        return 1
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    redacting = RedactSecrets([settings.api_token, *settings.channels.values()])
    for handler in logging.getLogger().handlers:
        handler.addFilter(redacting)
    if settings.log_level != "DEBUG":  # one line per LLM request is noise at 100 runs/s
        logging.getLogger("httpx").setLevel(logging.WARNING)
    import uvicorn

    from app.main import create_app

    app = create_app(settings, bind_host=args.host, demo=args.demo)
    url_host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"Heartbeat dashboard: http://{url_host}:{args.port}/", flush=True)
    logging.getLogger("heartbeat").info(
        "serving on http://%s:%d (workspace %s, database %s)",
        args.host,
        args.port,
        settings.workspace,
        settings.db_path,
    )
    from app import sse  # its serve ends the event streams when shutdown begins

    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=15,
        # an idle keep-alive connection outlives common clients' pools (which drop theirs first)
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        limit_concurrency=MAX_CONNECTIONS,  # past it, requests are answered 503
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,  # a request line and headers, at most
    )
    # uvicorn's loggers have handlers of their own (set up by Config): the access log shows
    # the event stream's ?token=, and errors may quote URLs
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.addFilter(redacting)
        for handler in logger.handlers:
            handler.addFilter(redacting)
    server = uvicorn.Server(config)
    from loops.supervisor import freeze_startup_heap

    freeze_startup_heap()
    try:
        asyncio.run(sse.serve(server))
    except KeyboardInterrupt:
        pass
    return 0 if server.started else 3  # 3: uvicorn's start-up failure code (port in use...)


async def instructions_command(settings: Settings, args: argparse.Namespace) -> int:
    """``heartbeat instructions import|export``; see the module."""
    from app.service import open_storage
    from ledger.errors import HeartbeatError
    from loops.clock import SystemClock
    from loops.instructions import FileInstructions, StoredInstructions

    clock = SystemClock()
    store = await open_storage(settings, clock) if settings.database_url else None
    source = StoredInstructions(store, clock) if store else FileInstructions(settings.heartbeat_md)
    try:
        if args.action == "export":
            found = await source.current()
            if args.file:
                await asyncio.to_thread(Path(args.file).write_text, found.content, encoding="utf-8")
            else:
                sys.stdout.write(found.content)
            print(
                f"heartbeat: exported revision {found.revision} ({source.where})", file=sys.stderr
            )
            return 0
        try:
            content = await asyncio.to_thread(Path(args.file).read_text, encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            print(f"heartbeat: cannot read {args.file}: {exc}", file=sys.stderr)
            return 1
        saved = await source.save(content, args.base_revision)
        print(f"heartbeat: imported as revision {saved.revision} ({source.where})", file=sys.stderr)
        return 0
    except HeartbeatError as exc:
        print(f"heartbeat: {redact(exc.message)}", file=sys.stderr)
        return 1
    finally:
        if store is not None:
            await store.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
