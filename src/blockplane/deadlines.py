"""Deadlines: how long the work being done may still wait, and what it waits on now.

Every request the API serves (and every background pass) runs as one ``Work`` with a deadline.
The places where the agent can block on something outside it (a libvirt call, the guest agent,
a VM's lock) take their time from ``remaining()`` and raise ``DeadlineExceeded`` with a code
``timeout.<what>`` once it runs out, naming what they waited for. While they wait they say so
(``waiting_on``), which ``blockplane agent status`` shows for every request in flight.

Owns no policy about how long each kind of request may take (the API's ``deadline_policy``
does) and imports nothing of blockplane but the error tree.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

from blockplane.errors import DeadlineExceeded


@dataclass
class Work:
    """One request (or background pass) in flight."""

    label: str
    budget_s: float
    started: float = field(default_factory=time.monotonic)
    id: int = 0
    waiting_on: str | None = None
    waiting_since: float | None = None

    @property
    def expires_at(self) -> float:
        return self.started + self.budget_s

    def remaining(self) -> float:
        return self.expires_at - time.monotonic()


@dataclass(frozen=True)
class WorkView:
    """What ``agent status`` shows of one request in flight."""

    id: int
    label: str
    age_s: float
    deadline_in_s: float
    waiting_on: str | None
    waiting_for_s: float | None


_current: ContextVar[Work | None] = ContextVar("blockplane_work", default=None)
_ids = itertools.count(1)
_in_flight: dict[int, Work] = {}
_in_flight_lock = threading.Lock()


def current() -> Work | None:
    return _current.get()


@contextlib.contextmanager
def work(label: str, budget_s: float) -> Iterator[Work]:
    """Run the body as one piece of work with ``budget_s`` seconds to finish."""
    with work_item(Work(label, budget_s)) as item:
        yield item


@contextlib.contextmanager
def work_item(item: Work) -> Iterator[Work]:
    """Run the body as ``item`` (its clock started when it was made)."""
    item.id = next(_ids)
    token = _current.set(item)
    with _in_flight_lock:
        _in_flight[item.id] = item
    try:
        yield item
    finally:
        with _in_flight_lock:
            _in_flight.pop(item.id, None)
        _current.reset(token)


def remaining(default_s: float) -> float:
    """Seconds the current work may still wait; ``default_s`` outside any work."""
    item = _current.get()
    return default_s if item is None else min(default_s, item.remaining())


def bounded(default_s: float, code: str, what: str) -> float:
    """``remaining(default_s)``, or ``DeadlineExceeded`` when none is left to wait for ``what``."""
    left = remaining(default_s)
    if left <= 0:
        raise expired(code, what)
    return left


def expired(code: str, what: str) -> DeadlineExceeded:
    item = _current.get()
    budget = f" (the request's deadline of {item.budget_s:g} s passed)" if item else ""
    return DeadlineExceeded(f"timed out waiting for {what}{budget}", code=code)


@contextlib.contextmanager
def waiting_on(what: str) -> Iterator[None]:
    """Say what the current work waits on for as long as the body runs."""
    item = _current.get()
    if item is None:
        yield
        return
    before = item.waiting_on, item.waiting_since
    item.waiting_on, item.waiting_since = what, time.monotonic()
    try:
        yield
    finally:
        item.waiting_on, item.waiting_since = before


def in_flight() -> list[WorkView]:
    now = time.monotonic()
    with _in_flight_lock:
        items = sorted(_in_flight.values(), key=lambda item: item.started)
    return [
        WorkView(
            item.id,
            item.label,
            round(now - item.started, 3),
            round(item.expires_at - now, 3),
            item.waiting_on,
            None if item.waiting_since is None else round(now - item.waiting_since, 3),
        )
        for item in items
    ]


#: How long work waits for a lock when no request sets a deadline (reconcile passes, events).
BACKGROUND_LOCK_WAIT_S = 60.0


class BoundedLock:
    """A lock that work waits for only until its deadline (``timeout.<code>`` after that),
    and that says who holds it, so a request stuck behind another can tell which."""

    def __init__(self, name: str, code: str) -> None:
        self.name = name
        self.code = code
        self._lock = threading.Lock()
        self._holder: str | None = None
        self._held_since = 0.0

    def __enter__(self) -> BoundedLock:
        if not self._lock.acquire(blocking=False):
            holder = self.describe_holder()
            budget = bounded(BACKGROUND_LOCK_WAIT_S, self.code, self.name)
            with waiting_on(f"{self.name}, held by {holder}"):
                if not self._lock.acquire(timeout=budget):
                    raise expired(self.code, f"{self.name}, held by {self.describe_holder()}")
        self._took()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()

    def acquire(self, blocking: bool = True) -> bool:
        taken = self._lock.acquire(blocking=blocking)
        if taken:
            self._took()
        return taken

    def release(self) -> None:
        self._holder = None
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def describe_holder(self) -> str:
        holder, since = self._holder, self._held_since
        if holder is None:
            return "another task"
        return f"{holder} for {time.monotonic() - since:.1f} s"

    def _took(self) -> None:
        item = _current.get()
        self._holder = item.label if item is not None else threading.current_thread().name
        self._held_since = time.monotonic()
