"""The one libvirt connection of the agent, and the thread that runs libvirt's event loop.

Opens embedded libvirt (``qemu:///embed?root=...``) by default, or any other URI. It hands out
``DomainHandle`` adapters and raw host data (versions, domain capabilities XML); it holds no
policy.

A daemon connection (``qemu:///system``) can drop: the daemon restarts, or keepalive gives up.
libvirt's close callback (or ``check_alive``, the poll-side safety net) then starts one
reconnect thread, which opens a new connection with backoff, registers the event callbacks on it
again and calls the ``on_reconnected`` hooks (the agent reconciles there). Until then every call
fails with ``HypervisorError`` (code ``hypervisor.disconnected``) instead of hanging.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import libvirt

from blockplane.errors import DeadlineExceeded, HypervisorError, NotFound
from blockplane.hypervisor.calls import ALL_DOMAINS, CallGate, CallKind
from blockplane.hypervisor.domain import DomainHandle
from blockplane.hypervisor.embedded_threads import prepare_thread
from blockplane.hypervisor.errors import libvirt_errors
from blockplane.hypervisor.events import EventBridge
from blockplane.hypervisor.stats_reuse import StatsReuse, StatsSnapshot

log = logging.getLogger(__name__)

RECONNECT_FIRST_DELAY_S = 0.5
RECONNECT_MAX_DELAY_S = 10.0
#: Bulk stats answer in well under a second even at 100 VMs; past this a domain is not answering.
BULK_STATS_TIMEOUT_S = 10.0

CLOSE_REASONS = {0: "error", 1: "end of file", 2: "keepalive timeout", 3: "client closed"}

_event_loop_lock = threading.Lock()
_event_loop_started = False


def _ignore_libvirt_errors(_opaque: Any, _error: Any) -> None:
    """libvirt prints every error to stderr by default; we raise them instead."""


def start_event_loop() -> None:
    """Register libvirt's default event implementation and run it on a daemon thread.

    Must happen before the first ``open``, and only once per process.
    """
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.registerErrorHandler(_ignore_libvirt_errors, None)
        libvirt.virEventRegisterDefaultImpl()
        thread = threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True)
        thread.start()
        _event_loop_started = True


def _run_event_loop() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


@dataclass(frozen=True)
class RuntimeVersions:
    library: str
    daemon: str | None
    hypervisor: str
    uri: str


def _dotted(version: int) -> str:
    return f"{version // 1_000_000}.{version // 1000 % 1000}.{version % 1000}"


class Hypervisor:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.events = EventBridge()
        self.stats_reuse = StatsReuse()
        # An embedded libvirt reads disk secrets with the calling thread's identity.
        self.gate = CallGate(thread_setup=prepare_thread if self.is_embedded else None)
        self._connection: Any = None
        self._lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._reconnecting = False
        self._closing = False
        #: Called on the reconnect thread: when the connection is lost (with why), and once a
        #: new one is open (with the number of attempts it took).
        self.on_lost: list[Callable[[str], None]] = []
        self.on_reconnected: list[Callable[[int], None]] = []

    def open(self) -> None:
        start_event_loop()
        with libvirt_errors(f"opening {self.uri}"):
            connection = libvirt.open(self.uri)
        if not self.is_embedded:
            try:
                with libvirt_errors(f"setting up {self.uri}"):
                    connection.setKeepAlive(5, 3)
                    connection.registerCloseCallback(self._on_close, None)
            except HypervisorError:
                with contextlib.suppress(libvirt.libvirtError):
                    connection.close()
                raise
        self._connection = connection
        self.events.register(connection)

    def close(self) -> None:
        self._closing = True
        self._drop()

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if not self.is_embedded:
            with contextlib.suppress(libvirt.libvirtError):
                connection.unregisterCloseCallback()
        self.events.unregister(connection)
        with contextlib.suppress(libvirt.libvirtError):
            connection.close()

    def _on_close(self, _connection: Any, reason: int, _opaque: Any) -> None:
        # libvirt's event thread: no libvirt calls here, only hand over to a thread of our own.
        self.connection_lost(CLOSE_REASONS.get(reason, str(reason)))

    def connection_lost(self, why: str) -> bool:
        """Start reconnecting (once; later calls while it runs do nothing). True if started."""
        with self._state_lock:
            if self._reconnecting or self._closing or self.is_embedded:
                return False
            self._reconnecting = True
        log.warning("the connection to %s was lost (%s); reconnecting", self.uri, why)
        threading.Thread(
            target=self._reconnect_forever, args=(why,), name="libvirt-reconnect", daemon=True
        ).start()
        return True

    def check_alive(self) -> bool:
        """The poll-side safety net: a dead daemon connection starts the reconnect.

        False while there is no usable connection (lost, reconnecting, or closing).
        """
        if self.is_embedded:
            return True
        if self._reconnecting or self._closing:
            return False
        if self.is_alive():
            return True
        self.connection_lost("not alive")
        return False

    @property
    def reconnecting(self) -> bool:
        return self._reconnecting

    def _reconnect_forever(self, why: str) -> None:
        for hook in self.on_lost:
            _run_hook(hook, why)
        delay = RECONNECT_FIRST_DELAY_S
        attempts = 0
        try:
            while not self._closing:
                attempts += 1
                try:
                    with self._lock:
                        self._drop()
                        self.open()
                    break
                except (HypervisorError, libvirt.libvirtError) as error:
                    log.info("reconnecting to %s (attempt %d) failed: %s", self.uri, attempts,
                             error)
                    time.sleep(delay)
                    delay = min(delay * 2, RECONNECT_MAX_DELAY_S)
        finally:
            with self._state_lock:
                self._reconnecting = False
        if self._connection is None:
            return
        log.warning("reconnected to %s after %d attempt(s)", self.uri, attempts)
        for reconnected in self.on_reconnected:
            _run_hook(reconnected, attempts)

    @property
    def is_embedded(self) -> bool:
        return self.uri.startswith("qemu:///embed")

    @property
    def connection(self) -> Any:
        connection = self._connection
        if connection is None:
            if self._reconnecting:
                raise HypervisorError(
                    f"the connection to {self.uri} was lost; the agent is reconnecting, "
                    "retry in a moment",
                    code="hypervisor.disconnected",
                )
            raise HypervisorError("the hypervisor connection is not open")
        return connection

    def is_alive(self) -> bool:
        try:
            return bool(self._connection is not None and self._connection.isAlive())
        except libvirt.libvirtError:
            return False

    def reconnect(self) -> None:
        with self._lock:
            self._drop()
            self._closing = False
            self.open()

    def versions(self) -> RuntimeVersions:
        with libvirt_errors("reading libvirt versions"):
            library = _dotted(libvirt.getVersion())
            hypervisor = _dotted(self.connection.getVersion())
            daemon = None if self.is_embedded else _dotted(self.connection.getLibVersion())
        return RuntimeVersions(library, daemon, hypervisor, self.uri)

    def domain_capabilities(self, virt_type: str, machine: str = "pc") -> str:
        with libvirt_errors("reading domain capabilities"):
            return str(self.connection.getDomainCapabilities(None, "x86_64", machine, virt_type, 0))

    def define(self, domain_xml: str) -> DomainHandle:
        with libvirt_errors("defining a VM"):
            return DomainHandle(self.connection.defineXML(domain_xml), self.gate)

    def lookup(self, name: str) -> DomainHandle:
        try:
            return DomainHandle(self.connection.lookupByName(name), self.gate)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise NotFound(f"no VM named {name!r}", code="vm.not_found") from error
            raise HypervisorError(f"looking up {name}: {error.get_error_message()}") from error

    def exists(self, name: str) -> bool:
        try:
            self.lookup(name)
        except NotFound:
            return False
        return True

    def domains(self) -> list[DomainHandle]:
        with libvirt_errors("listing VMs"):
            return [
                DomainHandle(domain, self.gate) for domain in self.connection.listAllDomains(0)
            ]

    def bulk_stats(
        self, stats: int = 0, domains: Collection[str] | None = None, *, nowait: bool = False
    ) -> list[tuple[str, dict[str, Any]]]:
        """One stats round trip for every active domain, or for the running ones of ``domains``
        (``domainListGetStats`` on just those: a quick pass pays for what changed only).

        ``nowait``: a domain whose job another call holds (an attach, a VM starting) answers at
        once with what needs no QEMU (no sizes, no counters: ``bulk_stats.monitor_answered``)
        instead of the call waiting for it. Inside ``stats_reuse.scope(max_age_s)`` (this
        thread only) a kept answer that young is returned instead of a new round trip.
        """
        return list(self.bulk_snapshot(stats, domains=domains, nowait=nowait).records)

    def bulk_snapshot(
        self, stats: int = 0, max_age_s: float | None = None,
        domains: Collection[str] | None = None, *, nowait: bool = False,
    ) -> StatsSnapshot:
        """``bulk_stats`` with the time it was taken; ``max_age_s``: a kept answer will do."""
        wanted = stats or (libvirt.VIR_DOMAIN_STATS_BLOCK | libvirt.VIR_DOMAIN_STATS_STATE)
        kept = self.stats_reuse.reusable(wanted, max_age_s, domains, nowait)
        if kept is not None:
            return kept
        started = time.monotonic()
        with libvirt_errors("reading bulk stats"):
            if domains is None:
                records = self._bounded_stats(wanted, nowait)
            else:
                records = self._bounded_stats_of(wanted, domains, nowait)
        snapshot = StatsSnapshot(started, wanted, records,
                                 None if domains is None else frozenset(domains), nowait)
        self.stats_reuse.keep(snapshot)
        return snapshot

    def unresponsive_domains(self) -> set[str]:
        """Domains with a libvirt call abandoned past its deadline that has not returned:
        left out of bulk stats (their QEMU does not answer) until it does."""
        return self.gate.wedged_domains(CallKind.MONITOR)

    def _bounded_stats(self, wanted: int, nowait: bool = False) -> list[tuple[str, dict[str, Any]]]:
        """Stats of every running domain that answers, within ``BULK_STATS_TIMEOUT_S``.

        One round trip for all while every domain answers. When one does not (a stopped or
        deadlocked QEMU keeps libvirt waiting on its monitor), each domain is asked on its own,
        so the one that hangs is found, left out, and no longer holds up the others.
        """
        flags = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_BACKING
        if nowait:
            flags |= libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
        connection = self.connection
        if not self.unresponsive_domains() and not self.gate.stuck(ALL_DOMAINS, CallKind.MONITOR):
            try:
                records = self.gate.run(
                    ALL_DOMAINS, "reading bulk stats", CallKind.MONITOR,
                    lambda: connection.getAllDomainStats(
                        wanted, flags | libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE
                    ),
                    timeout_s=BULK_STATS_TIMEOUT_S,
                )
                return [(domain.name(), dict(values)) for domain, values in records]
            except DeadlineExceeded:
                log.warning("bulk stats did not answer in %.0f s; asking each domain on its own",
                            BULK_STATS_TIMEOUT_S)
        active = connection.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        answers = self.gate.run_each(
            [(str(domain.name()), "reading stats",
              _stats_of(connection, domain, wanted, flags)) for domain in active],
            CallKind.MONITOR,
            timeout_s=BULK_STATS_TIMEOUT_S,
        )
        return [(name, values) for name, values in answers.items() if values is not None]

    def _bounded_stats_of(
        self, wanted: int, names: Collection[str], nowait: bool
    ) -> list[tuple[str, dict[str, Any]]]:
        """``_bounded_stats`` for the running domains among ``names``: one round trip while
        they answer, each on its own (leaving out the one that hangs) once one does not.
        Unresponsive domains are left out up front, as from every bulk call."""
        flags = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_BACKING
        if nowait:
            flags |= libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
        connection = self.connection
        skip = self.unresponsive_domains()
        active = []
        for name in sorted(set(names) - skip):
            try:
                domain = connection.lookupByName(name)
                if domain.isActive():
                    active.append(domain)
            except libvirt.libvirtError:
                continue  # gone meanwhile: not running
        if not active:
            return []
        key = str(active[0].name()) if len(active) == 1 else ALL_DOMAINS
        if not self.gate.stuck(key, CallKind.MONITOR):
            try:
                records = self.gate.run(
                    key, "reading stats", CallKind.MONITOR,
                    lambda: connection.domainListGetStats(active, wanted, flags),
                    timeout_s=BULK_STATS_TIMEOUT_S,
                )
                return [(domain.name(), dict(values)) for domain, values in records]
            except DeadlineExceeded:
                if len(active) == 1:
                    return []
                log.warning("stats of %d domains did not answer in %.0f s; asking each on "
                            "its own", len(active), BULK_STATS_TIMEOUT_S)
        answers = self.gate.run_each(
            [(str(domain.name()), "reading stats",
              _stats_of(connection, domain, wanted, flags)) for domain in active],
            CallKind.MONITOR,
            timeout_s=BULK_STATS_TIMEOUT_S,
        )
        return [(name, values) for name, values in answers.items() if values is not None]


def _stats_of(
    connection: Any, domain: Any, wanted: int, flags: int
) -> Callable[[], dict[str, Any] | None]:
    def read() -> dict[str, Any] | None:
        records = connection.domainListGetStats([domain], wanted, flags)
        return dict(records[0][1]) if records else None

    return read


def _run_hook(hook: Callable[..., None], *args: Any) -> None:
    try:
        hook(*args)
    except Exception:
        log.exception("a hypervisor connection hook failed")


# Stats groups for ``Hypervisor.bulk_stats(stats=...)``, for callers that must not import libvirt.
STATS_STATE = libvirt.VIR_DOMAIN_STATS_STATE
STATS_BLOCK = libvirt.VIR_DOMAIN_STATS_BLOCK
STATS_IOTHREAD = libvirt.VIR_DOMAIN_STATS_IOTHREAD
