"""Bounded libvirt calls: a caller waits at most its deadline, never for a wedged QEMU.

libvirt cannot cancel a call in progress. A QEMU monitor command has no timeout in libvirt at
all (a stopped or deadlocked QEMU keeps it waiting forever, holding the domain's job), and a
guest agent command holds the domain's agent job for as long as it waits. So a call that may
block runs on a worker thread, and its caller waits only as long as its deadline allows
(``blockplane.deadlines``). Past that the caller gets ``timeout.hypervisor`` (or
``timeout.guest_agent``) and goes on; the call is *abandoned*: it keeps its worker until libvirt
returns, and until then every other call of the same kind on that domain fails at once instead
of queueing behind it. When an abandoned call returns at last, the ``on_late_result`` hooks run
(the agent reconciles, so an intent the timed-out request left is finished or undone once).

Other domains are never held up: each call waits for its own domain only. Calls that need no
domain job (state, XML) do not come here.
"""

from __future__ import annotations

import concurrent.futures
import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from blockplane import deadlines
from blockplane.errors import DeadlineExceeded

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Every domain at once (bulk stats over all of them).
ALL_DOMAINS = "*"


class CallKind(enum.Enum):
    MONITOR = "hypervisor"  # libvirt, and QEMU's monitor behind it
    AGENT = "guest_agent"  # the guest agent, through libvirt

    @property
    def code(self) -> str:
        return f"timeout.{self.value}"

    @property
    def noun(self) -> str:
        return "QEMU (through libvirt)" if self is CallKind.MONITOR else "the guest agent"


#: How long a call may take when no request sets a deadline (reconcile passes, event work).
BACKGROUND_TIMEOUT_S = {CallKind.MONITOR: 30.0, CallKind.AGENT: 30.0}


@dataclass(frozen=True)
class AbandonedCall:
    domain: str
    what: str
    kind: CallKind
    started: float
    abandoned_at: float

    def age(self, now: float | None = None) -> float:
        return (now if now is not None else time.monotonic()) - self.started


@dataclass(frozen=True)
class LateResult:
    call: AbandonedCall
    error: BaseException | None
    finished_after_s: float


