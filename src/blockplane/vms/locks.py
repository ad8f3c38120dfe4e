"""One lock per VM, shared by every service that changes a VM's disks, groups or chains.

Attach, detach, snapshots, job starts, checkpoint deletes and throttle-group changes of one VM
take its lock, so none of them reads a domain definition that another is half-way through
changing, and recovery can wait for an operation in progress to end. A waiter waits only until
its deadline (``timeout.vm_lock``, naming who holds the lock). Owns only the locks.
"""

from __future__ import annotations

import threading

from blockplane.deadlines import BoundedLock


class VMLocks:
    def __init__(self) -> None:
        self._locks: dict[str, BoundedLock] = {}
        self._guard = threading.Lock()

    def lock_for(self, vm: str) -> BoundedLock:
        with self._guard:
            lock = self._locks.get(vm)
            if lock is None:
                lock = self._locks[vm] = BoundedLock(f"the lock of VM {vm}", "timeout.vm_lock")
            return lock
