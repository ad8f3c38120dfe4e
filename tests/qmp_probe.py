"""Run QMP commands against a VM of an embedded libvirt root, from a throwaway process.

Tests use it to read QEMU's own view (QOM, block graph). It runs in its own process because
an embedded libvirt root stays locked by whichever process opened it until that one exits.
Usage: python -m tests.qmp_probe ROOT VM '[{"execute": ...}, ...]'  -> JSON list of replies.

While it runs, its libvirt handles the VM's events like the agent's would: a block job that
ends meanwhile is dismissed in QEMU, then taken off the live definition, which is then saved.
A process that exits between those steps leaves libvirt, for good, a ``<mirror>`` that QEMU no
longer runs (it refuses every later block job on the disk, "already in active block job"). So
before it exits the probe waits for its libvirt to finish any job's end under way (``settle``).
"""

from __future__ import annotations

import json
import sys
import time
import xml.etree.ElementTree as ET
from typing import Any

from blockplane.hypervisor.connection import Hypervisor
from blockplane.hypervisor.domain import DomainHandle

SETTLE_TIMEOUT_S = 60.0
#: QEMU job states a job passes through on its way to its end, which libvirt still acts on.
ENDING = frozenset({"created", "waiting", "pending", "aborting", "concluded", "null", "undefined"})


def settled(domain: DomainHandle) -> bool:
    """No QEMU job is ending, and no ``<mirror>`` in libvirt's live XML outlived its QEMU job.
    Both reads take the domain's job, so each waits for libvirt's handling of an end."""
    jobs: list[dict[str, Any]] = domain.monitor_command({"execute": "query-jobs"})["return"]
    if any(job.get("status") in ENDING for job in jobs):
        return False
    mirrors = ET.fromstring(domain.xml()).findall("./devices/disk/mirror")
    return len(mirrors) <= len(jobs)


def settle(domain: DomainHandle) -> None:
    if not domain.is_active():
        return
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while not settled(domain):
        if time.monotonic() >= deadline:
            sys.exit(f"libvirt did not finish the end of a block job of {domain.name} in "
                     f"{SETTLE_TIMEOUT_S:.0f} s")
        time.sleep(0.1)


def main() -> None:
    root, vm, commands = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    hypervisor = Hypervisor(f"qemu:///embed?root={root}")
    hypervisor.open()
    domain = hypervisor.lookup(vm)
    replies = [domain.monitor_command(command) for command in commands]
    settle(domain)
    print(json.dumps(replies))


if __name__ == "__main__":
    main()
