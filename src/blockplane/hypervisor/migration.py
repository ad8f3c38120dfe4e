"""The libvirt calls of a live migration, for one domain: ``DomainHandle.migration()``.

Owns the translation of a migration's options into ``migrateToURI3``'s parameters and flags
(peer to peer, live, persistent on the destination and undefined at the source once it lands,
the NBD copy of the listed disks) and of its failures into ``MigrationCallFailed``. Decides
nothing: which disks are copied, the XML the destination runs and the limits arrive decided.

The migration call itself runs for as long as the copy and the memory take, so it is not put
through the ``CallGate`` (whose deadline would abandon it and wedge the domain): the caller runs
it on a thread of its own. Peer to peer, the source's libvirtd drives the whole migration, so it
goes on (and lands, or fails) even when the caller dies; ``job_stats`` and ``abort`` reach it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import libvirt

from blockplane.errors import OperationFailed
from blockplane.hypervisor.calls import CallGate, CallKind
from blockplane.hypervisor.errors import libvirt_errors

MIB = 1 << 20

#: virDomainJobOperation, as ``job_stats()["operation"]`` reports it.
JOB_OPERATION_MIGRATION_IN = libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN
JOB_OPERATION_MIGRATION_OUT = libvirt.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT
#: virDomainJobType: none, bounded, unbounded, completed, failed, cancelled.
JOB_NONE = libvirt.VIR_DOMAIN_JOB_NONE
JOB_COMPLETED = libvirt.VIR_DOMAIN_JOB_COMPLETED
#: ``DomainState.reason`` of a domain that is running after an incoming migration, or that
#: was paused or shut off because it migrated away.
RUNNING_MIGRATED = libvirt.VIR_DOMAIN_RUNNING_MIGRATED
PAUSED_MIGRATION = libvirt.VIR_DOMAIN_PAUSED_MIGRATION
SHUTOFF_MIGRATED = libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED


@dataclass(frozen=True)
class MigrateRequest:
    """``live_xml``/``persistent_xml``: what the destination runs and keeps defined (its paths
    and IOThread plan). ``copy_disks``: the targets copied over NBD (empty: every disk is on
    shared storage). ``bandwidth_bps``: 0 is unlimited; libvirt takes MiB/s, rounded up."""

    destination_uri: str
    live_xml: str
    persistent_xml: str
    copy_disks: tuple[str, ...]
    bandwidth_bps: int = 0
    migration_uri: str | None = None
    #: Copied disks whose zeroes are not written (a thin destination keeps only data; the
    #: scan costs CPU, so only where the space matters).
    detect_zeroes: tuple[str, ...] = ()

    def parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            libvirt.VIR_MIGRATE_PARAM_DEST_XML: self.live_xml,
            libvirt.VIR_MIGRATE_PARAM_PERSIST_XML: self.persistent_xml,
        }
        if self.copy_disks:
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(self.copy_disks)
        if self.detect_zeroes:
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS_DETECT_ZEROES] = list(
                self.detect_zeroes)
        if self.bandwidth_bps:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = -(-self.bandwidth_bps // MIB)
        if self.migration_uri:
            params[libvirt.VIR_MIGRATE_PARAM_URI] = self.migration_uri
        return params

    def flags(self) -> int:
        flags = (
            libvirt.VIR_MIGRATE_LIVE
            | libvirt.VIR_MIGRATE_PEER2PEER
            | libvirt.VIR_MIGRATE_PERSIST_DEST
            | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        )
        if self.copy_disks:
            flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
        return int(flags)


class MigrationCallFailed(OperationFailed):
    """``migrateToURI3`` raised. ``aborted``: cancelled by ``abort``. The VM's whereabouts are
    not decided here: the caller looks (a failure can be reported after the switch-over)."""

    code = "migration.failed"

    @property
    def aborted(self) -> bool:
        return bool(self.details.get("aborted"))


class DomainMigration:
    def __init__(self, domain: Any, gate: CallGate) -> None:
        self._domain = domain
        self._gate = gate

    @property
    def name(self) -> str:
        return str(self._domain.name())

    def migratable_xml(self, *, inactive: bool = False) -> str:
        """The XML a destination may be given (libvirt's own runtime details left out)."""
        flags = libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_SECURE
        if inactive:
            flags |= libvirt.VIR_DOMAIN_XML_INACTIVE
        with libvirt_errors(f"reading the migratable XML of {self.name}"):
            return str(self._domain.XMLDesc(flags))

    def migrate(self, request: MigrateRequest) -> None:
        """Run the migration to its end (blocking; see the module docstring)."""
        try:
            self._domain.migrateToURI3(
                request.destination_uri, request.parameters(), request.flags()
            )
        except libvirt.libvirtError as error:
            code = error.get_error_code()
            raise MigrationCallFailed(
                f"libvirt: {error.get_error_message() or error}",
                libvirt_code=code,
                aborted=code == libvirt.VIR_ERR_OPERATION_ABORTED,
            ) from error

    def job_stats(self) -> dict[str, Any]:
        """The domain's job now (``type`` JOB_NONE when none runs)."""
        with libvirt_errors(f"reading the job of {self.name}"):
            stats = self._gate.run(self.name, "reading the job", CallKind.MONITOR,
                                   lambda: self._domain.jobStats(0), timeout_s=10.0)
        return dict(stats)

    def completed_stats(self) -> dict[str, Any]:
        """The last job that ended here (an incoming migration's carries its ``downtime``)."""
        flags = libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED
        with libvirt_errors(f"reading the completed job of {self.name}"):
            stats = self._gate.run(self.name, "reading the completed job", CallKind.MONITOR,
                                   lambda: self._domain.jobStats(flags), timeout_s=10.0)
        return dict(stats)

    def set_max_downtime(self, milliseconds: int) -> None:
        with libvirt_errors(f"setting the migration downtime of {self.name}"):
            self._gate.run(self.name, "setting the migration downtime", CallKind.MONITOR,
                           lambda: self._domain.migrateSetMaxDowntime(milliseconds, 0),
                           timeout_s=10.0)

    def abort(self) -> None:
        with libvirt_errors(f"aborting the migration of {self.name}"):
            self._gate.run(self.name, "aborting the migration", CallKind.MONITOR,
                           lambda: self._domain.abortJob(), timeout_s=10.0)

    def redefine_checkpoint(self, checkpoint_xml: str) -> None:
        """Define a checkpoint's metadata again (its bitmaps came with the disks)."""
        flags = libvirt.VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE
        with libvirt_errors(f"redefining a checkpoint of {self.name}"):
            self._gate.run(self.name, "redefining a checkpoint", CallKind.MONITOR,
                           lambda: self._domain.checkpointCreateXML(checkpoint_xml, flags),
                           timeout_s=30.0)
