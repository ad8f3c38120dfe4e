"""Arm a disk's *bare* target (``vdb``) through libvirt from a throwaway process.

libvirt reports a crossing of a threshold armed on the bare target twice (``vdb`` and
``vdb[N]``); the agent arms indexed targets, so tests use this to make the double event happen.
libvirt keeps "armed with an index" in the domain's status XML only when it next saves it, so
the probe then saves it (a live metadata change does) for the restarted agent to load.
The agent must be stopped: an embedded libvirt root is held by one process at a time.
Usage: python -m tests.thin_probe ROOT VM TARGET BYTES
"""

from __future__ import annotations

import sys

from blockplane.hypervisor.connection import Hypervisor

METADATA_DESCRIPTION = 0  # VIR_DOMAIN_METADATA_DESCRIPTION
AFFECT_LIVE = 1  # VIR_DOMAIN_AFFECT_LIVE


def main() -> None:
    root, vm, target, threshold = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    hypervisor = Hypervisor(f"qemu:///embed?root={root}")
    hypervisor.open()
    hypervisor.lookup(vm).set_block_threshold(target, threshold)
    domain = hypervisor.connection.lookupByName(vm)
    domain.setMetadata(METADATA_DESCRIPTION, "thin_probe: bare threshold", None, None,
                       AFFECT_LIVE)
    hypervisor.close()


if __name__ == "__main__":
    main()
