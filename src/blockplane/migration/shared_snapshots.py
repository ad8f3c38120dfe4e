"""Snapshots that migrate with a VM because their bytes never move: those of disks left on
shared storage (an rbd disk's RBD snapshots live in its image, which every host of the cluster
opens; a shared directory's overlays stay where they are).

The source sends every finished snapshot record; the destination records those whose every
disk landed without a copy, with each disk's pool named as it is here. A snapshot of a disk
that was copied stays behind with the source's records (a copy carries the disk's bytes, not
its snapshots). Must not talk to libvirt or Ceph, nor decide what is copied (``landing``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from blockplane.migration.plan import MigrationPlan
from blockplane.store.chain_records import SnapshotRecord


def carried(records: Iterable[SnapshotRecord]) -> tuple[dict[str, Any], ...]:
    """The source's finished snapshots, as they travel in the request."""
    return tuple(
        {"name": record.name, "quiesced": record.quiesced, "created_at": record.created_at,
         "disks": [dict(disk) for disk in record.disks]}
        for record in records if record.state == "done"
    )  # fmt: skip


def landed(vm: str, snapshots: Iterable[Mapping[str, Any]],
           plan: MigrationPlan) -> list[SnapshotRecord]:
    """The snapshots the destination keeps: each disk of each left where it was."""
    kept: list[SnapshotRecord] = []
    for snapshot in snapshots:
        disks: list[dict[str, Any]] = []
        for disk in snapshot.get("disks") or ():
            landing = plan.disk(str(disk.get("target")))
            if landing is None or landing.copy:
                break
            disks.append({**disk, "pool": landing.pool})
        else:
            if disks:
                kept.append(SnapshotRecord(vm, str(snapshot["name"]), "done",
                                           bool(snapshot.get("quiesced")), disks,
                                           float(snapshot.get("created_at") or 0.0)))
    return kept