class CallGate:
    def __init__(
        self, max_workers: int = 64, *, thread_setup: Callable[[], object] | None = None
    ) -> None:
        """``thread_setup`` runs on the worker before each call (``embedded_threads``)."""
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="libvirt-call"
        )
        self._thread_setup = thread_setup
        self._lock = threading.Lock()
        self._abandoned: dict[tuple[str, CallKind], AbandonedCall] = {}
        #: Called on a worker thread when an abandoned call returns.
        self.on_late_result: list[Callable[[LateResult], None]] = []

    def run(
        self,
        domain: str,
        what: str,
        kind: CallKind,
        call: Callable[[], T],
        *,
        timeout_s: float | None = None,
    ) -> T:
        """``call()``, or ``DeadlineExceeded`` once the deadline (or ``timeout_s``) passes."""
        self.refuse_if_wedged(domain, kind, what)
        default = timeout_s if timeout_s is not None else BACKGROUND_TIMEOUT_S[kind]
        budget = deadlines.bounded(default, kind.code, f"{kind.noun}: {what} on {domain}")
        started = time.monotonic()
        future = self._pool.submit(self._prepared(call))
        with deadlines.waiting_on(f"{kind.noun}: {what} on {domain}"):
            try:
                return future.result(timeout=budget)
            except concurrent.futures.TimeoutError:
                if future.cancel():  # never started (every worker busy): nothing left behind
                    raise self._timeout(kind, what, domain, budget, abandoned=False) from None
                self._abandon(future, AbandonedCall(domain, what, kind, started, time.monotonic()))
                raise self._timeout(kind, what, domain, budget, abandoned=True) from None

    def run_each(
        self,
        calls: list[tuple[str, str, Callable[[], T]]],
        kind: CallKind,
        *,
        timeout_s: float,
    ) -> dict[str, T | None]:
        """Run one call per domain at once; None for a domain that failed, did not answer in
        time (its call is abandoned) or already had a call of ``kind`` abandoned."""
        budget = deadlines.remaining(timeout_s)
        started = time.monotonic()
        futures: dict[str, tuple[str, concurrent.futures.Future[T]]] = {}
        answers: dict[str, T | None] = {}
        for domain, what, call in calls:
            if self.stuck(domain, kind) is not None:
                answers[domain] = None
            else:
                futures[domain] = (what, self._pool.submit(self._prepared(call)))
        concurrent.futures.wait([future for _, future in futures.values()], timeout=budget)
        for domain, (what, future) in futures.items():
            if not future.done():
                answers[domain] = None
                if not future.cancel():
                    self._abandon(future, AbandonedCall(domain, what, kind, started,
                                                        time.monotonic()))
            elif future.exception() is not None:
                log.info("%s on %s failed: %s", what, domain, future.exception())
                answers[domain] = None
            else:
                answers[domain] = future.result()
        return answers

    def _prepared(self, call: Callable[[], T]) -> Callable[[], T]:
        setup = self._thread_setup
        if setup is None:
            return call

        def prepared() -> T:
            setup()
            return call()

        return prepared

    def refuse_if_wedged(self, domain: str, kind: CallKind, what: str) -> None:
        """Fail at once while an earlier call of ``kind`` on ``domain`` has not returned."""
        stuck = self.stuck(domain, kind)
        if stuck is None:
            return
        raise DeadlineExceeded(
            f"{kind.noun} of {domain} has not answered {stuck.what!r} for "
            f"{stuck.age():.0f} s; {what} was not tried, so that it does not queue behind it. "
            "Retry once it answers (blockplane agent status shows the call)",
            code=kind.code,
            vm=domain,
            waiting_for=stuck.what,
        )

    def stuck(self, domain: str, kind: CallKind) -> AbandonedCall | None:
        """The abandoned call of ``kind`` on ``domain`` still running, if any. A call on
        ``ALL_DOMAINS`` holds up only later calls on all of them, not each domain's own."""
        with self._lock:
            return self._abandoned.get((domain, kind))

    def wedged_domains(self, kind: CallKind = CallKind.MONITOR) -> set[str]:
        with self._lock:
            return {d for (d, k) in self._abandoned if k is kind and d != ALL_DOMAINS}

    def abandoned(self) -> list[AbandonedCall]:
        with self._lock:
            return sorted(self._abandoned.values(), key=lambda call: call.started)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _abandon(self, future: concurrent.futures.Future[T], call: AbandonedCall) -> None:
        key = (call.domain, call.kind)
        with self._lock:
            self._abandoned.setdefault(key, call)
        log.warning(
            "%s did not answer %r on %s within the deadline; left running, later calls of that "
            "kind on %s fail at once until it returns", call.kind.noun, call.what, call.domain,
            call.domain,
        )

        def returned(done: concurrent.futures.Future[T]) -> None:
            with self._lock:
                if self._abandoned.get(key) is call:
                    del self._abandoned[key]
            error = None if done.cancelled() else done.exception()
            late = LateResult(call, error, time.monotonic() - call.started)
            log.warning(
                "late result: %r on %s returned after %.1f s (%s)", call.what, call.domain,
                late.finished_after_s, f"failed: {error}" if error else "ok",
            )
            # Not on the worker: the hooks take locks and make calls of their own.
            threading.Thread(target=self._run_hooks, args=(late,), name="late-result",
                             daemon=True).start()

        future.add_done_callback(returned)

    def _run_hooks(self, late: LateResult) -> None:
        for hook in self.on_late_result:
            try:
                hook(late)
            except Exception:
                log.exception("a late-result hook failed")

    @staticmethod
    def _timeout(
        kind: CallKind, what: str, domain: str, budget: float, *, abandoned: bool
    ) -> DeadlineExceeded:
        tail = (
            "; the call is left to finish and is reconciled when it returns"
            if abandoned
            else "; it was never started"
        )
        return DeadlineExceeded(
            f"{kind.noun} did not answer {what} on {domain} within {budget:.1f} s{tail}",
            code=kind.code,
            vm=domain,
            outcome_unknown=abandoned,
        )
