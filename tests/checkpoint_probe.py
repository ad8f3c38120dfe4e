"""Drop a VM's checkpoint metadata from an embedded libvirt root, leaving the bitmaps alone:
what a host whose libvirt state was reset, or a platform that re-defines its domains, sees.

    python -m tests.checkpoint_probe ROOT VM   -> JSON list of the names dropped
Run with the agent stopped (only one process may hold the root).
"""

from __future__ import annotations

import json
import sys

import libvirt

from blockplane.hypervisor.connection import Hypervisor


def main() -> None:
    root, vm = sys.argv[1], sys.argv[2]
    hypervisor = Hypervisor(f"qemu:///embed?root={root}")
    hypervisor.open()
    domain = hypervisor.connection.lookupByName(vm)
    dropped = []
    for checkpoint in reversed(domain.listAllCheckpoints(
            libvirt.VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL)):
        checkpoint.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
        dropped.append(checkpoint.getName())
    hypervisor.close()
    print(json.dumps(dropped))


if __name__ == "__main__":
    main()
