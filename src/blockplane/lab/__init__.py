"""The lab: several simulated KVM hosts and a one-node Ceph cluster on one machine, for tests,
the bench and the demo.

Each host is a mount namespace with its own libvirtd, BLOCKPLANE_HOME, pool roots and agent,
all on the one kernel and the one loopback (see ../shared/FIELD-NOTES.md, "Several hosts on one
machine"). ``scripts/lab up|exec|down|show`` drives it; Python callers use :func:`up`,
:func:`down`, :func:`load` and :func:`host_command`.

The package owns starting and stopping what it started (by recorded PID, never by name), the
lab's state file, its CA and its address claims. It must not import libvirt (it talks to each
daemon with ``virsh``) and must not reach into blockplane's services: a lab host is driven
only through the ``blockplane`` command, as a user would.
"""

from __future__ import annotations

from blockplane.lab.bringup import up
from blockplane.lab.execution import host_command
from blockplane.lab.state import HostState, LabState, load
from blockplane.lab.teardown import down

__all__ = ["HostState", "LabState", "down", "host_command", "load", "up"]
