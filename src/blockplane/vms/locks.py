"""One lock per VM, shared by every service that changes a VM's disks, groups or chains.

Attach, detach, snapshots, job starts, checkpoint deletes and throttle-group changes of one VM
take its lock, so none of them reads a domain definition that another is half-way through
changing, and recovery can wait for an operation in progress to end. Owns only the locks.
"""

from __future__ import annotations

import threading
from collections import defaultdict


class VMLocks:
    def __init__(self) -> None:
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()

    def lock_for(self, vm: str) -> threading.Lock:
        with self._guard:
            return self._locks[vm]
