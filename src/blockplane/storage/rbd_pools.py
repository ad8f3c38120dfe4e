"""rbd pools: a RADOS pool of a Ceph cluster, reached as one cephx user, as a blockplane pool.

Owns creating one (everything is checked before anything is recorded: the ceph.conf and keyring
are read, the cluster must answer, and the user must create and remove an image in the pool),
the libvirt secret that hands the user's key to QEMU, deleting one, and the clients and backends
of the pools that exist. The secret's UUID is derived from the cluster's fsid and the user
unless one is given, so every host that adds the same cluster as the same user gets the same
UUID, which a VM's definition names when it migrates between them (FIELD-NOTES, "Ceph RBD").

Must never let the key reach a log, a message or a record (it goes from the keyring file to
libvirt only), and must not know how volumes are laid out (``backends.rbd``).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from blockplane.errors import BlockplaneError, InvalidInput, NotFound
from blockplane.model.ceph import CephHealth
from blockplane.model.disk import NetworkHost, NetworkSource
from blockplane.storage.backends.rbd import RbdBackend, rbd_path, split_rbd_path
from blockplane.storage.capacity import PoolCapacity
from blockplane.storage.ceph import CephClient, CephConnection, check_name
from blockplane.storage.ceph_conf import keyring_of, monitors_of, read_key
from blockplane.storage.ceph_errors import CephConfInvalid
from blockplane.storage.ceph_health import CephHealthMonitor, Listener
from blockplane.storage.names import validate_name
from blockplane.storage.views import RbdPoolView, RbdUsage
from blockplane.store.rbd_pools import RbdPoolRecord, RbdPoolStore
from blockplane.store.records import PoolRecord
from blockplane.xml.secret import ceph_secret_xml

log = logging.getLogger(__name__)

#: The namespace of derived secret UUIDs: uuid5(this, "<fsid>/client.<user>").
SECRET_NAMESPACE = uuid.UUID("5f3c8a86-2f55-4d0e-9d3a-6b1f0e7c1b42")
DEFAULT_USER = "admin"
# An rbd pool has no thin growth: these fill the pool record's columns.
RBD_CHUNK_BYTES = 1024 * 1024
RBD_UTILIZATION_PCT = 99


class CephSecrets(Protocol):
    """The hypervisor's libvirt secrets (``hypervisor.secrets.SecretStore``)."""

    def define_ceph(self, uuid: str, usage_name: str, key: bytes, secret_xml: str) -> None: ...

    def undefine(self, uuid: str) -> bool: ...

    def exists(self, uuid: str) -> bool: ...


@dataclass(frozen=True)
class RbdImage:
    """One image, with the client (user and cluster) of the pool it belongs to."""

    client: CephClient
    ceph_pool: str
    name: str
    pool: RbdPoolRecord

    @property
    def path(self) -> str:
        return rbd_path(self.ceph_pool, self.name)

    def snapshot_path(self, snapshot: str) -> str:
        return f"{self.path}@{snapshot}"


@dataclass(frozen=True)
class RbdPoolRequest:
    conf: str
    ceph_pool: str
    user: str = DEFAULT_USER
    keyring: str | None = None
    secret_uuid: str | None = None


def secret_uuid_for(fsid: str, user: str) -> str:
    return str(uuid.uuid5(SECRET_NAMESPACE, f"{fsid.lower()}/client.{user}"))


def secret_usage_name(fsid: str, user: str, secret_uuid: str) -> str:
    """libvirt wants one usage name per secret: the UUID makes a pinned one distinct too."""
    return f"ceph client.{user} {fsid.lower()} {secret_uuid}"


