"""Read or replace a VM's persistent definition in an embedded libvirt root, from a throwaway
process (the root stays locked by whichever process opened it until that one exits).

Tests use it to put the persistent definition back where libvirt leaves it when it dies between
announcing a block job's end and saving the config.
Usage: python -m tests.persistent_definition ROOT VM          -> the persistent XML on stdout
       python -m tests.persistent_definition ROOT VM FILE     -> define FILE as that XML
"""

from __future__ import annotations

import sys
from pathlib import Path

from blockplane.hypervisor.connection import Hypervisor


def main() -> None:
    root, vm = sys.argv[1], sys.argv[2]
    hypervisor = Hypervisor(f"qemu:///embed?root={root}")
    hypervisor.open()
    if len(sys.argv) > 3:
        hypervisor.define(Path(sys.argv[3]).read_text())
    else:
        print(hypervisor.lookup(vm).xml(inactive=True))


if __name__ == "__main__":
    main()
