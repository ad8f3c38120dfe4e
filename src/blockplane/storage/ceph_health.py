"""Whether each rbd pool's cluster answers now, probed in the background and read from memory.

Owns the probe (``rbd ls`` of the pool with short timeouts: it needs a monitor for the maps and
the pool's OSDs for the directory object, so a frozen monitor and a dead OSD both show, within
``PROBE_TIMEOUT_S``), its thread and the last verdict per pool. ``facts``, ``pool show`` and
``/v1/metrics`` read the verdict, so none of them waits on a cluster that does not answer; a
probe that times out marks the pool unhealthy with the tool's own words.

Must not change anything in the cluster, and must never block a request: requests only read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from blockplane.errors import BlockplaneError
from blockplane.model.ceph import CephHealth
from blockplane.storage.ceph import CephClient, CephConnection
from blockplane.store.rbd_pools import RbdPoolRecord

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 5.0
PROBE_TIMEOUT_S = 3.0


#: Called after every probe (the metrics).
Listener = Callable[[CephHealth], None]


@dataclass
class CephHealthMonitor:
    pools: Callable[[], list[RbdPoolRecord]]
    interval_s: float = PROBE_INTERVAL_S
    listeners: Sequence[Listener] = ()
    _verdicts: dict[str, CephHealth] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _wake: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ceph-health", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def probe_soon(self) -> None:
        """Probe now instead of at the next interval (a pool was added)."""
        self._wake.set()

    def health(self, pool: str) -> CephHealth:
        with self._lock:
            found = self._verdicts.get(pool)
        return found or CephHealth(pool, None, "not probed yet")

    def all(self) -> list[CephHealth]:
        names = [record.name for record in self._pools_or_none()]
        return [self.health(name) for name in names]

    def probe_all(self) -> list[CephHealth]:
        records = self._pools_or_none()
        known = {record.name for record in records}
        with self._lock:
            for gone in set(self._verdicts) - known:
                del self._verdicts[gone]
        return [self.probe(record) for record in records]

    def probe(self, record: RbdPoolRecord) -> CephHealth:
        started = time.monotonic()
        try:  # a ceph.conf or keyring gone since the pool was made is a verdict too
            client = CephClient(CephConnection(record.conf, record.user, record.keyring,
                                               timeout_s=PROBE_TIMEOUT_S))
            client.list_images(record.ceph_pool)
            verdict = CephHealth(record.name, True, "the cluster answers: the monitor and the "
                                 f"OSDs of pool {record.ceph_pool} served a listing")
        except BlockplaneError as error:
            verdict = CephHealth(record.name, False, error.message, code=error.code)
        now = time.time()
        previous = self.health(record.name)
        since = None
        if verdict.healthy is False:
            since = previous.unhealthy_since if previous.healthy is False else now
        verdict = replace(verdict, checked_at=now, unhealthy_since=since,
                          probe_seconds=round(time.monotonic() - started, 3))
        if verdict.healthy != previous.healthy and previous.healthy is not None:
            log.warning("Ceph pool %s is now %s: %s", record.name,
                        "healthy" if verdict.healthy else "unhealthy", verdict.reason)
        with self._lock:
            self._verdicts[record.name] = verdict
        for listener in self.listeners:
            try:
                listener(verdict)
            except Exception:
                log.exception("a Ceph health listener failed")
        return verdict

    def _pools_or_none(self) -> list[RbdPoolRecord]:
        try:
            return self.pools()
        except BlockplaneError:
            return []

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.probe_all()
            except Exception:
                log.exception("probing the Ceph pools failed")
            self._wake.wait(self.interval_s)
            self._wake.clear()
