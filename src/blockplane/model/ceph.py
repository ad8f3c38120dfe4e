"""A Ceph cluster as blockplane records and reports it: a monitor's address, and the health
of an rbd pool's cluster as the last background probe found it (views: their fields are the
JSON keys of ``facts``' ``ceph.pools`` and ``pool show``'s ``rbd``). Pure data; parsing is
``storage.ceph_conf``'s, the probe ``storage.ceph_health``'s.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CephHealth:
    """The last probe of one pool. ``healthy`` is None until the first probe has ended."""

    pool: str
    healthy: bool | None
    reason: str
    code: str | None = None
    checked_at: float | None = None
    probe_seconds: float | None = None
    unhealthy_since: float | None = None


@dataclass(frozen=True)
class Monitor:
    """One monitor address as libvirt's ``<host name port>`` wants it."""

    host: str
    #: None: the client tries the default ports (3300 for msgr v2, then 6789).
    port: int | None

    def to_json(self) -> dict[str, str | int | None]:
        return {"host": self.host, "port": self.port}