class RbdPools:
    def __init__(self, store: RbdPoolStore, secrets: CephSecrets,
                 health_listeners: Sequence[Listener] = ()) -> None:
        """``health_listeners``: told of every probe's verdict (the agent's metrics)."""
        self._store = store
        self._secrets = secrets
        self.health = CephHealthMonitor(store.all, listeners=health_listeners)

    def view(self, pool: PoolRecord, *, live: bool) -> RbdPoolView:
        """The pool's settings and health; with ``live``, also its usage from the cluster."""
        rbd = self.record(pool.name)
        health = self.health.health(pool.name)
        usage = cluster_usage(self.client(rbd), rbd.ceph_pool, health) if live else None
        return RbdPoolView(ceph_conf=str(rbd.conf), ceph_user=rbd.user,
                           ceph_keyring=str(rbd.keyring), rbd_pool=rbd.ceph_pool, fsid=rbd.fsid,
                           secret_uuid=rbd.secret_uuid, monitors=rbd.monitors, health=health,
                           cluster=usage)

    def record(self, name: str) -> RbdPoolRecord:
        found = self._store.get(name)
        if found is None:
            raise NotFound(f"pool {name!r} is not an rbd pool", code="pool.not_found")
        return found

    def records(self) -> list[RbdPoolRecord]:
        return self._store.all()

    def network_source(self, pool: str, path: str) -> NetworkSource:
        """The ``<source protocol='rbd'>`` of the image at ``path`` (``rbd:POOL/IMAGE``) in
        ``pool``: its monitors, and the user with the secret that holds the user's key."""
        rbd = self.record(pool)
        ceph_pool, image = split_rbd_path(path)
        return NetworkSource(
            protocol="rbd",
            name=f"{ceph_pool}/{image}",
            hosts=tuple(NetworkHost(monitor.host, monitor.port) for monitor in rbd.monitors),
            auth_username=rbd.user,
            secret_uuid=rbd.secret_uuid,
        )

    def image(self, pool: str, path: str) -> RbdImage:
        """The image at ``path`` (``rbd:POOL/IMAGE``) of blockplane pool ``pool``."""
        rbd = self.record(pool)
        ceph_pool, image = split_rbd_path(path)
        return RbdImage(self.client(rbd), ceph_pool, image, rbd)

    def pool_of_path(self, path: str) -> RbdPoolRecord | None:
        """The rbd pool whose RADOS pool holds ``path`` (the first, if several name it)."""
        ceph_pool, _image = split_rbd_path(path)
        return next((rbd for rbd in self._store.all() if rbd.ceph_pool == ceph_pool), None)

    def client(self, rbd: RbdPoolRecord) -> CephClient:
        return CephClient(CephConnection(rbd.conf, rbd.user, rbd.keyring))

    def backend(self, pool: PoolRecord) -> RbdBackend:
        rbd = self.record(pool.name)
        return RbdBackend(self.client(rbd), rbd.ceph_pool, capacity=PoolCapacity(
            pool.capacity_bytes), fsid=rbd.fsid)

    def create(self, name: str, request: RbdPoolRequest,
               capacity_bytes: int | None) -> tuple[PoolRecord, RbdPoolRecord]:
        """Check everything, define the secret, then record the pool; nothing is left on error."""
        validate_name("pool", name)
        if capacity_bytes is not None and capacity_bytes <= 0:
            raise InvalidInput("--capacity must be positive", code="pool.invalid")
        conf = _absolute_file(request.conf, "--ceph-conf")
        user = check_name(request.user, "user")
        ceph_pool = check_name(request.ceph_pool, "pool")
        given_keyring = _absolute_file(request.keyring, "--ceph-keyring") \
            if request.keyring else None
        given_uuid = _uuid(request.secret_uuid) if request.secret_uuid else None
        monitors = monitors_of(conf, user)
        keyring = keyring_of(conf, user, given_keyring)
        key = read_key(keyring, user)
        client = CephClient(CephConnection(conf, user, keyring))
        client.check_access(ceph_pool)  # ceph.unreachable, ceph.auth, ceph.pool_missing
        fsid = client.fsid()
        secret = given_uuid or secret_uuid_for(fsid, user)
        pool = PoolRecord(name, "rbd", f"rbd:{ceph_pool}", capacity_bytes, RBD_CHUNK_BYTES,
                          RBD_UTILIZATION_PCT)
        rbd = RbdPoolRecord(name, conf, user, keyring, ceph_pool, fsid, secret, monitors)
        had_secret = self._secrets.exists(secret)
        usage = secret_usage_name(fsid, user, secret)
        self._secrets.define_ceph(secret, usage, key, ceph_secret_xml(
            secret, usage, f"blockplane: cephx key of client.{user} on cluster {fsid}"))
        try:
            self._store.add(pool, rbd)
        except BaseException:
            if not had_secret:
                self._forget_secret(secret, name)
            raise
        self.health.probe_soon()
        return pool, rbd

    def forget(self, rbd: RbdPoolRecord) -> bool:
        """After the pool's records are gone: remove its secret unless another pool uses it."""
        return self._forget_secret(rbd.secret_uuid, rbd.name)

    def _forget_secret(self, secret: str, pool: str) -> bool:
        if [other for other in self._store.using_secret(secret) if other != pool]:
            return False
        try:
            return self._secrets.undefine(secret)
        except BlockplaneError:
            log.exception("removing libvirt secret %s of pool %s failed", secret, pool)
            return False


def _absolute_file(value: str | None, option: str) -> Path:
    if not value or "\x00" in value or not value.startswith("/"):
        raise InvalidInput(f"{option} must be an absolute path", code="ceph.conf_invalid")
    path = Path(value)
    if not path.is_file():
        raise CephConfInvalid(f"{option} {value} is not a readable file")
    return path


def _uuid(value: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}", value):
        raise InvalidInput(f"--secret-uuid {value!r} is not a UUID", code="pool.invalid")
    return value.lower()


def cluster_usage(client: CephClient, ceph_pool: str, health: CephHealth) -> RbdUsage:
    """The pool's capacity and usage from the cluster; a cluster known not to answer is not
    asked (the request would wait its timeouts out), and one that fails now says why."""
    if health.healthy is False:
        reason = f"not asked: the cluster did not answer the last probe ({health.reason})"
        return RbdUsage(None, None, None, None, None, reason)
    try:
        usage = client.pool_usage(ceph_pool)
    except BlockplaneError as error:
        return RbdUsage(None, None, None, None, None, f"the cluster did not answer: {error}")
    if usage.stats_reported:
        reason = "from ceph df: the pool's stored bytes and what it may still take"
        source = "ceph df"
    else:
        reason = ("the cluster reports no capacity: ceph df is empty without an active "
                  "ceph-mgr (the lab cluster runs none); used_bytes is the images' rbd du")
        source = "rbd du"
    return RbdUsage(usage.provisioned_bytes, usage.used_bytes, usage.max_avail_bytes,
                    usage.cluster.total_bytes, source, reason)
