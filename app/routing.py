"""One ``Route`` per path, whatever the route modules declare.

Starlette answers a method no route takes with the 405 of the first route whose path matches,
and its ``Allow`` names only that route's methods: with ``GET`` and ``POST`` declared as two
routes of one path, ``DELETE`` would be told ``Allow: GET, HEAD``. Joining them into one route
that dispatches on the method makes ``Allow`` name every method of the path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

Endpoint = Callable[[Request], Awaitable[Response]]


def one_route_per_path(routes: Iterable[BaseRoute]) -> list[BaseRoute]:
    """``routes`` with the function routes of one path joined, each at its first place."""
    joined: dict[str, dict[str, Endpoint]] = {}
    out: list[BaseRoute | str] = []
    for route in routes:
        if not (isinstance(route, Route) and route.methods):
            out.append(route)
            continue
        handlers = joined.get(route.path)
        if handlers is None:
            handlers = joined[route.path] = {}
            out.append(route.path)
        for method in route.methods:
            if method in handlers and method != "HEAD":
                raise ValueError(f"{method} {route.path} is declared twice")
            handlers.setdefault(method, route.endpoint)
    return [_route(item, joined[item]) if isinstance(item, str) else item for item in out]


def _route(path: str, handlers: Mapping[str, Endpoint]) -> Route:
    if len(set(handlers.values())) == 1:
        return Route(path, next(iter(handlers.values())), methods=list(handlers))

    async def endpoint(request: Request) -> Response:
        return await handlers[request.method](request)

    endpoint.__name__ = "_".join(h.__name__ for h in dict.fromkeys(handlers.values()))
    return Route(path, endpoint, methods=list(handlers))
