"""Run QMP commands against a VM of an embedded libvirt root, from a throwaway process.

Tests use it to read QEMU's own view (QOM, block graph). It runs in its own process because
an embedded libvirt root stays locked by whichever process opened it until that one exits.
Usage: python -m tests.qmp_probe ROOT VM '[{"execute": ...}, ...]'  -> JSON list of replies.
"""

from __future__ import annotations

import json
import sys

from blockplane.hypervisor.connection import Hypervisor


def main() -> None:
    root, vm, commands = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    hypervisor = Hypervisor(f"qemu:///embed?root={root}")
    hypervisor.open()
    domain = hypervisor.lookup(vm)
    replies = [domain.monitor_command(command) for command in commands]
    print(json.dumps(replies))


if __name__ == "__main__":
    main()
