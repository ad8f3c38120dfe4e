"""``thin status`` rows for disks on rbd pools: shown, with why nothing monitors them.

An RBD image is thin by nature: Ceph allocates an object when it is first written, and the
image's size is all it may ever take, so there is nothing to grow ahead of the guest and no
write threshold to arm. The rows carry every key a monitored row has (figures the monitor does
not know are None) plus ``reason``. Reads records only; must not call Ceph or libvirt.
"""

from __future__ import annotations

from blockplane.store.records import Records
from blockplane.thin.views import ThinVolumeView

NOT_MONITORED = "not_monitored"
REASON = ("rbd image: thin by nature (Ceph allocates objects as they are first written, up to "
          "the image's size), so no write-threshold monitor; pool show gives the cluster's usage")


def rbd_thin_rows(records: Records, vm: str | None = None) -> list[ThinVolumeView]:
    rbd_pools = {pool.name for pool in records.pools() if pool.type == "rbd"}
    if not rbd_pools:
        return []
    rows = []
    vms = [vm] if vm is not None else [record.name for record in records.vms()]
    for name in vms:
        for disk in records.disks(name):
            if disk.pool not in rbd_pools:
                continue
            volume = records.volume(disk.pool, disk.volume)
            rows.append(ThinVolumeView(
                vm=name, target=disk.target, index=None, disk=disk.target,
                pool=disk.pool, volume=disk.volume,
                path=volume.path if volume else None,
                running=None, unresponsive=False,
                virtual=volume.virtual_bytes if volume else None,
                physical=volume.physical_bytes if volume else None,
                allocation=None, threshold=None, armed_threshold=None,
                chunk=None, max_physical=None, state=NOT_MONITORED,
                extends=0, pauses=0, paused=False, refusals=0, refused=False,
                last_extend_latency_s=None, reason=REASON,
            ))
    return rows
