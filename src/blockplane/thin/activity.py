"""Which thin volumes were written since the last look, from the host's side, at no cost to QEMU.

A threshold can only be crossed by a write, and every write QEMU makes to a volume reaches the
host: a block device (loop, LVM) counts it in ``/sys/dev/block/MAJ:MIN/stat`` (writes completed,
sectors written), a file has its modification time and size changed. Reading those for every
volume costs microseconds and no libvirt call, so the quick reconcile pass asks QEMU only about
the VMs whose volumes moved. A volume whose counters cannot be read counts as written (the pass
then asks QEMU, as a full pass would). Must not call libvirt or QEMU, nor decide anything.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Hashable

Counter = tuple[int, ...]


def counter_source(path: str) -> str | None:
    """Where ``path``'s write counters are read: the block device's sysfs ``stat``, the path
    itself for a file; None if it does not exist."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    if stat.S_ISBLK(info.st_mode):
        return f"/sys/dev/block/{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}/stat"
    return path


def write_counter(source: str) -> Counter | None:
    """What changes when the volume behind ``source`` is written; None if it cannot be read."""
    if not source.startswith("/sys/"):
        try:
            info = os.stat(source)
        except OSError:
            return None
        return (info.st_ino, info.st_mtime_ns, info.st_size)
    try:
        descriptor = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fields = os.read(descriptor, 512).split()
    except OSError:
        return None
    finally:
        os.close(descriptor)
    if len(fields) < 7:
        return None
    return (int(fields[4]), int(fields[6]))  # writes completed, sectors written


def written_bytes(path: str) -> int | None:
    """Bytes written to the block device at ``path`` since it appeared (sysfs), None for a
    file or what cannot be read."""
    source = counter_source(path)
    if source is None or not source.startswith("/sys/"):
        return None
    counter = write_counter(source)
    return None if counter is None else counter[1] * 512


class WriteActivity:
    """The counters of each volume at the last look, and where to read them (looked up once
    per path until ``refresh``: a loop or LVM device keeps its numbers while attached)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[Hashable, Counter] = {}
        self._sources: dict[str, str | None] = {}

    def written(self, key: Hashable, path: str) -> bool:
        """Was ``path`` written since the last call for ``key``? True the first time and
        whenever the counters cannot be read."""
        with self._lock:
            source = self._sources.get(path)
        if source is None:
            source = counter_source(path)
            with self._lock:
                self._sources[path] = source
        counter = None if source is None else write_counter(source)
        with self._lock:
            before = self._seen.get(key)
            if counter is None:
                self._seen.pop(key, None)
                self._sources.pop(path, None)
                return True
            self._seen[key] = counter
        return before != counter

    def refresh(self) -> None:
        """Look the devices up again (a full pass: a path may name another device by now)."""
        with self._lock:
            self._sources.clear()

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._seen.pop(key, None)
