"""ASGI middleware that times every HTTP request into ``blockplane_api_request_duration_seconds``.

Labels are the method, the route template (``/v1/vms/{vm}/disks``, never the raw path, so the
series stay few) and the status. Pure ASGI rather than Starlette's ``BaseHTTPMiddleware``: the
``/v1/events`` stream passes through untouched. Times, nothing else.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "unmatched"


class RequestLatency:
    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            self.histogram.labels(
                str(scope.get("method", "")), route_template(scope), str(status)
            ).observe(time.perf_counter() - started)


def route_template(scope: Scope) -> str:
    """The template of the route the router matched (FastAPI puts the route in the scope).

    FastAPI 0.165 hands over the route as its router declared it, without the ``/v1`` prefix
    it was included under; the prefix is then the static head of the path that the route's
    pattern does not cover.
    """
    route: Any = scope.get("route")
    template = getattr(route, "path_format", None)
    pattern = getattr(route, "path_regex", None)
    if not isinstance(template, str) or pattern is None:
        return UNMATCHED
    path = str(scope.get("path", ""))
    for start, char in enumerate(path):
        if char == "/" and pattern.fullmatch(path[start:]):
            return path[:start] + template
    return template
