"""The Starlette application factory and its lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from app import metrics, openapi, routes_data, routes_heartbeat, routes_wake, sse
from app.demo import seed_demo
from app.http import JSON, handle_error
from app.routing import one_route_per_path
from app.security import SecurityMiddleware, allowed_host_names, parse_origin
from app.service import Service
from app.settings import Settings
from ledger.errors import HeartbeatError
from ledger.records import Loop
from ledger.redact import redact
from loops.clock import Clock
from loops.llm import LLMProvider

log = logging.getLogger(f"heartbeat.{__name__}")
STATIC = Path(__file__).resolve().parent.parent / "static"


async def healthz(request: Request) -> JSON:
    svc: Service = request.app.state.service
    health = await svc.llm.health(svc.executor.opts.default_model)
    fault = svc.store.fault  # the last fault the database answered, while it lasts
    ok = health.reachable and health.model_present is not False and fault is None
    return JSON(
        {
            "ok": True,
            "status": "ok" if ok else "degraded",
            "storage": {
                "status": "ok" if fault is None else "failing",
                "code": None if fault is None else fault.code,
                # without the file's path: /healthz is open even when a token is set
                "message": None if fault is None else type(fault)(cause=fault.cause).message,
            },
            "llm": {
                "provider": health.provider,
                "base_url": redact(health.base_url),
                "reachable": health.reachable,
                "version": health.version,
                "model": health.model,
                "model_present": health.model_present,
                "detail": None if health.detail is None else redact(health.detail),
                "why": redact(svc.llm_reason),
            },
            "scheduler_running": svc.supervisor.is_running(Loop.HEARTBEAT),
        }
    )


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    llm: LLMProvider | None = None,
    llm_transport: httpx.AsyncBaseTransport | None = None,
    bind_host: str = "127.0.0.1",
    start_loops: bool = True,
    demo: bool = False,
) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service = await Service.open(settings, clock=clock, llm=llm, llm_transport=llm_transport)
        app.state.service = service
        try:
            if demo and await seed_demo(service.store, settings.workspace):
                await service.import_workspace_instructions()  # with PostgreSQL
                log.info("seeded the demo: HEARTBEAT.md, Ledger posts and messages in 'default'")
            if start_loops:
                await service.start_loops()
            yield
        finally:
            await service.close()

    routes = [
        *routes_heartbeat.routes,
        *routes_wake.routes,
        *sse.routes,
        *routes_data.routes,
        *openapi.routes,
        *metrics.routes,
        Route("/healthz", healthz, methods=["GET"]),
        Route("/", index, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static"),
    ]
    middleware = [
        Middleware(
            SecurityMiddleware,
            token=settings.api_token,
            hosts=allowed_host_names(bind_host, settings.allowed_hosts),
            max_body=settings.max_body_bytes,
            origins=frozenset(filter(None, map(parse_origin, settings.allowed_origins))),
            body_timeout=settings.body_timeout,
        )
    ]
    return Starlette(
        routes=one_route_per_path(routes),
        middleware=middleware,
        lifespan=lifespan,
        # One handler; Starlette picks it by the class raised: HeartbeatError and HTTPException
        # are answered where they are raised, anything else by the server-error fallback.
        exception_handlers={
            cls: handle_error for cls in (Exception, HTTPException, HeartbeatError)
        },
    )
