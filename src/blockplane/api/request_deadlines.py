"""Every API request gets a deadline, and an answer by then, whatever it waits on.

The deadline is the ``Request-Timeout`` header (seconds) when the caller sends one, else the
default for the kind of request (``DEFAULT_BUDGETS_S``; the README lists them). The request runs
as one ``deadlines.Work``, so the blocking calls it makes (libvirt, the guest agent, a VM's lock)
give up on their own with ``timeout.<what>`` when it is spent. As a last resort this middleware
answers 504 ``timeout.request`` itself a moment after the deadline and leaves the handler to
finish in the background (its late answer is dropped; what it changed is reconciled like any
interrupted change). Event streams have no deadline.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from blockplane import deadlines
from blockplane.api.middleware import send_problem

log = logging.getLogger(__name__)

HEADER = b"request-timeout"
MAX_BUDGET_S = 3600.0
#: After the deadline, how long the handler gets to answer with its own timeout error before
#: the middleware answers for it.
GRACE_S = 5.0

#: Default deadline per kind of request, in seconds.
DEFAULT_BUDGETS_S: dict[str, float] = {
    "read": 30.0,  # every GET: show, list, status, top, metrics
    "change": 90.0,  # attach, detach, throttle, snapshot, job start/abort/pivot, pool, volume
    "lifecycle": 120.0,  # vm create/start/stop/destroy/delete: a Linux guest boots under TCG
    "guest": 130.0,  # guest exec: its own --timeout (default 120 s) plus time to collect output
    "restore": 3600.0,  # restore: copies a whole disk
}

_KINDS: list[tuple[str, re.Pattern[str], str | None]] = [
    ("GET", re.compile(r"^/v1/events$"), None),  # a stream: no deadline
    ("POST", re.compile(r"^/v1/vms/[^/]+/exec$"), "guest"),
    ("POST", re.compile(r"^/v1/restore$"), "restore"),
    ("POST", re.compile(r"^/v1/vms(/[^/]+/(start|stop|destroy))?$"), "lifecycle"),
    ("DELETE", re.compile(r"^/v1/vms/[^/]+$"), "lifecycle"),
    ("GET", re.compile(r"^/v1/"), "read"),
]


def kind_of(method: str, path: str) -> str | None:
    """The kind of request (a key of ``DEFAULT_BUDGETS_S``), or None for a stream."""
    for kind_method, pattern, kind in _KINDS:
        if method == kind_method and pattern.match(path):
            return kind
    return "read" if method in ("GET", "HEAD") else "change"


def parse_budget(raw: bytes) -> float:
    """The ``Request-Timeout`` header's seconds; ValueError unless 0 < seconds <= 3600."""
    seconds = float(raw.decode("ascii", errors="strict").strip())
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_BUDGET_S:
        raise ValueError(seconds)
    return seconds


class RequestDeadlines:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        kind = kind_of(method, path)
        raw = dict(scope.get("headers", [])).get(HEADER)
        if kind is None and raw is None:
            await self.app(scope, receive, send)
            return
        try:
            budget = parse_budget(raw) if raw is not None else DEFAULT_BUDGETS_S[kind or "read"]
        except (ValueError, UnicodeDecodeError):
            await send_problem(send, 400, "timeout.invalid",
                               f"Invalid input: Request-Timeout must be seconds in "
                               f"(0, {MAX_BUDGET_S:g}]")
            return
        await self._bounded(scope, receive, send, budget)

    async def _bounded(self, scope: Scope, receive: Receive, send: Send, budget: float) -> None:
        label = f"{scope['method']} {scope['path']}"
        item = deadlines.Work(label, budget)
        answered = {"started": False, "abandoned": False}

        async def guarded_send(message: Message) -> None:
            if answered["abandoned"]:
                return  # the caller already had its 504
            if message["type"] == "http.response.start":
                answered["started"] = True
            await send(message)

        async def run() -> None:
            with deadlines.work_item(item):
                await self.app(scope, receive, guarded_send)

        task = asyncio.create_task(run())
        done, _ = await asyncio.wait({task}, timeout=budget + GRACE_S)
        if task in done:
            task.result()
            return
        answered["abandoned"] = True
        task.add_done_callback(_log_late)
        waited = item.waiting_on or "the handler"
        log.warning("%s passed its %.1f s deadline waiting on %s; answered 504, the handler "
                    "goes on in the background", label, budget, waited)
        if not answered["started"]:
            await send_problem(
                send, 504, "timeout.request",
                f"Timed out: {label} did not finish within its {budget:g} s deadline; it was "
                f"waiting on {waited}. It goes on in the background and is reconciled; check "
                "the state before retrying",
            )


def _log_late(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("a request answered after its deadline failed: %s", task.exception())
