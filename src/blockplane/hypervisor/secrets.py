"""libvirt secrets of usage type ceph: where QEMU gets an rbd disk's cephx key.

Owns the secret connection. The system daemon (or a lab host's) serves secrets on the same
connection as domains. An embedded QEMU driver has none: the secret driver is opened embedded
on the same root (``secret:///embed?root=...``), and while that connection is open the embedded
QEMU driver reads its secrets from it (libvirt's drvsecret documentation), so it stays open for
the agent's lifetime, and is handed to every call gate worker (``embedded_threads``, with the
thread identity libvirt also needs there).

The key is passed in as bytes and goes only to ``virSecretSetValue``; it is never logged, and
libvirt keeps the secret private (not readable back through the API). Must decide nothing:
which UUID and which usage name come from ``storage.rbd_pools``.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any
from urllib.parse import parse_qs, urlparse

import libvirt

from blockplane.errors import Conflict, HypervisorError
from blockplane.hypervisor.connection import Hypervisor
from blockplane.hypervisor.embedded_threads import register_secret_connection
from blockplane.hypervisor.errors import libvirt_errors


class SecretStore:
    def __init__(self, hypervisor: Hypervisor) -> None:
        self._hypervisor = hypervisor
        self._embedded: Any = None
        self._lock = threading.Lock()

    @property
    def embedded_uri(self) -> str | None:
        """``secret:///embed?root=R`` for an agent on ``qemu:///embed?root=R``, else None."""
        if not self._hypervisor.is_embedded:
            return None
        roots = parse_qs(urlparse(self._hypervisor.uri).query).get("root")
        if not roots:
            raise HypervisorError(f"cannot tell the embed root of {self._hypervisor.uri}")
        return f"secret:///embed?root={roots[0]}"

    def open(self) -> None:
        """Open the embedded secret driver (nothing to do on a daemon); idempotent."""
        uri = self.embedded_uri
        with self._lock:
            if uri is None or self._embedded is not None:
                return
            with libvirt_errors(f"opening {uri}"):
                self._embedded = libvirt.open(uri)
            register_secret_connection(self._embedded)

    def close(self) -> None:
        with self._lock:
            connection, self._embedded = self._embedded, None
        if connection is not None:
            register_secret_connection(None)
            with contextlib.suppress(libvirt.libvirtError):
                connection.close()

    def _connection(self) -> Any:
        if self._hypervisor.is_embedded:
            self.open()
            return self._embedded
        return self._hypervisor.connection

    def define_ceph(self, uuid: str, usage_name: str, key: bytes, secret_xml: str) -> None:
        """Define (or redefine) the secret ``uuid`` from ``secret_xml`` (``xml.secret``, for
        ``uuid`` and ``usage_name``) and set its value to the raw cephx key."""
        connection = self._connection()
        with libvirt_errors(f"defining libvirt secret {uuid}"):
            existing = self._lookup(connection, uuid)
            holder = None if existing is not None else self._by_usage(connection, usage_name)
            if holder is not None:
                raise Conflict(f"libvirt already has the ceph secret {usage_name!r} under "
                               f"another UUID ({holder}); remove it first",
                               code="pool.secret_conflict")
            secret = connection.secretDefineXML(secret_xml)
            secret.setValue(key)

    def undefine(self, uuid: str) -> bool:
        """Remove the secret; False when there was none."""
        connection = self._connection()
        with libvirt_errors(f"removing libvirt secret {uuid}"):
            secret = self._lookup(connection, uuid)
            if secret is None:
                return False
            secret.undefine()
            return True

    def exists(self, uuid: str) -> bool:
        connection = self._connection()
        with libvirt_errors(f"looking up libvirt secret {uuid}"):
            return self._lookup(connection, uuid) is not None

    @staticmethod
    def _lookup(connection: Any, uuid: str) -> Any:
        try:
            return connection.secretLookupByUUIDString(uuid)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_SECRET:
                return None
            raise

    @staticmethod
    def _by_usage(connection: Any, usage_name: str) -> str | None:
        try:
            secret = connection.secretLookupByUsage(libvirt.VIR_SECRET_USAGE_TYPE_CEPH,
                                                    usage_name)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_SECRET:
                return None
            raise
        return str(secret.UUIDString())
